//! A whole mesh in one process, on loopback: one ztunnel per `Node`, one waypoint per waypoint
//! pod, and an echo app for every pod that opts in with `mesh.dev/echo: "true"`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use loadtest::echo::EchoServer;
use mesh_config::{FileSource, ObjectRef, Snapshot, Store};
use mesh_hbone::{CertificateProvider, Identity, LocalCa, Pool, PoolConfig};
use mesh_runtime::{AdminServer, CancellationToken, Readiness};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::info;
use waypoint::{WaypointServer, WaypointSettings};
use ztunnel::{Ztunnel, ZtunnelSettings};

/// Pod annotation that asks the local runner for an echo app on each container port.
pub const ECHO_ANNOTATION: &str = "mesh.dev/echo";
/// Metrics port (Istio's).
pub const METRICS_PORT: u16 = 15020;
/// Readiness port (Istio's).
pub const READINESS_PORT: u16 = 15021;

/// A running local mesh. Dropping it does not stop it: call [`LocalMesh::stop`].
pub struct LocalMesh {
    pub store: Arc<Store>,
    pub ca: Arc<LocalCa>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    readiness: Vec<(String, Readiness)>,
    _runtime_dir: tempfile::TempDir,
}

impl LocalMesh {
    /// Loads `path` (file or directory), starts everything, and hot-reloads on changes.
    pub async fn start_from_path(path: &Path) -> anyhow::Result<Self> {
        let snapshot = mesh_config::load_path(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut mesh = Self::start(snapshot).await?;
        let source = FileSource::new(path.to_path_buf(), mesh.store.clone());
        mesh.tasks.spawn(source.run(mesh.shutdown.child_token()));
        Ok(mesh)
    }

    /// Starts everything the snapshot describes.
    pub async fn start(snapshot: Snapshot) -> anyhow::Result<Self> {
        for warning in snapshot.warnings() {
            tracing::warn!("{warning}");
        }
        let ca = Arc::new(LocalCa::new(snapshot.trust_domain()).context("creating the mesh CA")?);
        let store = Store::new(snapshot);
        let runtime_dir = tempfile::Builder::new()
            .prefix("mesh-")
            .tempdir()
            .context("runtime dir")?;
        let mut mesh = LocalMesh {
            store: store.clone(),
            ca: ca.clone(),
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            readiness: Vec::new(),
            _runtime_dir: runtime_dir,
        };
        let snapshot = store.load();
        let certs: Arc<dyn CertificateProvider> = ca;
        mesh.start_echo_apps(&snapshot).await?;
        mesh.start_ztunnels(&snapshot, &certs).await?;
        let runtime_dir = mesh._runtime_dir.path().to_path_buf();
        mesh.start_waypoints(&snapshot, &certs, &runtime_dir)
            .await?;
        Ok(mesh)
    }

    async fn start_echo_apps(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        for pod in snapshot.workloads() {
            if pod.annotations.get(ECHO_ANNOTATION).map(String::as_str) != Some("true") {
                continue;
            }
            if pod.container_ports.is_empty() {
                bail!(
                    "pod {}/{} asks for an echo app but declares no containerPorts",
                    pod.namespace,
                    pod.name
                );
            }
            for port in &pod.container_ports {
                let addr = SocketAddr::new(pod.ip, port.port);
                let listener = bind(
                    addr,
                    &format!("echo app of pod {}/{}", pod.namespace, pod.name),
                )
                .await?;
                let server = EchoServer::new(pod.name.clone());
                self.tasks
                    .spawn(server.serve(listener, self.shutdown.child_token()));
            }
        }
        Ok(())
    }

    async fn start_ztunnels(
        &mut self,
        snapshot: &Snapshot,
        certs: &Arc<dyn CertificateProvider>,
    ) -> anyhow::Result<()> {
        for node in snapshot.nodes() {
            let registry = prometheus::Registry::new();
            let pool = Pool::new(certs.clone(), PoolConfig::default());
            let ztunnel = Ztunnel::new(
                ZtunnelSettings::new(&node.name),
                self.store.clone(),
                certs.clone(),
                pool,
                &registry,
            )?;
            let readiness = ztunnel.readiness();
            self.serve_admin(
                node.address,
                registry,
                readiness.clone(),
                &format!("ztunnel of node {}", node.name),
            )
            .await?;
            self.readiness
                .push((format!("ztunnel {}", node.name), readiness));
            self.tasks.spawn(ztunnel.run(self.shutdown.child_token()));
        }
        Ok(())
    }

    async fn start_waypoints(
        &mut self,
        snapshot: &Snapshot,
        certs: &Arc<dyn CertificateProvider>,
        runtime_dir: &Path,
    ) -> anyhow::Result<()> {
        for waypoint in snapshot.waypoints() {
            for pod in &waypoint.pods {
                let identity: Identity =
                    pod.identity.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                let settings = WaypointSettings {
                    waypoint: ObjectRef {
                        namespace: waypoint.namespace.clone(),
                        name: waypoint.name.clone(),
                    },
                    address: pod.ip,
                    hbone_port: ztunnel::outbound::HBONE_PORT,
                    identity,
                    runtime_dir: runtime_dir.join(format!("waypoint-{}", pod.name)),
                };
                let registry = prometheus::Registry::new();
                let pool = Pool::new(certs.clone(), PoolConfig::default());
                let server = WaypointServer::bind(
                    settings,
                    self.store.clone(),
                    certs.clone(),
                    pool,
                    &registry,
                )
                .await?;
                let readiness = Readiness::new();
                readiness.set_ready(true);
                self.serve_admin(
                    pod.ip,
                    registry,
                    readiness.clone(),
                    &format!("waypoint pod {}", pod.name),
                )
                .await?;
                self.readiness
                    .push((format!("waypoint {}", pod.name), readiness));
                info!(waypoint = %waypoint.name, pod = %pod.name, addr = %pod.ip, "waypoint started");
                self.tasks.spawn(server.run(self.shutdown.child_token()));
            }
        }
        Ok(())
    }

    async fn serve_admin(
        &mut self,
        ip: IpAddr,
        registry: prometheus::Registry,
        readiness: Readiness,
        what: &str,
    ) -> anyhow::Result<()> {
        for port in [METRICS_PORT, READINESS_PORT] {
            let listener = bind(SocketAddr::new(ip, port), &format!("admin of {what}")).await?;
            let admin = AdminServer::new(registry.clone(), readiness.clone());
            self.tasks
                .spawn(admin.serve(listener, self.shutdown.child_token()));
        }
        Ok(())
    }

    /// Waits until every proxy reports ready, or fails naming the ones that are not.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting: Vec<&str> = self
                .readiness
                .iter()
                .filter(|(_, r)| !r.is_ready())
                .map(|(name, _)| name.as_str())
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

    /// A token that stops the mesh when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
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

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: cannot bind {addr}"))
}

/// One line per proxy and pod, for `mesh up` to print.
pub fn describe(snapshot: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for node in snapshot.nodes() {
        lines.push(format!(
            "node {} (ztunnel admin {}:{METRICS_PORT})",
            node.name, node.address
        ));
        for pod in ztunnel::local_pods(snapshot, &node.name) {
            lines.push(format!(
                "  pod {}/{} {} (HBONE {}:15008, SOCKS5 {}:15080)",
                pod.namespace, pod.name, pod.ip, pod.ip, pod.ip
            ));
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
