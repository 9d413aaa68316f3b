//! Retry budgets: per destination, retries in flight stay within a share of the requests in
//! flight (Envoy's `retry_budget`: 20%, with a floor of 3), so that when a destination fails
//! retries cannot multiply the load on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mesh_config::ObjectRef;

/// The share of requests in flight that may be retries, in percent.
pub const BUDGET_PERCENT: u32 = 20;
/// Retries in flight always allowed, however few requests are.
pub const MIN_RETRY_CONCURRENCY: u32 = 3;

/// Whether one more retry fits, with `requests` and `retries` in flight.
pub fn allows(requests: u32, retries: u32) -> bool {
    let share = u64::from(requests) * u64::from(BUDGET_PERCENT) / 100;
    u64::from(retries) < share.max(u64::from(MIN_RETRY_CONCURRENCY))
}

/// Whose budget a request draws on: the Service whose endpoints serve it, or the pod it
/// addressed directly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BudgetKey {
    Service(ObjectRef),
    Workload(ObjectRef),
}

/// One destination's requests and retries in flight.
#[derive(Debug, Default)]
pub struct Budget {
    requests: AtomicU32,
    retries: AtomicU32,
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub struct InFlight {
    budget: Arc<Budget>,
}

/// A retry in flight, counted until dropped.
#[derive(Debug)]
pub struct RetryInFlight {
    budget: Arc<Budget>,
}

impl InFlight {
    /// A retry of this request, if the budget has room for it.
    pub fn retry(&self) -> Option<RetryInFlight> {
        let budget = &self.budget;
        let requests = budget.requests.load(Ordering::Relaxed);
        budget
            .retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |retries| {
                allows(requests, retries).then_some(retries + 1)
            })
            .ok()?;
        Some(RetryInFlight {
            budget: budget.clone(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.budget.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        self.budget.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every destination's budget.
#[derive(Debug, Default)]
pub struct Budgets {
    by_destination: Mutex<HashMap<BudgetKey, Arc<Budget>>>,
}

impl Budgets {
    /// Counts a request to `key` in flight.
    pub fn start(&self, key: &BudgetKey) -> InFlight {
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let budget = match map.get(key) {
            Some(budget) => budget.clone(),
            None => {
                // Destinations with nothing in flight are forgotten, so the map stays as
                // small as what is in use.
                map.retain(|_, b| Arc::strong_count(b) > 1);
                map.entry(key.clone()).or_default().clone()
            }
        };
        budget.requests.fetch_add(1, Ordering::AcqRel);
        InFlight { budget }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_a_fifth_of_requests_with_a_floor_of_three() {
        assert!(allows(1, 0));
        assert!(allows(1, 2));
        assert!(!allows(1, 3), "the floor is 3");
        assert!(allows(100, 19));
        assert!(!allows(100, 20));
        assert!(!allows(0, 3));
    }

    #[test]
    fn budgets_count_what_is_in_flight_and_forget_idle_destinations() {
        let budgets = Budgets::default();
        let key = BudgetKey::Service(ObjectRef::new("default", "reviews"));
        let requests: Vec<InFlight> = (0..20).map(|_| budgets.start(&key)).collect();
        let retries: Vec<RetryInFlight> = requests.iter().filter_map(InFlight::retry).collect();
        assert_eq!(retries.len(), 4, "20% of 20");
        drop(retries);
        assert!(
            requests[0].retry().is_some(),
            "retries that ended free the budget"
        );
        drop(requests);
        let other = BudgetKey::Workload(ObjectRef::new("default", "reviews"));
        let _one = budgets.start(&other);
        let map = budgets.by_destination.lock().expect("lock");
        assert_eq!(map.len(), 1, "the idle destination was forgotten");
    }
}
