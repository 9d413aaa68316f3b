//! When to log a pod that keeps failing to start (its CA down, its namespace not there yet).
//! The reconcile retries every second, so logging each try would write a line per pod per
//! second for as long as the failure lasts. A failure is logged when it starts, when its
//! error changes, once a minute while it lasts (with the tries since the last line), and
//! when it ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often a failure that lasts is logged again.
pub(crate) const RELOG_EVERY: Duration = Duration::from_secs(60);

/// The pods failing to start, by key.
#[derive(Debug)]
pub(crate) struct StartFailures<K> {
    failing: HashMap<K, Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    logged: Instant,
    error: String,
    tries_since_logged: u64,
}

/// A line to write about a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// Tries that failed since the last line (0 on the first).
    pub tries: u64,
    /// How long the pod has been failing.
    pub failing_for: Duration,
}

impl<K: Hash + Eq> Default for StartFailures<K> {
    fn default() -> Self {
        StartFailures {
            failing: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> StartFailures<K> {
    /// A try for `key` failed with `error` at `now`: the line to log, if one is due.
    pub fn failed(&mut self, key: K, error: &str, now: Instant) -> Option<Line> {
        let Some(failing) = self.failing.get_mut(&key) else {
            let first = Failing {
                since: now,
                logged: now,
                error: error.to_string(),
                tries_since_logged: 0,
            };
            self.failing.insert(key, first);
            return Some(Line {
                tries: 0,
                failing_for: Duration::ZERO,
            });
        };
        failing.tries_since_logged += 1;
        let changed = failing.error != error;
        if !changed && now.duration_since(failing.logged) < RELOG_EVERY {
            return None;
        }
        if changed {
            failing.error = error.to_string();
        }
        failing.logged = now;
        Some(Line {
            tries: std::mem::take(&mut failing.tries_since_logged),
            failing_for: now.duration_since(failing.since),
        })
    }

    /// `key` started at `now`: how long it had been failing, if it had.
    pub fn succeeded(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let failing = self.failing.remove(key)?;
        Some(now.duration_since(failing.since))
    }

    /// Forgets the pods `keep` says are gone.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.failing.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_failure_is_logged_at_its_start_on_a_change_and_once_a_minute() {
        let mut failures = StartFailures::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = failures.failed("a", "CA unreachable", t0);
        assert_eq!(
            first,
            Some(Line {
                tries: 0,
                failing_for: Duration::ZERO
            })
        );
        for s in 1..60 {
            assert_eq!(failures.failed("a", "CA unreachable", at(s)), None, "{s}");
        }
        // Another pod's failure is its own.
        assert!(failures.failed("b", "CA unreachable", at(30)).is_some());
        let minute = failures.failed("a", "CA unreachable", at(60));
        assert_eq!(
            minute,
            Some(Line {
                tries: 60,
                failing_for: at(60) - t0
            })
        );
        assert_eq!(failures.failed("a", "CA unreachable", at(61)), None);
        let changed = failures.failed("a", "address in use", at(62));
        assert_eq!(
            changed,
            Some(Line {
                tries: 2,
                failing_for: at(62) - t0
            })
        );
        assert_eq!(failures.failed("a", "address in use", at(63)), None);
        assert_eq!(failures.succeeded(&"a", at(70)), Some(at(70) - t0));
        assert_eq!(failures.succeeded(&"a", at(71)), None);
        // Failing again starts anew.
        assert_eq!(
            failures
                .failed("a", "address in use", at(72))
                .map(|l| l.tries),
            Some(0)
        );
        failures.retain(|key| *key != "b");
        assert_eq!(failures.succeeded(&"b", at(80)), None);
    }
}
