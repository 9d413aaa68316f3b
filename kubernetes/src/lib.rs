//! The Kubernetes API as a config source. One watcher per kind the mesh reads (kube-runtime's:
//! list, then watch; a relist after `410 Gone`; bookmarks; backoff when the API fails) keeps
//! every object as the API serves it. After each burst of changes the objects are compiled
//! once (`mesh_config::compile_objects`: an invalid object is left out and logged, the rest
//! keeps updating) and the snapshot swapped into the `Store`, the path files take too. Who
//! reports on the objects (the controller's route statuses) can follow each compile's
//! [`Report`].

pub mod controller;
pub mod enroll;
pub mod gateway_status;
mod kinds;
mod objects;
pub mod overlay;
pub mod statuses;
#[cfg(feature = "testing")]
pub mod testing;
pub mod waypoint_deploy;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use mesh_config::{ConfigError, ConfigErrors, Location, Snapshot, Store};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use kinds::{CONTROLLED, KINDS, Kind};
use objects::Objects;

/// How long changes are gathered before one compile.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the first config from the Kubernetes API is invalid:\n{0}")]
    Invalid(ConfigErrors),
    #[error("the Kubernetes API stopped before the first config was read")]
    Stopped,
}

/// One compile of the API's objects, for those who report on them.
#[derive(Debug)]
pub struct Report {
    /// Every object the compile read, as the API served it.
    pub objects: Vec<(Location, Value)>,
    /// The config compiled from them.
    pub snapshot: Arc<Snapshot>,
    /// The problems of the objects left out of it.
    pub left_out: Vec<ConfigError>,
}

/// Watches the API for the kinds in [`KINDS`].
pub struct KubeSource {
    client: kube::Client,
    namespace: Option<String>,
    reports: Option<watch::Sender<Option<Arc<Report>>>>,
}

impl KubeSource {
    pub fn new(client: kube::Client) -> Self {
        KubeSource {
            client,
            namespace: None,
            reports: None,
        }
    }

    /// Also publishes a [`Report`] of every compile that is served (`None` until the first).
    pub fn reporting(mut self) -> (Self, watch::Receiver<Option<Arc<Report>>>) {
        let (sender, receiver) = watch::channel(None);
        self.reports = Some(sender);
        (self, receiver)
    }

    /// Namespaced kinds from `namespace` only (cluster-scoped kinds are always watched whole).
    pub fn namespaced(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Starts the watchers and waits until every kind has been listed once; returns the
    /// store, kept current until `shutdown`.
    pub async fn start(self, shutdown: CancellationToken) -> Result<Arc<Store>, SourceError> {
        let objects = Arc::new(Objects::new(KINDS.len()));
        let changed = Arc::new(Notify::new());
        for (index, kind) in KINDS.iter().enumerate() {
            let namespace = match kind.only {
                Some((namespace, _)) => Some(namespace),
                None => self.namespace.as_deref(),
            };
            let api = kind.api(&self.client, namespace);
            let watch = watch(api, index, objects.clone(), changed.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = watch => {}
                    () = stop.cancelled() => {}
                }
            });
        }
        // The first config: every kind listed.
        loop {
            let listed = changed.notified();
            if objects.all_listed() {
                break;
            }
            tokio::select! {
                () = listed => {}
                () = shutdown.cancelled() => return Err(SourceError::Stopped),
            }
        }
        let (compiled, read) = compile(&objects).await.map_err(SourceError::Invalid)?;
        let store = Store::new(compiled.snapshot);
        info!(
            version = store.load().version(),
            "config from the Kubernetes API"
        );
        let reports = self.reports;
        report(reports.as_ref(), &store, read, compiled.left_out);
        tokio::spawn(follow(objects, changed, store.clone(), reports, shutdown));
        Ok(store)
    }
}

/// Applies one kind's watch events to `objects`, telling `changed` of each.
async fn watch(api: Api<DynamicObject>, index: usize, objects: Arc<Objects>, changed: Arc<Notify>) {
    let kind = &KINDS[index];
    let config = match kind.only {
        Some((_, name)) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => objects.begin_list(index),
            Ok(Event::InitApply(obj)) => objects.listed(index, kind, obj),
            Ok(Event::InitDone) => objects.end_list(index),
            Ok(Event::Apply(obj)) => objects.apply(index, kind, obj),
            Ok(Event::Delete(obj)) => objects.delete(index, &obj),
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if status.code == 404 =>
            {
                // The kind is not served (its CRD is not installed: no Istio, say). It has no
                // objects, so the config need not wait for it; listing goes on, paced by the
                // backoff, for the day it is installed.
                if !objects.unserved(index) {
                    continue;
                }
                info!(kind = kind.kind, api = %kind.api_version(), "not served by this cluster; read as empty");
            }
            Err(e) => {
                // The backoff paces the retries; the last good objects keep serving.
                warn!(kind = kind.kind, error = %e, "watching the Kubernetes API failed; retrying");
                continue;
            }
        }
        changed.notify_one();
    }
}

/// Compiles after each burst of changes, until `shutdown`.
async fn follow(
    objects: Arc<Objects>,
    changed: Arc<Notify>,
    store: Arc<Store>,
    reports: Option<watch::Sender<Option<Arc<Report>>>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
        tokio::time::sleep(DEBOUNCE).await;
        match compile(&objects).await {
            Ok((compiled, read)) => {
                let Some(version) = store.replace(compiled.snapshot) else {
                    continue;
                };
                info!(
                    version,
                    left_out = compiled.left_out.len(),
                    "config updated from the Kubernetes API"
                );
                report(reports.as_ref(), &store, read, compiled.left_out);
            }
            Err(errors) => {
                error!("config from the Kubernetes API rejected; the last good one keeps serving");
                store.record_rejection(&errors);
            }
        }
    }
}

/// Publishes what was just compiled from `objects` and swapped into `store`.
fn report(
    reports: Option<&watch::Sender<Option<Arc<Report>>>>,
    store: &Store,
    objects: Vec<(Location, Value)>,
    left_out: Vec<ConfigError>,
) {
    if let Some(reports) = reports {
        let snapshot = store.load();
        let report = Report {
            objects,
            snapshot,
            left_out,
        };
        reports.send_replace(Some(Arc::new(report)));
    }
}

/// One compile of the objects now held, off the async threads; objects left out are logged.
/// Returns the objects it read too.
async fn compile(
    objects: &Arc<Objects>,
) -> Result<(mesh_config::Compiled, Vec<(Location, Value)>), ConfigErrors> {
    let current = objects.current();
    let compiled = tokio::task::spawn_blocking(move || {
        mesh_config::compile_objects(&current).map(|compiled| (compiled, current))
    });
    let compiled = match compiled.await {
        Ok(result) => result?,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    };
    for error in &compiled.0.left_out {
        warn!(%error, "object left out of the config");
    }
    Ok(compiled)
}
