//! How a run is split across connections, and how fortio names it (pure). Mirrors fortio's
//! `runQPSSetup`/`runMaxQPSSetup`, including lowering the thread count for tiny runs.

use std::time::Duration;

use super::gofmt::g;
use crate::godur;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInput {
    /// Total rate; `<= 0` means as fast as possible.
    pub qps: f64,
    /// `None`: no time limit (until `exactly` calls, or until interrupted).
    pub duration: Option<Duration>,
    /// `0`: no exact count.
    pub exactly: u64,
    pub threads: usize,
}

/// How the run proceeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub threads: usize,
    /// Calls per connection; `None` when only time (or an interrupt) ends the run.
    pub per_thread: Option<u64>,
    /// Extra calls made by connection 0 so an exact count is met.
    pub leftover: u64,
    /// Per-connection rate, `None` at max speed.
    pub per_thread_qps: Option<f64>,
    /// Time between two calls of one connection, `None` at max speed. For a timed run with a
    /// known count it spreads the calls so the last starts at the end of the duration (fortio).
    pub interval: Option<Duration>,
    /// fortio's `RequestedQPS`: `"max"` or the rate.
    pub requested_qps: String,
    /// fortio's `RequestedDuration`: `"5s"`, `"exactly 100 calls"`, `"until stop"` or `""`.
    pub requested_duration: String,
}

impl Plan {
    /// Calls connection `index` makes (`None`: unbounded).
    pub fn calls_for(&self, index: usize) -> Option<u64> {
        self.per_thread
            .map(|n| if index == 0 { n + self.leftover } else { n })
    }
}

pub fn plan(input: &PlanInput) -> Plan {
    if input.qps > 0.0 {
        fixed_rate(input)
    } else {
        max_speed(input)
    }
}

fn fixed_rate(input: &PlanInput) -> Plan {
    let mut threads = input.threads.max(1);
    let mut result = Plan {
        threads,
        per_thread: None,
        leftover: 0,
        per_thread_qps: None,
        interval: None,
        requested_qps: g(input.qps, Some(9)),
        requested_duration: "until stop".to_owned(),
    };
    let bounded = input.exactly > 0 || input.duration.is_some();
    if bounded {
        let mut calls = match input.duration {
            _ if input.exactly > 0 => input.exactly,
            Some(d) => (input.qps * d.as_secs_f64()) as u64,
            None => 0,
        };
        result.requested_duration = if input.exactly > 0 {
            format!("exactly {calls} calls")
        } else {
            godur::format(input.duration.unwrap_or_default())
        };
        if calls < 2 {
            calls = 2;
            threads = 1;
        }
        if 2 * threads as u64 > calls {
            threads = (calls / 2) as usize;
        }
        let per_thread = calls / threads as u64;
        result.per_thread = Some(per_thread);
        if input.exactly > 0 {
            result.leftover = input.exactly.saturating_sub(per_thread * threads as u64);
        }
    }
    result.threads = threads;
    let per_thread_qps = input.qps / threads as f64;
    result.per_thread_qps = Some(per_thread_qps);
    result.interval = Some(match (input.duration, result.per_thread) {
        (Some(d), Some(n)) if input.exactly == 0 && n >= 2 => {
            Duration::from_secs_f64(d.as_secs_f64() / (n - 1) as f64)
        }
        _ => Duration::from_secs_f64(1.0 / per_thread_qps),
    });
    result
}

fn max_speed(input: &PlanInput) -> Plan {
    let threads = input.threads.max(1);
    let mut result = Plan {
        threads,
        per_thread: None,
        leftover: 0,
        per_thread_qps: None,
        interval: None,
        requested_qps: "max".to_owned(),
        requested_duration: String::new(),
    };
    if input.exactly > 0 {
        result.requested_duration = format!("exactly {} calls", input.exactly);
        result.per_thread = Some(input.exactly / threads as u64);
        result.leftover = input.exactly % threads as u64;
    } else if let Some(duration) = input.duration {
        result.requested_duration = godur::format(duration);
    }
    result
}

/// fortio's "Starting at ..." line (without the trailing newline).
pub fn starting_line(input: &PlanInput, plan: &Plan, procs: usize) -> String {
    let threads = plan.threads;
    let per = plan.per_thread.unwrap_or(0);
    let total = per * threads as u64;
    if input.qps > 0.0 {
        let head = format!(
            "Starting at {} qps with {threads} thread(s) [gomax {procs}]",
            g(input.qps, None)
        );
        return match (input.exactly, input.duration) {
            (0, None) => format!("{head} until interrupted"),
            (0, Some(d)) => format!(
                "{head} for {} : {per} calls each (total {total})",
                godur::format(d)
            ),
            (n, _) => format!(
                "{head} : exactly {n}, {per} calls each (total {total} + {})",
                plan.leftover
            ),
        };
    }
    let head = format!("Starting at max qps with {threads} thread(s) [gomax {procs}]");
    match (input.exactly, input.duration) {
        (0, None) => format!("{head} until interrupted"),
        (0, Some(d)) => format!("{head} for {}", godur::format(d)),
        (n, _) => format!(
            "{head} for exactly {n} calls ({per} per thread + {})",
            plan.leftover
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(qps: f64, secs: Option<u64>, exactly: u64, threads: usize) -> PlanInput {
        PlanInput {
            qps,
            duration: secs.map(Duration::from_secs),
            exactly,
            threads,
        }
    }

    #[test]
    fn fixed_rate_for_a_duration() {
        let i = input(8.0, Some(5), 0, 4);
        let p = plan(&i);
        assert_eq!(p.threads, 4);
        assert_eq!(p.per_thread, Some(10));
        assert_eq!(p.per_thread_qps, Some(2.0));
        // 10 calls over 5 s: the last starts at 5 s, like fortio.
        let interval = p.interval.expect("fixed rate").as_secs_f64();
        assert!((interval - 5.0 / 9.0).abs() < 1e-9, "{interval}");
        assert_eq!(p.requested_qps, "8");
        assert_eq!(p.requested_duration, "5s");
        assert_eq!(
            starting_line(&i, &p, 2),
            "Starting at 8 qps with 4 thread(s) [gomax 2] for 5s : 10 calls each (total 40)"
        );
    }

    #[test]
    fn exact_count_gives_the_leftover_to_connection_zero() {
        let i = input(100.0, Some(5), 10, 4);
        let p = plan(&i);
        assert_eq!(p.threads, 4);
        assert_eq!(p.per_thread, Some(2));
        assert_eq!(p.leftover, 2);
        assert_eq!(p.calls_for(0), Some(4));
        assert_eq!(p.calls_for(3), Some(2));
        assert_eq!(p.requested_duration, "exactly 10 calls");
        assert_eq!(
            p.interval,
            Some(Duration::from_millis(40)),
            "25 qps per connection"
        );
        let total: u64 = (0..p.threads).filter_map(|t| p.calls_for(t)).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn tiny_runs_lower_the_thread_count() {
        let p = plan(&input(1.0, Some(1), 0, 4));
        assert_eq!((p.threads, p.per_thread), (1, Some(2)));
        let p = plan(&input(10.0, Some(1), 0, 8));
        assert_eq!((p.threads, p.per_thread), (5, Some(2)));
    }

    #[test]
    fn max_speed() {
        let i = input(0.0, Some(5), 0, 16);
        let p = plan(&i);
        assert_eq!(p.requested_qps, "max");
        assert_eq!(p.per_thread, None);
        assert_eq!(p.per_thread_qps, None);
        assert_eq!(p.interval, None);
        assert_eq!(p.requested_duration, "5s");
        assert_eq!(
            starting_line(&i, &p, 1),
            "Starting at max qps with 16 thread(s) [gomax 1] for 5s"
        );
        let p = plan(&input(-1.0, None, 103, 4));
        assert_eq!(p.per_thread, Some(25));
        assert_eq!(p.leftover, 3);
        assert_eq!(p.requested_duration, "exactly 103 calls");
    }

    #[test]
    fn unbounded_runs() {
        let p = plan(&input(50.0, None, 0, 2));
        assert_eq!(p.per_thread, None);
        assert_eq!(p.requested_duration, "until stop");
        assert_eq!(p.requested_qps, "50");
        let p = plan(&input(0.0, None, 0, 2));
        assert_eq!(p.requested_duration, "");
    }
}
