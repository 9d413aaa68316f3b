//! Backpressure from an upstream HTTP/1.1 connection to the caller's tunnel, so a body that
//! streams both ways at once (an upload echoed back while it is sent) never wedges.
//!
//! Pingora proxies a request with two loops joined by small task pipes. The loop facing the
//! upstream awaits each request-body write to completion before it reads the response again.
//! If the backend answers while it reads (an echo, a transcoder, a bidirectional stream), its
//! response waits for that loop, the backend stops reading, the write never completes, and the
//! exchange is stuck for good — deterministically once the caller sends faster than the
//! backend's response is read back, which Pingora's loop does (a 64 KiB request chunk per turn
//! against one response chunk, often 8 KiB).
//!
//! The fix keeps every request-body write able to complete at once:
//!
//! - the egress reads what Pingora writes eagerly into a bounded queue ([`QUEUE_LIMIT`]) and
//!   records how much is queued in the connection's [`Backlog`];
//! - the caller's tunnel ([`ReadGate`]) reads no more of an HTTP/1.1 caller's bytes while that
//!   backlog is above [`RESUME_BELOW`]. Pingora then has nothing to write, so its loop reads
//!   the response, the backend drains, and the backlog falls.
//!
//! What Pingora can still hold when the gate closes (its pipe of four chunks, the chunk in
//! hand, its read buffer) is far below `QUEUE_LIMIT - RESUME_BELOW`, so the egress never stops
//! reading while the gate is closed. An HTTP/2 caller is not gated (its bytes carry every
//! stream and the flow-control updates its own responses need); its request chunks are one
//! DATA frame each, so Pingora's loop does not drift the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// The most the egress queues from Pingora for one connection before it stops reading.
pub const QUEUE_LIMIT: usize = 1 << 20;
/// The caller's reads resume once the queue is this small again.
pub const RESUME_BELOW: usize = 256 << 10;

/// Response header on the egress's CONNECT answer naming its connection, so the request that
/// Pingora gives the connection can find the connection's [`Backlog`].
pub const CONNECTION_ID_HEADER: &str = "x-mesh-egress-connection";

/// Bytes the egress has taken from Pingora for one upstream connection and not yet handed to
/// HBONE, and the caller waiting for it to fall.
#[derive(Debug, Default)]
pub struct Backlog {
    queued: AtomicUsize,
    waiting_reader: AtomicWaker,
}

impl Backlog {
    /// Records the queue length; wakes the waiting caller once it is below [`RESUME_BELOW`].
    pub fn set_queued(&self, bytes: usize) {
        self.queued.store(bytes, Ordering::Release);
        if bytes < RESUME_BELOW {
            self.waiting_reader.wake();
        }
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Ready when the caller may read on; otherwise wakes `cx` when it may.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.queued() < RESUME_BELOW {
            return Poll::Ready(());
        }
        self.waiting_reader.register(cx.waker());
        // Checked again: the egress may have drained between the load and the registration.
        match self.queued() < RESUME_BELOW {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

/// The live egress connections of one waypoint, by the id their CONNECT answer carries.
#[derive(Debug, Default)]
pub struct Backlogs {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Weak<Backlog>>>,
}

/// Keeps an egress connection findable; dropping it forgets the connection.
#[derive(Debug)]
pub struct Registration {
    backlogs: Arc<Backlogs>,
    id: u64,
    backlog: Arc<Backlog>,
}

impl Registration {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.backlogs.lock().remove(&self.id);
    }
}

impl Backlogs {
    /// Registers a new egress connection.
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let backlog = Arc::new(Backlog::default());
        self.lock().insert(id, Arc::downgrade(&backlog));
        Registration {
            backlogs: self.clone(),
            id,
            backlog,
        }
    }

    /// The backlog of the live connection `id`.
    pub fn find(&self, id: u64) -> Option<Arc<Backlog>> {
        self.lock().get(&id)?.upgrade()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Backlog>>> {
        // The map is left consistent by every critical section, so a poisoned lock is usable.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The caller's side: which upstream backlog (if any) the tunnel's reads wait on now. One
/// HTTP/1.1 upstream connection serves one request at a time, so one waiter is enough.
#[derive(Debug, Default)]
pub struct ReadGate {
    upstream: Mutex<Option<Arc<Backlog>>>,
}

impl ReadGate {
    /// The request now proxying uses `backlog`'s connection.
    pub fn attach(&self, backlog: Arc<Backlog>) {
        *self.lock() = Some(backlog);
    }

    /// The request ended: reads no longer depend on its upstream.
    pub fn detach(&self) {
        *self.lock() = None;
    }

    /// Ready when the tunnel may read more of the caller's bytes.
    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        let upstream = self.lock().clone();
        match upstream {
            Some(backlog) => backlog.poll_room(cx),
            None => Poll::Ready(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Backlog>>> {
        self.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn gate_closes_above_the_resume_mark_and_wakes_when_drained() {
        let backlogs = Arc::new(Backlogs::default());
        let connection = backlogs.register();
        let gate = ReadGate::default();
        gate.attach(backlogs.find(connection.id()).expect("registered"));
        let woken = Arc::new(Flag(AtomicBool::new(false)));
        let waker = woken.clone().into();
        let mut cx = Context::from_waker(&waker);

        assert!(gate.poll_open(&mut cx).is_ready());
        connection.backlog().set_queued(RESUME_BELOW);
        assert!(gate.poll_open(&mut cx).is_pending());
        connection.backlog().set_queued(RESUME_BELOW + 1);
        assert!(!woken.0.load(Ordering::SeqCst), "still above the mark");
        connection.backlog().set_queued(RESUME_BELOW - 1);
        assert!(woken.0.load(Ordering::SeqCst));
        assert!(gate.poll_open(&mut cx).is_ready());

        connection.backlog().set_queued(QUEUE_LIMIT);
        gate.detach();
        assert!(gate.poll_open(&mut cx).is_ready(), "no request, no gate");
    }

    #[test]
    fn a_finished_connection_is_forgotten() {
        let backlogs = Arc::new(Backlogs::default());
        let connection = backlogs.register();
        let id = connection.id();
        assert!(backlogs.find(id).is_some());
        drop(connection);
        assert!(backlogs.find(id).is_none());
        assert!(backlogs.lock().is_empty());
    }
}
