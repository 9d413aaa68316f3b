//! What is in flight to each destination, and the limits on it (Envoy's circuit breakers):
//! requests, bounded by the DestinationRule's `http2MaxRequests` (more are answered 503 `UO`);
//! retries, bounded by the retry budget (20% of requests in flight, at least 3) and by
//! `maxRetries`, so that when a destination fails retries cannot multiply the load on it.
//! Also each destination's round-robin position and its connection slots (`maxConnections`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mesh_config::ObjectRef;

use super::client::ConnectionSlots;

/// The share of requests in flight that may be retries, in percent.
pub const BUDGET_PERCENT: u32 = 20;
/// Retries in flight always allowed, however few requests are.
pub const MIN_RETRY_CONCURRENCY: u32 = 3;

/// Whether one more retry fits, with `requests` and `retries` in flight and at most
/// `max_retries` (a DestinationRule's) besides the budget.
pub fn allows_retry(requests: u32, retries: u32, max_retries: Option<u32>) -> bool {
    let share = u64::from(requests) * u64::from(BUDGET_PERCENT) / 100;
    let budget = share.max(u64::from(MIN_RETRY_CONCURRENCY));
    u64::from(retries) < budget && max_retries.is_none_or(|max| retries < max)
}

/// Whose limits a request counts against: the Service whose endpoints serve it, or the pod it
/// addressed directly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DestinationKey {
    Service(ObjectRef),
    Workload(ObjectRef),
}

/// One destination's requests and retries in flight.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU32,
    retries: AtomicU32,
    round_robin: AtomicU64,
    connections: Arc<ConnectionSlots>,
}

/// The limits a request is admitted under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight to the destination (`http2MaxRequests`).
    pub max_requests: Option<u32>,
    /// Retries in flight to the destination (`maxRetries`), besides the budget.
    pub max_retries: Option<u32>,
}

impl Limits {
    /// The limits a DestinationRule's `connectionPool` sets.
    pub fn of(pool: &mesh_config::ConnectionPool) -> Self {
        Limits {
            max_requests: pool.max_requests,
            max_retries: pool.max_retries,
        }
    }
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub struct InFlight {
    counters: Arc<Counters>,
    max_retries: Option<u32>,
}

/// A retry in flight, counted until dropped.
#[derive(Debug)]
pub struct RetryInFlight {
    counters: Arc<Counters>,
}

/// The destination already has its most requests in flight.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow {
    pub max_requests: u32,
}

impl InFlight {
    /// A retry of this request, if the budget and `maxRetries` leave room for it.
    pub fn retry(&self) -> Option<RetryInFlight> {
        let counters = &self.counters;
        let requests = counters.requests.load(Ordering::Relaxed);
        counters
            .retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |retries| {
                allows_retry(requests, retries, self.max_retries).then_some(retries + 1)
            })
            .ok()?;
        Some(RetryInFlight {
            counters: counters.clone(),
        })
    }

    /// The destination's connections (bounded by `maxConnections`).
    pub fn connections(&self) -> &Arc<ConnectionSlots> {
        &self.counters.connections
    }

    /// The destination's next round-robin position.
    pub fn next_round_robin(&self) -> u64 {
        self.counters.round_robin.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        self.counters.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every destination's counters.
#[derive(Debug, Default)]
pub struct Destinations {
    by_key: Mutex<HashMap<DestinationKey, Arc<Counters>>>,
}

impl Destinations {
    /// Counts a request to `key` in flight, unless `limits` say the destination is full.
    pub fn start(&self, key: &DestinationKey, limits: Limits) -> Result<InFlight, Overflow> {
        let counters = self.counters(key);
        let admitted =
            counters
                .requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |requests| {
                    let full = limits.max_requests.is_some_and(|max| requests >= max);
                    (!full).then_some(requests + 1)
                });
        match admitted {
            Ok(_) => Ok(InFlight {
                counters,
                max_retries: limits.max_retries,
            }),
            Err(_) => Err(Overflow {
                max_requests: limits.max_requests.unwrap_or(0),
            }),
        }
    }

    fn counters(&self, key: &DestinationKey) -> Arc<Counters> {
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = map.get(key) {
            return counters.clone();
        }
        // Destinations with nothing in flight are forgotten, so the map stays as small as
        // what is in use (a round-robin position restarts; nothing else is lost).
        map.retain(|_, c| Arc::strong_count(c) > 1);
        map.entry(key.clone()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_a_fifth_of_requests_with_a_floor_of_three() {
        assert!(allows_retry(1, 0, None));
        assert!(allows_retry(1, 2, None));
        assert!(!allows_retry(1, 3, None), "the floor is 3");
        assert!(allows_retry(100, 19, None));
        assert!(!allows_retry(100, 20, None));
        assert!(!allows_retry(0, 3, None));
        assert!(!allows_retry(100, 1, Some(1)), "maxRetries bounds them too");
        assert!(!allows_retry(100, 0, Some(0)));
    }

    fn reviews() -> DestinationKey {
        DestinationKey::Service(ObjectRef::new("default", "reviews"))
    }

    #[test]
    fn counters_count_what_is_in_flight_and_forget_idle_destinations() {
        let destinations = Destinations::default();
        let key = reviews();
        let start = || {
            destinations
                .start(&key, Limits::default())
                .expect("no limit")
        };
        let requests: Vec<InFlight> = (0..20).map(|_| start()).collect();
        let retries: Vec<RetryInFlight> = requests.iter().filter_map(InFlight::retry).collect();
        assert_eq!(retries.len(), 4, "20% of 20");
        drop(retries);
        assert!(
            requests[0].retry().is_some(),
            "retries that ended free the budget"
        );
        assert_eq!(
            (
                requests[0].next_round_robin(),
                requests[1].next_round_robin()
            ),
            (0, 1)
        );
        drop(requests);
        let other = DestinationKey::Workload(ObjectRef::new("default", "reviews"));
        let _one = destinations.start(&other, Limits::default());
        let map = destinations.by_key.lock().expect("lock");
        assert_eq!(map.len(), 1, "the idle destination was forgotten");
    }

    #[test]
    fn requests_over_max_requests_overflow_until_one_ends() {
        let destinations = Destinations::default();
        let limits = Limits {
            max_requests: Some(2),
            max_retries: None,
        };
        let first = destinations.start(&reviews(), limits).expect("1");
        let _second = destinations.start(&reviews(), limits).expect("2");
        let third = destinations.start(&reviews(), limits);
        assert_eq!(third.err(), Some(Overflow { max_requests: 2 }));
        drop(first);
        assert!(destinations.start(&reviews(), limits).is_ok());
    }
}
