//! Rate limits for log lines a peer can cause (failed handshakes, refused connections), so a
//! flood of bad peers cannot flood the log: at most `per_window` lines per window, and the
//! next line allowed says how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most `per_window` events through per `window`.
#[derive(Debug)]
pub struct LogLimit {
    per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    allowed: u32,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new(per_window: u32, window: Duration) -> Self {
        LogLimit {
            per_window,
            window,
            state: Mutex::new(Window {
                started: None,
                allowed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(left out since the last line)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// As [`LogLimit::allow`], at `now`.
    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.started
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            w.started = Some(now);
            w.allowed = 0;
        }
        if w.allowed < self.per_window {
            w.allowed += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_window_and_counts_the_rest() {
        let limit = LogLimit::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(t0), Some(0));
        assert_eq!(limit.allow_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow_at(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(1100)), Some(0));
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(1200)), None);
    }
}
