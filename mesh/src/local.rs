//! A whole mesh in one process: one ztunnel per `Node`, one waypoint per waypoint pod, and an
//! echo app for every pod that opts in with `mesh.dev/echo: "true"`.
//!
//! Pods live on loopback addresses (the default), or in network namespaces of their own
//! ([`LocalNetwork::Netns`], root): an island of pod namespaces on a bridge (`island`), where
//! the ztunnels capture transparently and apps bind inside their pods.
//!
//! The set of running components follows the config: on every new snapshot the supervisor
//! starts what appeared and stops what went away (ztunnels in turn follow their pods).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use loadtest::echo::EchoServer;
use mesh_config::{FileSource, ObjectRef, Snapshot, Store, Waypoint, Workload};
use mesh_hbone::{CertificateProvider, Identity, LocalCa, Pool, PoolConfig};
use mesh_runtime::{CancellationToken, Netns, Readiness};
use tokio::task::JoinSet;
use tracing::{error, info};
use waypoint::{WaypointServer, WaypointSettings};
use ztunnel::capture::Capture;
use ztunnel::{Ztunnel, ZtunnelSettings};

use crate::island::{Island, IslandPod};

/// Pod annotation that asks the local runner for an echo app on each container port.
pub const ECHO_ANNOTATION: &str = "mesh.dev/echo";
/// Pod annotation giving its echo apps a keep-alive timeout (`loadtest server
/// --keepalive-timeout`), e.g. `5ms`: an app that closes idle connections under its clients.
pub const ECHO_KEEPALIVE_ANNOTATION: &str = "mesh.dev/echo-keepalive-timeout";
pub use crate::program::{METRICS_PORT, READINESS_PORT};

/// One thing the local runner runs; the key changes whenever it must be restarted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Ztunnel {
        node: String,
        address: IpAddr,
    },
    Waypoint {
        waypoint: ObjectRef,
        pod: String,
        address: IpAddr,
        identity: Identity,
    },
    Echo {
        pod: String,
        address: SocketAddr,
        keepalive_timeout: Option<Duration>,
    },
}

/// Every component a snapshot asks for. Pure.
pub fn desired_components(snapshot: &Snapshot) -> BTreeSet<Component> {
    let mut desired = BTreeSet::new();
    for node in snapshot.nodes() {
        desired.insert(Component::Ztunnel {
            node: node.name.clone(),
            address: node.address,
        });
    }
    for waypoint in snapshot.waypoints() {
        for pod in &waypoint.pods {
            desired.insert(waypoint_component(waypoint, pod));
        }
    }
    for pod in snapshot.workloads().filter(|w| wants_echo(w)) {
        for port in &pod.container_ports {
            desired.insert(Component::Echo {
                pod: format!("{}/{}", pod.namespace, pod.name),
                address: SocketAddr::new(pod.ip, port.port),
                keepalive_timeout: echo_keepalive_timeout(pod).ok().flatten(),
            });
        }
    }
    desired
}

fn waypoint_component(waypoint: &Waypoint, pod: &Workload) -> Component {
    Component::Waypoint {
        waypoint: ObjectRef {
            namespace: waypoint.namespace.clone(),
            name: waypoint.name.clone(),
        },
        pod: pod.name.clone(),
        address: pod.ip,
        identity: pod.identity.clone(),
    }
}

fn wants_echo(pod: &Workload) -> bool {
    pod.annotations.get(ECHO_ANNOTATION).map(String::as_str) == Some("true")
}

/// The keep-alive timeout a pod's echo apps are given, if any.
fn echo_keepalive_timeout(pod: &Workload) -> Result<Option<Duration>, String> {
    let Some(text) = pod.annotations.get(ECHO_KEEPALIVE_ANNOTATION) else {
        return Ok(None);
    };
    match humantime::parse_duration(text) {
        Ok(timeout) if !timeout.is_zero() => Ok(Some(timeout)),
        Ok(_) => Err(format!("{text:?} is not a positive duration")),
        Err(e) => Err(format!("{text:?} is not a duration: {e}")),
    }
}

/// Checks what the runner needs beyond a valid config.
pub fn check_runnable(snapshot: &Snapshot) -> anyhow::Result<()> {
    for pod in snapshot.workloads().filter(|w| wants_echo(w)) {
        if pod.container_ports.is_empty() {
            bail!(
                "pod {}/{} asks for an echo app ({ECHO_ANNOTATION}) but declares no containerPorts",
                pod.namespace,
                pod.name
            );
        }
        if let Err(e) = echo_keepalive_timeout(pod) {
            bail!(
                "pod {}/{}: annotation {ECHO_KEEPALIVE_ANNOTATION}: {e}",
                pod.namespace,
                pod.name
            );
        }
    }
    Ok(())
}

struct Running {
    stop: CancellationToken,
    readiness: Readiness,
}

/// What every component is started with.
struct Shared {
    store: Arc<Store>,
    certs: Arc<dyn CertificateProvider>,
    tuning: Tuning,
    /// The pods' namespaces, in [`LocalNetwork::Netns`].
    island: Option<Mutex<Island>>,
}

/// Where a local mesh's pods live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LocalNetwork {
    /// Each pod on its own loopback address; clients enter the mesh through SOCKS5.
    #[default]
    Loopback,
    /// Each pod in a network namespace of its own (needs root), whose `ip netns` name is
    /// `<prefix><namespace>.<pod>`; the ztunnels capture its traffic, no proxy setting needed.
    /// `dir` holds the ztunnels' names for the namespaces.
    Netns {
        prefix: String,
        dir: std::path::PathBuf,
    },
}

impl Shared {
    /// The namespace of pod `name` (`<namespace>.<pod>`), in [`LocalNetwork::Netns`].
    fn pod_netns(&self, name: &str) -> anyhow::Result<Option<Netns>> {
        let Some(island) = &self.island else {
            return Ok(None);
        };
        let island = island.lock().unwrap_or_else(|e| e.into_inner());
        island.netns(name).map(Some)
    }

    /// Gives every pod of `snapshot` its namespace, and removes those of pods gone.
    fn sync_island(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        if let Some(island) = &self.island {
            let pods = island_pods(snapshot)?;
            island
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync(&pods)?;
        }
        Ok(())
    }
}

/// The island's pods: every pod of `snapshot` (waypoint pods too), by `<namespace>.<pod>`.
fn island_pods(snapshot: &Snapshot) -> anyhow::Result<Vec<IslandPod>> {
    (snapshot.workloads())
        .map(|w| match w.ip {
            IpAddr::V4(ip) => Ok(IslandPod {
                name: format!("{}.{}", w.namespace, w.name),
                ip,
            }),
            IpAddr::V6(ip) => bail!(
                "pod {}/{} has IPv6 address {ip}: namespaces are IPv4 here",
                w.namespace,
                w.name
            ),
        })
        .collect()
}

/// The network of an island holding `pods`: the /16 of the first, which must hold them all.
fn island_network(pods: &[IslandPod]) -> anyhow::Result<ipnet::Ipv4Net> {
    let first = pods.first().context("no pods to build namespaces for")?;
    let network = ipnet::Ipv4Net::new(first.ip, 16)?.trunc();
    crate::island::admit(network, pods)?;
    Ok(network)
}

/// Timeouts of the proxies a local mesh runs (each defaults to the proxy's own default).
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// [`ZtunnelSettings::idle_timeout`].
    pub ztunnel_idle_timeout: std::time::Duration,
    pub waypoint_timeouts: waypoint::Timeouts,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            ztunnel_idle_timeout: ZtunnelSettings::new("").idle_timeout,
            waypoint_timeouts: waypoint::Timeouts::default(),
        }
    }
}

/// A running local mesh. Call [`LocalMesh::stop`] to stop it.
pub struct LocalMesh {
    pub store: Arc<Store>,
    pub ca: Arc<LocalCa>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    running: Arc<Mutex<BTreeMap<Component, Running>>>,
}

impl LocalMesh {
    /// Loads `path` (file or directory), starts everything, and hot-reloads on changes.
    pub async fn start_from_path(path: &Path) -> anyhow::Result<Self> {
        Self::start_from_path_with(path, Tuning::default()).await
    }

    /// As [`LocalMesh::start_from_path`], with the proxies' timeouts from `tuning`.
    pub async fn start_from_path_with(path: &Path, tuning: Tuning) -> anyhow::Result<Self> {
        Self::start_from_path_in(path, tuning, LocalNetwork::Loopback).await
    }

    /// As [`LocalMesh::start_from_path_with`], its pods on `network`.
    pub async fn start_from_path_in(
        path: &Path,
        tuning: Tuning,
        network: LocalNetwork,
    ) -> anyhow::Result<Self> {
        let docs = mesh_config::read_path(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let snapshot = mesh_config::compile(docs.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mesh = Self::start_in(snapshot, tuning, network).await?;
        FileSource::new(path.to_path_buf(), mesh.store.clone())
            .with_initial(docs)
            .spawn(mesh.shutdown.child_token())
            .with_context(|| format!("watching {}", path.display()))?;
        Ok(mesh)
    }

    /// Starts everything the snapshot describes, and follows later snapshots.
    pub async fn start(snapshot: Snapshot) -> anyhow::Result<Self> {
        Self::start_with(snapshot, Tuning::default()).await
    }

    /// As [`LocalMesh::start`], with the proxies' timeouts from `tuning`.
    pub async fn start_with(snapshot: Snapshot, tuning: Tuning) -> anyhow::Result<Self> {
        Self::start_in(snapshot, tuning, LocalNetwork::Loopback).await
    }

    /// As [`LocalMesh::start_with`], its pods on `network`.
    pub async fn start_in(
        snapshot: Snapshot,
        tuning: Tuning,
        network: LocalNetwork,
    ) -> anyhow::Result<Self> {
        check_runnable(&snapshot)?;
        for warning in snapshot.warnings() {
            tracing::warn!("{warning}");
        }
        let ca = Arc::new(LocalCa::new(snapshot.trust_domain()).context("creating the mesh CA")?);
        let store = Store::new(snapshot);
        let island = match &network {
            LocalNetwork::Loopback => None,
            LocalNetwork::Netns { prefix, dir } => {
                let pods = island_pods(&store.load())?;
                let island = Island::create(prefix, dir, island_network(&pods)?)
                    .context("building the pods' network namespaces")?;
                Some(Mutex::new(island))
            }
        };
        let shared = Arc::new(Shared {
            store: store.clone(),
            certs: ca.clone(),
            tuning,
            island,
        });
        shared.sync_island(&store.load())?;
        let mut mesh = LocalMesh {
            store,
            ca,
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            running: Arc::new(Mutex::new(BTreeMap::new())),
        };
        // The first snapshot must start completely; later ones are best effort (logged).
        let first = desired_components(&mesh.store.load());
        for component in first {
            let running = start_component(&shared, &component, &mesh.shutdown).await?;
            lock(&mesh.running).insert(component, running);
        }
        mesh.tasks.spawn(supervise(
            shared,
            mesh.running.clone(),
            mesh.shutdown.clone(),
        ));
        Ok(mesh)
    }

    /// Waits until every proxy reports ready, or fails naming the ones that are not.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting: Vec<String> = lock(&self.running)
                .iter()
                .filter(|(_, r)| !r.readiness.is_ready())
                .map(|(c, _)| format!("{c:?}"))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("not ready after {timeout:?}: {}", waiting.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The components running now.
    pub fn components(&self) -> Vec<Component> {
        lock(&self.running).keys().cloned().collect()
    }

    /// Stops every component and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

fn lock(
    running: &Mutex<BTreeMap<Component, Running>>,
) -> std::sync::MutexGuard<'_, BTreeMap<Component, Running>> {
    running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Follows the store: starts components that appear, stops those that disappear.
async fn supervise(
    shared: Arc<Shared>,
    running: Arc<Mutex<BTreeMap<Component, Running>>>,
    shutdown: CancellationToken,
) {
    let mut versions = shared.store.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = versions.changed() => if changed.is_err() { return },
        }
        let snapshot = shared.store.load();
        let runnable = check_runnable(&snapshot).and_then(|()| match &shared.island {
            Some(island) => {
                let pods = island_pods(&snapshot)?;
                island
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .admits(&pods)
            }
            None => Ok(()),
        });
        if let Err(e) = runnable {
            // What runs stays as it is, as the proxies keep the last good config.
            error!(error = %format!("{e:#}"), "config update cannot be run; keeping what runs");
            continue;
        }
        let desired = desired_components(&snapshot);
        let (stale, missing): (Vec<Component>, Vec<Component>) = {
            let running = lock(&running);
            let stale = running
                .keys()
                .filter(|c| !desired.contains(*c))
                .cloned()
                .collect();
            let missing = desired
                .iter()
                .filter(|c| !running.contains_key(*c))
                .cloned()
                .collect();
            (stale, missing)
        };
        for component in stale {
            if let Some(gone) = lock(&running).remove(&component) {
                info!(?component, "stopping: no longer in the config");
                gone.stop.cancel();
            }
        }
        if let Err(e) = shared.sync_island(&snapshot) {
            error!(error = %format!("{e:#}"), "cannot give the new pods their network namespaces");
        }
        for component in missing {
            match start_with_retries(&shared, &component, &shutdown).await {
                Ok(started) => {
                    info!(?component, "started: new in the config");
                    lock(&running).insert(component, started);
                }
                Err(e) => error!(?component, error = %format!("{e:#}"), "cannot start"),
            }
        }
    }
}

/// A component replacing a stopped one may find its address still held for a moment.
async fn start_with_retries(
    shared: &Shared,
    component: &Component,
    shutdown: &CancellationToken,
) -> anyhow::Result<Running> {
    let mut attempt = 0;
    loop {
        match start_component(shared, component, shutdown).await {
            Ok(running) => return Ok(running),
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::debug!(?component, error = %format!("{e:#}"), attempt, "start failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn start_component(
    shared: &Shared,
    component: &Component,
    shutdown: &CancellationToken,
) -> anyhow::Result<Running> {
    let stop = shutdown.child_token();
    let readiness = match component {
        Component::Ztunnel { node, address } => {
            start_ztunnel(shared, node, *address, &stop).await?
        }
        Component::Waypoint {
            waypoint,
            pod,
            address,
            identity,
        } => start_waypoint(shared, waypoint, pod, *address, identity, &stop).await?,
        Component::Echo {
            pod,
            address,
            keepalive_timeout,
        } => {
            let what = format!("echo app of pod {pod}");
            let netns = shared.pod_netns(&pod.replacen('/', ".", 1))?;
            let listener = crate::program::bind_in(netns.as_ref(), *address, &what).await?;
            let name = pod.rsplit('/').next().unwrap_or(pod).to_string();
            let mut echo = EchoServer::new(name);
            if let Some(timeout) = keepalive_timeout {
                echo = echo.keepalive_timeout(*timeout);
            }
            tokio::spawn(echo.serve(listener, stop.clone()));
            let ready = Readiness::new();
            ready.set_ready(true);
            ready
        }
    };
    Ok(Running { stop, readiness })
}

async fn start_ztunnel(
    shared: &Shared,
    node: &str,
    address: IpAddr,
    stop: &CancellationToken,
) -> anyhow::Result<Readiness> {
    let registry = prometheus::Registry::new();
    let pool = Pool::new(shared.certs.clone(), PoolConfig::default());
    // In namespaces, the ztunnel captures each pod's traffic inside the pod's namespace.
    let capture = match &shared.island {
        Some(island) => {
            let dir = island
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dir()
                .to_path_buf();
            Capture::NetnsDir(dir)
        }
        None => Capture::Loopback,
    };
    let ztunnel = Ztunnel::new(
        ZtunnelSettings {
            idle_timeout: shared.tuning.ztunnel_idle_timeout,
            capture,
            ..ZtunnelSettings::new(node)
        },
        shared.store.clone(),
        shared.certs.clone(),
        pool,
        &registry,
    )?;
    let readiness = ztunnel.readiness();
    let what = format!("ztunnel of node {node}");
    crate::program::serve_status(None, address, &registry, &readiness, &what, stop).await?;
    tokio::spawn(ztunnel.run(stop.clone()));
    Ok(readiness)
}

async fn start_waypoint(
    shared: &Shared,
    waypoint: &ObjectRef,
    pod: &str,
    address: IpAddr,
    identity: &Identity,
    stop: &CancellationToken,
) -> anyhow::Result<Readiness> {
    // Waypoint pods live in the waypoint's namespace.
    let netns = shared.pod_netns(&format!("{}.{pod}", waypoint.namespace))?;
    let settings = WaypointSettings {
        waypoint: waypoint.clone(),
        address,
        hbone_port: mesh_core::ports::HBONE,
        identity: identity.clone(),
        header_limits: waypoint::HeaderLimits::default(),
        timeouts: shared.tuning.waypoint_timeouts,
        jwks_tls: None,
        netns: netns.clone(),
    };
    let registry = prometheus::Registry::new();
    let pool = Pool::new(shared.certs.clone(), waypoint::upstream_pool_config());
    let server = WaypointServer::bind(
        settings,
        shared.store.clone(),
        shared.certs.clone(),
        pool,
        &registry,
    )
    .await?;
    let readiness = Readiness::new();
    readiness.set_ready(true);
    let what = format!("waypoint pod {pod}");
    crate::program::serve_status(netns.as_ref(), address, &registry, &readiness, &what, stop)
        .await?;
    info!(waypoint = %waypoint.name, %pod, %address, "waypoint started");
    tokio::spawn(server.run(stop.clone()));
    Ok(readiness)
}

/// The `ip netns` names of `mesh up --netns`'s pods start with this.
pub const NETNS_PREFIX: &str = "mesh-";
/// Where `mesh up --netns` keeps the ztunnels' names for the pods' namespaces.
pub const NETNS_DIR: &str = "/run/mesh/netns";

/// One line per proxy and pod, for `mesh up` to print.
pub fn describe(snapshot: &Snapshot, network: &LocalNetwork) -> Vec<String> {
    let mut lines = Vec::new();
    for node in snapshot.nodes() {
        lines.push(format!(
            "node {} (ztunnel admin {}:{METRICS_PORT})",
            node.name, node.address
        ));
        for pod in ztunnel::local_pods(snapshot, &node.name) {
            lines.push(match network {
                LocalNetwork::Loopback => format!(
                    "  pod {}/{} {} (HBONE {}:15008, SOCKS5 {}:15080)",
                    pod.namespace, pod.name, pod.ip, pod.ip, pod.ip
                ),
                LocalNetwork::Netns { prefix, .. } => format!(
                    "  pod {}/{} {} (ip netns exec {prefix}{}.{} <command>)",
                    pod.namespace, pod.name, pod.ip, pod.namespace, pod.name
                ),
            });
        }
    }
    for waypoint in snapshot.waypoints() {
        for pod in &waypoint.pods {
            lines.push(format!(
                "waypoint {}/{} pod {} at {}:15008",
                waypoint.namespace, waypoint.name, pod.name, pod.ip
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Snapshot {
        mesh_config::compile(vec![(
            "demo.yaml".into(),
            crate::demo::DEMO_YAML.to_string(),
        )])
        .expect("demo compiles")
    }

    #[test]
    fn the_namespaces_demo_is_the_demo_at_island_addresses() {
        let netns = mesh_config::compile(vec![(
            "demo-netns.yaml".into(),
            include_str!("../../examples/demo-netns.yaml").to_string(),
        )])
        .expect("demo-netns compiles");
        let shape = |s: &Snapshot| -> Vec<String> {
            let pods = s
                .workloads()
                .map(|w| format!("{}/{} {} {:?}", w.namespace, w.name, w.node, w.labels));
            let services = s
                .services()
                .map(|v| format!("{}/{} {:?}", v.namespace, v.name, v.ports));
            pods.chain(services).collect()
        };
        assert_eq!(shape(&netns), shape(&demo()));
        let pods = island_pods(&netns).expect("IPv4 pods");
        assert_eq!(
            island_network(&pods).expect("one /16").to_string(),
            "10.244.0.0/16"
        );
        let outside = [
            pods[0].clone(),
            IslandPod {
                name: "default.far".into(),
                ip: "10.245.0.9".parse().expect("ip"),
            },
        ];
        let error = island_network(&outside)
            .expect_err("not one /16")
            .to_string();
        assert!(
            error.contains("default.far") && error.contains("10.245.0.9"),
            "{error}"
        );
    }

    #[test]
    fn demo_components() {
        let components = desired_components(&demo());
        let count = |f: fn(&Component) -> bool| components.iter().filter(|c| f(c)).count();
        assert_eq!(count(|c| matches!(c, Component::Ztunnel { .. })), 2);
        assert_eq!(count(|c| matches!(c, Component::Waypoint { .. })), 1);
        // productpage, ratings, reviews-v1 and reviews-v2 (two ports each) opt in; sleep and
        // the waypoint do not.
        assert_eq!(count(|c| matches!(c, Component::Echo { .. })), 6);
    }

    fn demo_with_keepalive(value: &str) -> Snapshot {
        let yaml = crate::demo::DEMO_YAML.replacen(
            "\n    mesh.dev/echo: \"true\"",
            &format!("\n    mesh.dev/echo: \"true\"\n    {ECHO_KEEPALIVE_ANNOTATION}: \"{value}\""),
            1,
        );
        mesh_config::compile(vec![("demo.yaml".into(), yaml)]).expect("compiles")
    }

    #[test]
    fn echo_apps_take_a_keepalive_timeout_from_their_pod() {
        let snapshot = demo_with_keepalive("5ms");
        check_runnable(&snapshot).expect("runnable");
        let timeouts: Vec<Option<Duration>> = desired_components(&snapshot)
            .into_iter()
            .filter_map(|c| match c {
                Component::Echo {
                    keepalive_timeout, ..
                } => Some(keepalive_timeout),
                _ => None,
            })
            .collect();
        assert_eq!(timeouts.len(), 6);
        let five = Some(Duration::from_millis(5));
        assert_eq!(timeouts.iter().filter(|t| **t == five).count(), 1);
        for bad in ["soon", "0s"] {
            let error = check_runnable(&demo_with_keepalive(bad)).expect_err(bad);
            let text = error.to_string();
            assert!(
                text.contains(ECHO_KEEPALIVE_ANNOTATION) && text.contains(bad),
                "{text}"
            );
        }
    }
}
