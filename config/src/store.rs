//! The current snapshot, swapped atomically; readers never lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::error::ConfigErrors;
use crate::snapshot::Snapshot;

pub use crate::watch::FileSource;

/// At most this many errors of one rejected update are logged.
const LOGGED_ERRORS: usize = 20;
/// At most this many are kept for [`Store::last_rejection`].
const KEPT_ERRORS: usize = 1000;

/// Holds the live snapshot; `replace` swaps in a new one and notifies subscribers.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// Serialises `replace` so versions are strictly increasing (not on the read path).
    replace_lock: Mutex<()>,
    versions: watch::Sender<u64>,
    rejections: AtomicU64,
    last_rejection: Mutex<Option<String>>,
}

impl Store {
    /// A store serving `initial` as version 1.
    pub fn new(mut initial: Snapshot) -> Arc<Self> {
        initial.set_version(1);
        let (versions, _) = watch::channel(1);
        Arc::new(Self {
            current: ArcSwap::from_pointee(initial),
            replace_lock: Mutex::new(()),
            versions,
            rejections: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
        })
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in `next` as the previous version + 1, notifies subscribers, returns the version.
    /// An update that would change the trust domain is rejected instead (`None`): the
    /// process's identities and certificates are in the one it started with.
    pub fn replace(&self, mut next: Snapshot) -> Option<u64> {
        let _guard = self
            .replace_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load();
        if next.trust_domain() != current.trust_domain() {
            let reason = format!(
                "data.mesh.trustDomain: {:?} is not {:?}, the trust domain this process's \
                 identities and certificates are in; restart it to change the trust domain",
                next.trust_domain(),
                current.trust_domain()
            );
            self.reject(1, &reason, reason.clone());
            return None;
        }
        let version = current.version() + 1;
        next.set_version(version);
        self.current.store(Arc::new(next));
        self.versions.send_replace(version);
        Some(version)
    }

    /// Receives the version after every `replace`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Logs a rejected update (the current snapshot keeps serving; the log names the first
    /// errors and counts the rest) and counts it.
    pub fn record_rejection(&self, errors: &ConfigErrors) {
        let logged = errors.summary(LOGGED_ERRORS);
        self.reject(errors.len(), &logged, errors.summary(KEPT_ERRORS));
    }

    /// Logs and counts a rejected update of `errors` errors, `kept` for [`Store::last_rejection`].
    fn reject(&self, errors: usize, logged: &str, kept: String) {
        let count = self.rejections.fetch_add(1, Ordering::Relaxed) + 1;
        let serving = self.current.load().version();
        tracing::error!(
            rejections = count,
            serving_version = serving,
            errors,
            "config update rejected; keeping the last good snapshot:\n{logged}"
        );
        let mut last = self
            .last_rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some(kept);
    }

    /// How many updates were rejected.
    pub fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }

    /// The errors of the last rejected update, one per line (at most 1,000, then a count).
    pub fn last_rejection(&self) -> Option<String> {
        self.last_rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
