//! When each connection sends its requests at a fixed rate, and where latency is measured
//! from (pure: time is passed in as the offset since the run started).
//!
//! Request k of a connection is scheduled at `offset + k * interval` (anchored at the run
//! start), optionally moved by up to ±10 % of the interval (`-jitter`). `-uniform` spreads the
//! connections' offsets evenly over the first interval. When a connection is behind, it sends
//! at once and keeps the original schedule (catching up), unless `-nocatchup`, which
//! re-anchors the schedule at the current time so it never bursts.

use std::time::Duration;

/// Fixed-rate schedule for one connection.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    jitter: bool,
    nocatchup: bool,
    anchor: Duration,
    index: u64,
}

/// Pacing settings shared by every connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceConfig {
    /// Time between two calls of one connection (> 0).
    pub interval: Duration,
    pub uniform: bool,
    pub jitter: bool,
    pub nocatchup: bool,
}

impl Pacer {
    /// The schedule of connection `worker` out of `workers`.
    pub fn new(config: &PaceConfig, worker: usize, workers: usize) -> Self {
        let interval = config.interval;
        let anchor = if config.uniform && workers > 0 {
            interval.mul_f64(worker as f64 / workers as f64)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            jitter: config.jitter,
            nocatchup: config.nocatchup,
            anchor,
            index: 0,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The scheduled time of the next request, given the current time `now`. `jitter_unit`
    /// is a random number in [-1, 1] (ignored without `-jitter`).
    pub fn next_slot(&mut self, now: Duration, jitter_unit: f64) -> Duration {
        let base = self.anchor + self.interval.mul_f64(self.index as f64);
        let slot = if self.jitter {
            let shift = self.interval.mul_f64(0.1 * jitter_unit.abs().min(1.0));
            if jitter_unit < 0.0 {
                base.saturating_sub(shift)
            } else {
                base + shift
            }
        } else {
            base
        };
        self.index += 1;
        if self.nocatchup && slot < now {
            // Behind: this request goes now, the next one a full interval later.
            self.anchor = now;
            self.index = 1;
        }
        slot
    }
}

/// Where a request's latency is measured from. If the connection was idle and waited for its
/// slot (`ready_at <= slot`), the clock starts at the actual send (`sent_at`), so timer
/// wake-up lateness is not charged to the server. If it was still busy with earlier requests
/// when the slot came (`ready_at > slot`), the clock starts at the slot, so the stall shows.
pub fn latency_origin(slot: Duration, ready_at: Duration, sent_at: Duration) -> Duration {
    if ready_at > slot { slot } else { sent_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(qps: f64) -> PaceConfig {
        PaceConfig {
            interval: Duration::from_secs_f64(1.0 / qps),
            uniform: false,
            jitter: false,
            nocatchup: false,
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn fixed_rate_slots_are_evenly_spaced() {
        let mut p = Pacer::new(&config(100.0), 0, 1);
        let slots: Vec<_> = (0..4).map(|_| p.next_slot(Duration::ZERO, 0.0)).collect();
        assert_eq!(slots, [ms(0), ms(10), ms(20), ms(30)]);
    }

    #[test]
    fn uniform_spreads_connection_offsets_over_one_interval() {
        let c = PaceConfig {
            uniform: true,
            ..config(10.0)
        };
        let firsts: Vec<_> = (0..4)
            .map(|w| Pacer::new(&c, w, 4).next_slot(Duration::ZERO, 0.0))
            .collect();
        assert_eq!(firsts, [ms(0), ms(25), ms(50), ms(75)]);
    }

    #[test]
    fn catch_up_keeps_the_schedule_after_a_stall() {
        let mut p = Pacer::new(&config(100.0), 0, 1);
        assert_eq!(p.next_slot(ms(0), 0.0), ms(0));
        // The first request stalled 35 ms: the next slots are in the past and go back to back.
        assert_eq!(p.next_slot(ms(35), 0.0), ms(10));
        assert_eq!(p.next_slot(ms(35), 0.0), ms(20));
        assert_eq!(p.next_slot(ms(35), 0.0), ms(30));
        assert_eq!(p.next_slot(ms(35), 0.0), ms(40));
    }

    #[test]
    fn nocatchup_reschedules_from_now() {
        let c = PaceConfig {
            nocatchup: true,
            ..config(100.0)
        };
        let mut p = Pacer::new(&c, 0, 1);
        assert_eq!(p.next_slot(ms(0), 0.0), ms(0));
        // Behind at 35 ms: this request keeps its slot (for latency) and the next is 10 ms on.
        assert_eq!(p.next_slot(ms(35), 0.0), ms(10));
        assert_eq!(p.next_slot(ms(36), 0.0), ms(45));
        assert_eq!(p.next_slot(ms(46), 0.0), ms(55));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let c = PaceConfig {
            jitter: true,
            ..config(100.0)
        };
        let mut p = Pacer::new(&c, 0, 1);
        assert_eq!(p.next_slot(ms(0), -1.0), ms(0), "never before the start");
        assert_eq!(p.next_slot(ms(0), 1.0), ms(11));
        assert_eq!(p.next_slot(ms(0), -1.0), ms(19));
        assert_eq!(p.next_slot(ms(0), 0.5), ms(30) + Duration::from_micros(500));
        assert_eq!(p.next_slot(ms(0), 7.0), ms(41), "clamped to 10%");
    }

    #[test]
    fn latency_origin_charges_stalls_but_not_timer_lateness() {
        // Waited for the slot at 10 ms, the timer woke at 10.9 ms: measure from the send.
        let sent = Duration::from_micros(10_900);
        assert_eq!(latency_origin(ms(10), ms(3), sent), sent);
        // Busy until 25 ms with the previous request: measure from the 10 ms slot.
        assert_eq!(latency_origin(ms(10), ms(25), ms(25)), ms(10));
    }

    #[test]
    fn rate_over_time_is_the_requested_rate() {
        let mut p = Pacer::new(&config(250.0), 0, 1);
        let horizon = Duration::from_secs(2);
        let mut count = 0;
        while p.next_slot(Duration::ZERO, 0.0) < horizon {
            count += 1;
        }
        assert_eq!(count, 500);
    }
}
