//! `FileSource`: watch manifest files, debounce, recompile off the data path, swap or reject.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Snapshot;
use crate::compile::{compile, is_manifest, read_path};
use crate::error::ConfigErrors;
use crate::store::Store;

const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);
/// Each route's status, one line per parent (as `mesh validate` prints them): at warn level
/// where a condition is `False`; at most [`LOGGED_WARNINGS`] lines.
fn log_route_statuses(snapshot: &Snapshot) {
    let statuses = snapshot.route_statuses();
    let lines = statuses
        .iter()
        .flat_map(|s| s.parents.iter().map(move |p| (s, p)));
    let mut logged = 0;
    for (status, p) in lines {
        logged += 1;
        if logged > LOGGED_WARNINGS {
            let routes = statuses.len();
            tracing::info!(routes, "more route statuses not logged");
            return;
        }
        let (route, parent) = (&status.route, &p.parent);
        let (accepted, resolved_refs) = (&p.accepted, &p.resolved_refs);
        if accepted.status && resolved_refs.status {
            tracing::info!(route, parent, %accepted, %resolved_refs, "route status");
        } else {
            tracing::warn!(route, parent, %accepted, %resolved_refs, "route status");
        }
    }
}

/// At most this many warnings of one reload are logged (a huge file can have thousands).
const LOGGED_WARNINGS: usize = 20;
/// How long a config that would stop every component must stay unchanged before it applies.
const DEFAULT_EMPTYING_GRACE: Duration = Duration::from_secs(5);
/// Poll interval when no native watcher is available (e.g. inotify instances exhausted).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

type Docs = Vec<(PathBuf, String)>;

/// Watches a manifest file or directory and keeps a `Store` up to date.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    store: Arc<Store>,
    debounce: Duration,
    /// See [`FileSource::with_emptying_grace`].
    emptying_grace: Duration,
    /// The documents the store's current snapshot was compiled from, if known.
    initial: Option<Docs>,
}

impl FileSource {
    /// Watches `path` (a file or a directory of `*.yaml`/`*.yml`); debounce 150 ms.
    pub fn new(path: PathBuf, store: Arc<Store>) -> Self {
        Self {
            path,
            store,
            debounce: DEFAULT_DEBOUNCE,
            emptying_grace: DEFAULT_EMPTYING_GRACE,
            initial: None,
        }
    }

    /// The documents the store's current snapshot came from: once watching, the source
    /// compares the files with them, so an edit made before the watch began is not lost.
    pub fn with_initial(self, docs: Vec<(PathBuf, String)>) -> Self {
        Self {
            initial: Some(docs),
            ..self
        }
    }

    /// Registers the watcher now (no change after this call is missed) and runs the reload
    /// loop on a task until `shutdown` is cancelled.
    pub fn spawn(self, shutdown: CancellationToken) -> notify::Result<tokio::task::JoinHandle<()>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = start_watcher(&self.path, tx)?;
        Ok(tokio::spawn(self.watch(watcher, rx, shutdown)))
    }

    /// Waits this long after the last change before recompiling.
    pub fn with_debounce(self, debounce: Duration) -> Self {
        Self { debounce, ..self }
    }

    /// A config that would stop every component (no node, no workload left: a deleted
    /// manifest, or an editor's delete-and-recreate caught half way) applies only once the
    /// files stayed that way this long (default 5 s); until then the last snapshot serves.
    pub fn with_emptying_grace(self, emptying_grace: Duration) -> Self {
        Self {
            emptying_grace,
            ..self
        }
    }

    /// Watches until `shutdown` is cancelled. Each burst of changes is recompiled on the
    /// blocking pool; success swaps the snapshot, failure is recorded and the old one kept.
    async fn watch(
        mut self,
        _watcher: Box<dyn Watcher + Send>,
        mut rx: mpsc::UnboundedReceiver<()>,
        shutdown: CancellationToken,
    ) {
        let mut last = self.initial.take();
        let mut held_until = None;
        if last.is_some() {
            // Catch edits made between the initial read and the start of the watch.
            held_until = self.reload(&mut last, false).await;
        }
        loop {
            let confirmed = tokio::select! {
                _ = shutdown.cancelled() => return,
                got = rx.recv() => match got {
                    Some(()) => false,
                    None => return,
                },
                _ = sleep_until_some(held_until) => true,
            };
            if !confirmed && !self.settle(&mut rx, &shutdown).await {
                return;
            }
            held_until = self.reload(&mut last, confirmed).await;
        }
    }

    /// Waits until no event arrived for `debounce` (at most 20 debounce periods).
    async fn settle(
        &self,
        rx: &mut mpsc::UnboundedReceiver<()>,
        shutdown: &CancellationToken,
    ) -> bool {
        let deadline = Instant::now() + self.debounce * 20;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.debounce) => return true,
                got = rx.recv() => {
                    if got.is_none() {
                        return false;
                    }
                    if Instant::now() >= deadline {
                        return true;
                    }
                }
            }
        }
    }

    /// Reads, compiles and applies the files. Returns when to look again if a config that
    /// would stop everything is being held back (`confirmed`: it has stayed so all along).
    async fn reload(&self, last: &mut Option<Docs>, confirmed: bool) -> Option<Instant> {
        let path = self.path.clone();
        let previous = last.clone();
        let job = tokio::task::spawn_blocking(move || load_if_changed(&path, previous));
        let (docs, outcome) = match job.await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "config reload task failed");
                return None;
            }
        };
        match outcome {
            Outcome::Unchanged => tracing::debug!("config files unchanged"),
            Outcome::Compiled(snapshot) => {
                let emptying = stops_everything(&self.store.load(), &snapshot);
                if emptying && !confirmed {
                    let grace = self.emptying_grace;
                    tracing::warn!(path = %self.path.display(), grace_s = grace.as_secs_f64(),
                        "config now has no node and no workload: holding it back until the files stay so; the last config keeps serving");
                    return Some(Instant::now() + grace);
                }
                if emptying {
                    tracing::error!(path = %self.path.display(),
                        "config has had no node and no workload for the whole grace period: applying it, every component stops");
                }
                for w in snapshot.warnings().iter().take(LOGGED_WARNINGS) {
                    tracing::warn!(warning = %w, "config warning");
                }
                if let Some(more) = snapshot.warnings().len().checked_sub(LOGGED_WARNINGS)
                    && more > 0
                {
                    tracing::warn!(more, "more config warnings not logged");
                }
                log_route_statuses(&snapshot);
                if let Some(version) = self.store.replace(*snapshot) {
                    tracing::info!(version, path = %self.path.display(), "config reloaded");
                }
            }
            Outcome::Rejected(errors) => self.store.record_rejection(&errors),
        }
        *last = docs;
        None
    }
}

/// Whether `next` would stop every component `current` runs: it keeps no node and no workload.
fn stops_everything(current: &crate::Snapshot, next: &crate::Snapshot) -> bool {
    let empty = |s: &crate::Snapshot| s.nodes().is_empty() && s.workloads().next().is_none();
    empty(next) && !empty(current)
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

enum Outcome {
    Unchanged,
    Compiled(Box<crate::Snapshot>),
    Rejected(ConfigErrors),
}

/// Reads the files; compiles unless they equal `previous`. Returns what was read.
fn load_if_changed(path: &Path, previous: Option<Docs>) -> (Option<Docs>, Outcome) {
    let docs = match read_path(path) {
        Ok(docs) => docs,
        Err(errors) => return (None, Outcome::Rejected(errors)),
    };
    if previous.as_ref() == Some(&docs) {
        return (previous, Outcome::Unchanged);
    }
    let outcome = match compile(docs.clone()) {
        Ok(snapshot) => Outcome::Compiled(Box::new(snapshot)),
        Err(errors) => Outcome::Rejected(errors),
    };
    (Some(docs), outcome)
}

/// Which filesystem events concern the watched path.
#[derive(Clone, Debug)]
struct EventFilter {
    /// `Some` when watching one file (through its directory).
    file_name: Option<OsString>,
}

impl EventFilter {
    fn relevant(&self, event: &Event) -> bool {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            // Our own reads produce access events: never react to them.
            EventKind::Access(_) => return false,
            _ => {}
        }
        event.paths.iter().any(|p| {
            let name = p.file_name();
            // `..data` swaps: how Kubernetes updates mounted ConfigMaps.
            let swap = name.is_some_and(|n| n.to_string_lossy().starts_with(".."));
            swap || match &self.file_name {
                Some(file) => name == Some(file.as_os_str()),
                None => is_manifest(p),
            }
        })
    }
}

/// Watches the directory (or the file's directory, so replacement by rename is seen).
fn start_watcher(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<Box<dyn Watcher + Send>> {
    let (dir, filter) = if path.is_dir() {
        (path.to_path_buf(), EventFilter { file_name: None })
    } else {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = parent.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let file_name = path.file_name().map(OsString::from);
        (dir, EventFilter { file_name })
    };
    let handler = move |res: notify::Result<Event>| {
        // An error from the watcher may hide a change: recompiling is the safe answer.
        let wanted = res.as_ref().map_or(true, |ev| filter.relevant(ev));
        if wanted {
            let _ = tx.send(());
        }
    };
    let mut watcher: Box<dyn Watcher + Send> = match notify::recommended_watcher(handler.clone()) {
        Ok(w) => Box::new(w),
        Err(e) => {
            tracing::warn!(error = %e, "native file watcher unavailable; polling");
            let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
            Box::new(notify::PollWatcher::new(handler, config)?)
        }
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn file_filter_ignores_reads_and_other_files() {
        let f = EventFilter {
            file_name: Some("mesh.yaml".into()),
        };
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(f.relevant(&event(modify, "/d/mesh.yaml")));
        assert!(!f.relevant(&event(modify, "/d/other.yaml")));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(f.relevant(&event(renamed, "/d/mesh.yaml")));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!f.relevant(&event(read, "/d/mesh.yaml")));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(f.relevant(&event(written, "/d/mesh.yaml")));
    }

    #[test]
    fn dir_filter_wants_manifests_only() {
        let f = EventFilter { file_name: None };
        let create = EventKind::Create(CreateKind::File);
        assert!(f.relevant(&event(create, "/d/a.yml")));
        assert!(!f.relevant(&event(create, "/d/.a.yaml.swp")));
        assert!(f.relevant(&event(create, "/d/..data")));
    }
}
