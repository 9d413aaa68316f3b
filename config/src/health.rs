//! What a proxy has seen of each endpoint: requests (waypoint) or connections (ztunnel) in
//! flight to it, for least-request balancing, and failures in a row, for outlier detection,
//! which ejects an endpoint failing too often for a while. The decisions are pure functions
//! over that state; the state is read without locks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::traffic::OutlierDetection;
use arc_swap::ArcSwap;

/// Longest an ejection lasts, however often the endpoint was ejected (Envoy's default
/// `max_ejection_time`).
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// How a try went, as outlier detection counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Answered(u16),
    /// A connection to the endpoint was made (all an L4 proxy sees of success).
    Connected,
    /// The endpoint could not be reached, reset the request, or did not answer in time.
    LocalFailure,
}

/// One endpoint's failures in a row and ejections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub consecutive_local: u32,
    /// Times ejected, decaying by one per `interval` spent not ejected.
    pub ejections: u32,
    pub ejected_until: Option<Instant>,
    /// When the last ejection ended (or began to be counted down from).
    pub since: Option<Instant>,
}

impl Record {
    pub fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Nothing worth keeping: no failure in a row, and any ejection over long enough ago
    /// that its multiplier has surely decayed.
    fn at_rest(&self, now: Instant) -> bool {
        let failing = self.consecutive_5xx + self.consecutive_gateway + self.consecutive_local;
        let remembered = self
            .since
            .is_some_and(|since| now < since + MAX_EJECTION.saturating_mul(self.ejections));
        failing == 0 && !self.ejected(now) && !remembered
    }
}

/// `record` after `outcome`: the failure counters move, and whether the endpoint should now
/// be ejected (given that `ejected` of the Service's `total` endpoints already are).
pub fn observe(
    policy: &OutlierDetection,
    record: &mut Record,
    outcome: Outcome,
    ejected: usize,
    total: usize,
    now: Instant,
) -> bool {
    let (five_xx, gateway, local) = match outcome {
        Outcome::Answered(status) => (status >= 500, matches!(status, 502..=504), false),
        Outcome::Connected => (false, false, false),
        // Unless split, a local failure is a 503 (a gateway error) as far as counting goes.
        Outcome::LocalFailure => (!policy.split_local_origin, !policy.split_local_origin, true),
    };
    let bump = |count: &mut u32, hit: bool| *count = if hit { count.saturating_add(1) } else { 0 };
    bump(&mut record.consecutive_5xx, five_xx);
    bump(&mut record.consecutive_gateway, gateway);
    if policy.split_local_origin {
        bump(&mut record.consecutive_local, local);
    }
    let tripped = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
    let failing = tripped(record.consecutive_5xx, policy.consecutive_5xx)
        || tripped(record.consecutive_gateway, policy.consecutive_gateway)
        || (policy.split_local_origin
            && tripped(record.consecutive_local, policy.consecutive_local_origin));
    if !failing || record.ejected(now) {
        return false;
    }
    // At most max% of the endpoints at once, but always at least one (as Envoy).
    let room = (total * policy.max_ejection_percent as usize / 100).max(1);
    if ejected >= room {
        return false;
    }
    // The multiplier decays by one for every interval spent not ejected.
    let rested = record.since.map_or(0, |since| {
        let intervals = now.duration_since(since).as_nanos() / policy.interval.as_nanos().max(1);
        u32::try_from(intervals).unwrap_or(u32::MAX)
    });
    record.ejections = record.ejections.saturating_sub(rested).saturating_add(1);
    let length = policy
        .base_ejection_time
        .saturating_mul(record.ejections)
        .min(MAX_EJECTION.max(policy.base_ejection_time));
    record.ejected_until = Some(now + length);
    record.since = Some(now + length);
    record.consecutive_5xx = 0;
    record.consecutive_gateway = 0;
    record.consecutive_local = 0;
    true
}

/// Whether ejections hold, with `healthy` of `total` endpoints not ejected: below
/// `minHealthPercent` healthy they are ignored (Envoy's panic threshold; 0 never).
pub fn ejections_hold(policy: Option<&OutlierDetection>, healthy: usize, total: usize) -> bool {
    let min = policy.map_or(0, |p| p.min_health_percent as usize);
    healthy * 100 >= min * total
}

/// Instants as nanoseconds since this, so that an endpoint's ejection can be read without a
/// lock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX)
}

/// One endpoint's state. Read per request without locking (requests in flight, the end of
/// its ejection); the failure counts are locked only to record a try.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    active: AtomicU32,
    /// [`nanos`] of the end of its ejection (0: never ejected).
    ejected_until: AtomicU64,
    record: Mutex<Record>,
}

impl EndpointHealth {
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn ejected(&self, now: Instant) -> bool {
        nanos(now) < self.ejected_until.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A try in flight to an endpoint, counted until dropped.
#[derive(Debug)]
pub struct Active(Arc<EndpointHealth>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every endpoint's state, by address: read lock-free, copied on the rare write (an endpoint
/// seen for the first time, or forgotten).
#[derive(Debug, Default)]
pub struct Health {
    endpoints: ArcSwap<HashMap<SocketAddr, Arc<EndpointHealth>>>,
    writer: Mutex<()>,
}

impl Health {
    /// `addr`'s state (a new, healthy one if never seen).
    pub fn of(&self, addr: SocketAddr) -> Arc<EndpointHealth> {
        if let Some(known) = self.endpoints.load().get(&addr) {
            return known.clone();
        }
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load_full();
        if let Some(known) = current.get(&addr) {
            return known.clone();
        }
        let mut next = HashMap::clone(&current);
        let health = next.entry(addr).or_default().clone();
        self.endpoints.store(Arc::new(next));
        health
    }

    /// Counts a try to `addr` in flight.
    pub fn start(&self, addr: SocketAddr) -> Active {
        let health = self.of(addr);
        health.active.fetch_add(1, Ordering::AcqRel);
        Active(health)
    }

    /// Records how a try to `addr`, one of `service` (every endpoint of its Service), went
    /// under `policy`. Returns whether it ejected the endpoint.
    pub fn record(
        &self,
        policy: &OutlierDetection,
        addr: SocketAddr,
        service: &[SocketAddr],
        outcome: Outcome,
    ) -> bool {
        let now = Instant::now();
        let known = self.endpoints.load();
        let ejected = service
            .iter()
            .filter(|a| **a != addr && known.get(a).is_some_and(|h| h.ejected(now)))
            .count();
        let health = self.of(addr);
        let mut record = health.lock();
        let ejects = observe(policy, &mut record, outcome, ejected, service.len(), now);
        if let (true, Some(until)) = (ejects, record.ejected_until) {
            health.ejected_until.store(nanos(until), Ordering::Release);
        }
        ejects
    }

    /// Forgets endpoints with nothing in flight and nothing to remember (no failure in a
    /// row, no ejection still counting), so the map holds what is in use, however many pods
    /// come and go. A forgotten endpoint comes back as it was: healthy.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load_full();
        let next: HashMap<SocketAddr, Arc<EndpointHealth>> = current
            .iter()
            // Held beyond this map: a try in flight, or a choice being made.
            .filter(|(_, h)| Arc::strong_count(h) > 1 || !h.lock().at_rest(now))
            .map(|(addr, h)| (*addr, h.clone()))
            .collect();
        self.endpoints.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            base_ejection_time: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            max_ejection_percent: 50,
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_resets_the_count() {
        let p = policy();
        let now = Instant::now();
        let mut r = Record::default();
        let see = |r: &mut Record, o| observe(&p, r, o, 0, 4, now);
        assert!(!see(&mut r, Outcome::Answered(500)));
        assert!(!see(&mut r, Outcome::Answered(503)));
        assert!(!see(&mut r, Outcome::Answered(200)), "a success resets");
        assert!(!see(&mut r, Outcome::LocalFailure));
        assert!(!see(&mut r, Outcome::Answered(502)));
        assert!(see(&mut r, Outcome::Answered(500)), "three in a row");
        assert!(r.ejected(now));
        assert!(!r.ejected(now + Duration::from_secs(30)));
        assert_eq!(r.ejections, 1);
    }

    #[test]
    fn ejections_grow_with_repeats_decay_with_rest_and_are_capped() {
        let p = policy();
        let mut r = Record::default();
        let mut now = Instant::now();
        let eject = |r: &mut Record, at: Instant| {
            for _ in 0..3 {
                observe(&p, r, Outcome::Answered(500), 0, 4, at);
            }
            r.ejected_until.expect("ejected") - at
        };
        assert_eq!(eject(&mut r, now), Duration::from_secs(30));
        now += Duration::from_secs(30);
        assert_eq!(
            eject(&mut r, now),
            Duration::from_secs(60),
            "ejected again at once"
        );
        // 60 s ejected, then 25 s more of rest: two intervals decay the count from 2 to 0.
        now += Duration::from_secs(60 + 25);
        assert_eq!(eject(&mut r, now), Duration::from_secs(30));
        r.ejections = 100;
        r.since = None;
        now += Duration::from_secs(30);
        assert_eq!(eject(&mut r, now), MAX_EJECTION);
    }

    #[test]
    fn max_ejection_percent_keeps_endpoints_in_but_always_allows_one() {
        let p = policy();
        let now = Instant::now();
        let fail = |ejected, total| {
            let mut r = Record::default();
            (0..3).any(|_| observe(&p, &mut r, Outcome::Answered(500), ejected, total, now))
        };
        assert!(fail(0, 4));
        assert!(fail(1, 4), "50% of 4 is 2");
        assert!(!fail(2, 4));
        assert!(fail(0, 1), "one is always allowed");
        assert!(!fail(1, 2));
    }

    #[test]
    fn gateway_errors_and_split_local_failures() {
        let gateway_only = OutlierDetection {
            consecutive_5xx: 0,
            consecutive_gateway: 2,
            ..policy()
        };
        let now = Instant::now();
        let mut r = Record::default();
        assert!(!observe(
            &gateway_only,
            &mut r,
            Outcome::Answered(500),
            0,
            4,
            now
        ));
        assert!(!observe(
            &gateway_only,
            &mut r,
            Outcome::Answered(500),
            0,
            4,
            now
        ));
        assert!(!observe(
            &gateway_only,
            &mut r,
            Outcome::Answered(504),
            0,
            4,
            now
        ));
        assert!(observe(
            &gateway_only,
            &mut r,
            Outcome::LocalFailure,
            0,
            4,
            now
        ));
        let split = OutlierDetection {
            split_local_origin: true,
            consecutive_local_origin: 2,
            ..policy()
        };
        let mut r = Record::default();
        assert!(!observe(&split, &mut r, Outcome::LocalFailure, 0, 4, now));
        assert_eq!(r.consecutive_5xx, 0, "split: not a 5xx");
        assert!(observe(&split, &mut r, Outcome::LocalFailure, 0, 4, now));
    }

    #[test]
    fn idle_healthy_endpoints_are_forgotten_but_failing_ones_kept() {
        let health = Health::default();
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "127.0.0.1:80".parse().expect("a"),
            "127.0.0.2:80".parse().expect("b"),
            "127.0.0.3:80".parse().expect("c"),
        );
        let _busy = health.start(a);
        drop(health.start(b));
        let failing = health.record(&policy(), c, &[a, b, c], Outcome::Answered(500));
        assert!(!failing);
        health.forget_idle();
        let known: Vec<SocketAddr> = health.endpoints.load().keys().copied().collect();
        assert!(known.contains(&a), "in flight");
        assert!(!known.contains(&b), "idle and healthy");
        assert!(known.contains(&c), "one failure in a row to remember");
    }

    #[test]
    fn below_min_health_ejections_are_ignored() {
        let p = OutlierDetection {
            min_health_percent: 50,
            ..policy()
        };
        assert!(ejections_hold(Some(&p), 2, 4));
        assert!(!ejections_hold(Some(&p), 1, 4));
        assert!(ejections_hold(None, 0, 4), "0%: never ignored");
    }
}
