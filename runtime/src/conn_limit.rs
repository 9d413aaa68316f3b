//! Caps on accepted connections: per process, and per peer address, so no single pod can take
//! the file descriptors every other pod needs. A connection over a cap is closed at once (load
//! shedding), logged (rate-limited) and counted in `mesh_connections_refused_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tracing::warn;

use crate::LogLimit;

/// Refusals are logged at most 10 times a second per process.
static REFUSALS: LogLimit = LogLimit::new(10, Duration::from_secs(1));

/// Descriptors kept free for everything that is not an accepted connection (listeners,
/// upstream connections, config files, logs).
const RESERVED_DESCRIPTORS: u64 = 256;

/// How many connections may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// All accepted connections of the process (every listener sharing this limit).
    pub per_process: usize,
    /// Connections from one peer address (one pod on a SOCKS listener, one node's ztunnel on
    /// an HBONE listener).
    pub per_peer: usize,
}

impl Limits {
    /// From the process's open-file limit: every descriptor but [`RESERVED_DESCRIPTORS`] (each
    /// accepted connection can need a second descriptor upstream, so half of them), and one
    /// peer at most half of that.
    pub fn from_open_file_limit(open_files: u64) -> Self {
        let usable = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(64) / 2;
        let per_process = usize::try_from(usable).unwrap_or(usize::MAX);
        Limits {
            per_process,
            per_peer: (per_process / 2).max(1),
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Process,
    Peer,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Process => "process",
            Refusal::Peer => "peer",
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// The connection caps of one process, shared by its listeners.
#[derive(Debug)]
pub struct ConnectionLimit {
    limits: Limits,
    open: Mutex<Open>,
    refused: IntCounterVec,
    open_gauge: IntGauge,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limit: Arc<ConnectionLimit>,
    peer: IpAddr,
}

impl ConnectionLimit {
    pub fn new(limits: Limits) -> Arc<Self> {
        let refused = IntCounterVec::new(
            Opts::new(
                "mesh_connections_refused_total",
                "Accepted connections closed at once because a connection cap was reached \
                 (process-wide; limit=process|peer)",
            ),
            &["listener", "limit"],
        )
        .expect("valid metric");
        let open_gauge = IntGauge::new(
            "mesh_connections_open",
            "Accepted connections open now, process-wide",
        )
        .expect("valid metric");
        Arc::new(ConnectionLimit {
            limits,
            open: Mutex::new(Open::default()),
            refused,
            open_gauge,
        })
    }

    /// The limit every listener of this process shares unless told otherwise, from the
    /// open-file limit when first used ([`Limits::from_open_file_limit`]; raise the limit
    /// first with [`crate::raise_open_file_limit`]).
    pub fn process() -> &'static Arc<Self> {
        static PROCESS: std::sync::OnceLock<Arc<ConnectionLimit>> = std::sync::OnceLock::new();
        PROCESS
            .get_or_init(|| Self::new(Limits::from_open_file_limit(crate::fd_limit::open_files())))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Adds the metrics to `registry` (several registries may show the same process-wide
    /// values).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.open_gauge.clone()))
    }

    /// A permit for a connection from `peer` on `listener`, or the refusal (logged, counted).
    pub fn admit(
        self: &Arc<Self>,
        listener: &str,
        peer: IpAddr,
    ) -> Result<ConnectionPermit, Refusal> {
        let decided = {
            let mut open = self.lock();
            let from_peer = open.by_peer.get(&peer).copied().unwrap_or(0);
            if open.total >= self.limits.per_process {
                Err(Refusal::Process)
            } else if from_peer >= self.limits.per_peer {
                Err(Refusal::Peer)
            } else {
                open.total += 1;
                open.by_peer.insert(peer, from_peer + 1);
                Ok(())
            }
        };
        match decided {
            Ok(()) => {
                self.open_gauge.inc();
                Ok(ConnectionPermit {
                    limit: self.clone(),
                    peer,
                })
            }
            Err(refusal) => {
                self.refused
                    .with_label_values(&[listener, refusal.label()])
                    .inc();
                if let Some(suppressed) = REFUSALS.allow() {
                    let cap = match refusal {
                        Refusal::Process => self.limits.per_process,
                        Refusal::Peer => self.limits.per_peer,
                    };
                    warn!(%listener, %peer, limit = refusal.label(), cap, suppressed, "connection refused: too many open connections");
                }
                Err(refusal)
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections refused so far on `listener` for `refusal`.
    pub fn refused(&self, listener: &str, refusal: Refusal) -> u64 {
        self.refused
            .with_label_values(&[listener, refusal.label()])
            .get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Every critical section leaves the counts consistent, so a poisoned lock is usable.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.limit.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
        drop(open);
        self.limit.open_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn caps_per_peer_and_per_process_and_frees_on_drop() {
        let limit = ConnectionLimit::new(Limits {
            per_process: 3,
            per_peer: 2,
        });
        let a1 = limit.admit("t", ip(1)).expect("first");
        let _a2 = limit.admit("t", ip(1)).expect("second");
        assert_eq!(limit.admit("t", ip(1)).err(), Some(Refusal::Peer));
        let _b1 = limit.admit("t", ip(2)).expect("another peer");
        assert_eq!(limit.admit("t", ip(3)).err(), Some(Refusal::Process));
        assert_eq!(limit.open(), 3);
        drop(a1);
        let _a3 = limit.admit("t", ip(1)).expect("freed");
        assert_eq!(limit.refused("t", Refusal::Peer), 1);
        assert_eq!(limit.refused("t", Refusal::Process), 1);
        assert_eq!(limit.open_gauge.get(), 3);
    }

    #[test]
    fn limits_follow_the_open_file_limit() {
        let limits = Limits::from_open_file_limit(20_000);
        assert_eq!(limits.per_process, (20_000 - 256) / 2);
        assert_eq!(limits.per_peer, limits.per_process / 2);
        let tiny = Limits::from_open_file_limit(10);
        assert_eq!((tiny.per_process, tiny.per_peer), (32, 16));
    }

    #[test]
    fn metrics_register_in_several_registries() {
        let limit = ConnectionLimit::new(Limits::from_open_file_limit(1024));
        let (first, second) = (Registry::new(), Registry::new());
        limit.register(&first).expect("first");
        limit.register(&second).expect("second");
        assert_eq!(second.gather().len(), first.gather().len());
    }
}
