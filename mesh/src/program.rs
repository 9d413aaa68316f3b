//! What a stand-alone proxy process (the `waypoint` and `ztunnel` programs) has around its
//! proxy: flags and environment variables named as Istio names them, the config (from files,
//! hot-reloaded, or from the Kubernetes API), certificates, the admin and status ports, and
//! the drain on SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use mesh_config::{FileSource, Snapshot, Store};
use mesh_hbone::{
    CertificateProvider, FileCertificates, Identity, IstioCa, IstioCaConfig, LocalCa,
};
use mesh_runtime::{
    AdminServer, CancellationToken, ConnectionLimit, Netns, Readiness, ShutdownSignals,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Where Prometheus scrapes a proxy (Istio's merged metrics port).
pub const METRICS_PORT: u16 = 15020;
/// Where the kubelet asks a proxy whether it is ready (`/healthz/ready`).
pub const READINESS_PORT: u16 = 15021;

/// Flags both programs take.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The manifests: a file or a directory of `*.yaml` (hot-reloaded). Without it, the
    /// config is read from the Kubernetes API (in-cluster, or `KUBECONFIG`).
    #[arg(long, env = "MESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read namespaced kinds from this namespace only (Kubernetes API).
    #[arg(long, env = "WATCH_NAMESPACE", conflicts_with = "config")]
    pub watch_namespace: Option<String>,
    /// The mesh's trust domain.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Sign workload certificates here, under the CA in this directory (`ca-cert.pem`,
    /// `ca-key.pem`, as `mesh ca init` writes them): for development and tests.
    #[arg(long, env = "CA_DIR", conflicts_with = "ca_address")]
    pub ca_dir: Option<PathBuf>,
    /// Istio's CA (istiod), `host:port`: certificates are requested from it.
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// The root the CA's TLS certificate chains to (Istio's `istio-ca-root-cert`).
    #[arg(
        long,
        env = "CA_ROOT_CA",
        default_value = "/var/run/secrets/istio/root-cert.pem"
    )]
    pub ca_root: PathBuf,
    /// The projected service-account token (audience `istio-ca`) sent to the CA.
    #[arg(
        long,
        env = "CA_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    pub ca_token_file: PathBuf,
    /// The name the CA's TLS certificate carries, if not the host of `--ca-address`.
    #[arg(long, env = "ALT_CA_HOSTNAME", requires = "ca_address")]
    pub ca_hostname: Option<String>,
    /// Admin server (`/config_dump`, `/metrics`, `/healthz/ready`), local only by default.
    #[arg(long, env = "ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// How long in-flight requests and connections get to finish after SIGTERM before the
    /// process exits (Istio's name; seconds).
    #[arg(long, env = "TERMINATION_DRAIN_DURATION_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
}

impl Common {
    /// Where the config comes from, for messages.
    pub fn config_source(&self) -> String {
        match &self.config {
            Some(path) => path.display().to_string(),
            None => "the Kubernetes API".to_string(),
        }
    }
}

/// The config store, kept current until `shutdown`: from files when `--config` names them,
/// else from the Kubernetes API.
pub async fn config_store(
    common: &Common,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<Store>> {
    let store = match &common.config {
        Some(path) => load_config(path, shutdown)?,
        None => {
            let client = kube::Client::try_default()
                .await
                .context("the Kubernetes API (no --config given)")?;
            let mut source = mesh_kubernetes::KubeSource::new(client);
            if let Some(namespace) = &common.watch_namespace {
                source = source.namespaced(namespace);
            }
            source.start(shutdown.child_token()).await?
        }
    };
    // Workload identities are in the mesh config's trust domain: refuse another rather than
    // fail every handshake later.
    let configured = store.load().trust_domain().to_string();
    anyhow::ensure!(
        common.trust_domain == configured,
        "TRUST_DOMAIN {:?} differs from the mesh config's trustDomain {configured:?} \
         (workload identities are in it): set them alike",
        common.trust_domain
    );
    Ok(store)
}

/// The config at start and its store, with a watcher that keeps the store current until
/// `shutdown`; invalid edits are rejected and logged, the last good config keeps serving.
fn load_config(path: &Path, shutdown: &CancellationToken) -> anyhow::Result<Arc<Store>> {
    let docs = mesh_config::read_path(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let snapshot = mesh_config::compile(docs.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    for warning in snapshot.warnings() {
        tracing::warn!("{warning}");
    }
    let store = Store::new(snapshot);
    FileSource::new(path.to_path_buf(), store.clone())
        .with_initial(docs)
        .spawn(shutdown.child_token())
        .with_context(|| format!("watching {}", path.display()))?;
    Ok(store)
}

/// Certificates from an Istio file-mounted directory (`cert-chain.pem`, `key.pem`,
/// `root-cert.pem`: one identity, reloaded when the files change).
pub fn file_certificates(dir: &Path) -> anyhow::Result<Arc<FileCertificates>> {
    let certs = FileCertificates::new(dir)
        .with_context(|| format!("certificates from {}", dir.display()))?;
    Ok(Arc::new(certs))
}

/// A CA from files that signs for any identity of `trust_domain` (development, tests).
fn local_ca(dir: &Path, trust_domain: &str) -> anyhow::Result<Arc<dyn CertificateProvider>> {
    let ca =
        LocalCa::load(dir, trust_domain).with_context(|| format!("the CA in {}", dir.display()))?;
    Ok(Arc::new(ca))
}

/// A CA that signs any identity: Istio's (`--ca-address`, asking on behalf of others when
/// `impersonate`), or one from files (`--ca-dir`).
pub fn signing_ca(
    common: &Common,
    impersonate: bool,
) -> anyhow::Result<Option<Arc<dyn CertificateProvider>>> {
    match (&common.ca_dir, &common.ca_address) {
        (Some(dir), _) => local_ca(dir, &common.trust_domain).map(Some),
        (None, Some(address)) => istio_ca(common, address, impersonate).map(Some),
        (None, None) => Ok(None),
    }
}

fn istio_ca(
    common: &Common,
    address: &str,
    impersonate: bool,
) -> anyhow::Result<Arc<dyn CertificateProvider>> {
    let pem = std::fs::read(&common.ca_root)
        .with_context(|| format!("the CA's root, {}", common.ca_root.display()))?;
    let roots = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}", common.ca_root.display()))?;
    anyhow::ensure!(
        !roots.is_empty(),
        "{}: no certificate",
        common.ca_root.display()
    );
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let config = IstioCaConfig {
        address: address.to_string(),
        server_name: common
            .ca_hostname
            .clone()
            .unwrap_or_else(|| host.to_string()),
        roots,
        token_file: common.ca_token_file.clone(),
        trust_domain: common.trust_domain.clone(),
        impersonate,
        lifetime: Duration::from_secs(24 * 3600),
    };
    let ca = IstioCa::new(config).with_context(|| format!("the CA at {address}"))?;
    Ok(ca)
}

/// Waits until `id`'s certificate is at hand, trying again with backoff (1 s, doubling, at
/// most 30 s) while the CA cannot give one: the proxy is not ready until then.
pub async fn await_certificate(certs: &Arc<dyn CertificateProvider>, id: &Identity) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match certs.prepare(id).await {
            Ok(()) => return,
            Err(error) => {
                warn!(identity = %id, %error, retry_in = ?backoff, "no certificate yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What `/config_dump` shows: the config version and what it holds.
fn config_dump(store: &Arc<Store>) -> mesh_runtime::ConfigDump {
    let store = store.clone();
    Arc::new(move || {
        let snapshot: Arc<Snapshot> = store.load();
        serde_json::json!({
            "version": snapshot.version(),
            "rejected_updates": store.rejections(),
            "last_rejection": store.last_rejection(),
            "nodes": snapshot.nodes().len(),
            "workloads": snapshot.workloads().count(),
            "services": snapshot.services().count(),
            "waypoints": snapshot.waypoints().count(),
            "warnings": snapshot.warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    })
}

/// Serves the status ports (metrics 15020, readiness 15021) on `ip`.
pub async fn serve_status(
    netns: Option<&Netns>,
    ip: IpAddr,
    registry: &prometheus::Registry,
    readiness: &Readiness,
    what: &str,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for port in [METRICS_PORT, READINESS_PORT] {
        let addr = SocketAddr::new(ip, port);
        let listener = bind_in(netns, addr, &format!("status of {what}")).await?;
        let admin = AdminServer::new(registry.clone(), readiness.clone());
        tokio::spawn(admin.serve(listener, stop.clone()));
    }
    Ok(())
}

/// Serves the admin port, with the config dump.
pub async fn serve_admin(
    common: &Common,
    store: &Arc<Store>,
    registry: &prometheus::Registry,
    readiness: &Readiness,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let listener = bind(common.admin_address, "the admin server").await?;
    let admin =
        AdminServer::new(registry.clone(), readiness.clone()).with_config_dump(config_dump(store));
    tokio::spawn(admin.serve(listener, stop.clone()));
    Ok(())
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    bind_in(None, addr, what).await
}

/// [`bind`] inside `netns` when given (a pod's, in a local mesh in namespaces).
pub async fn bind_in(
    netns: Option<&Netns>,
    addr: SocketAddr,
    what: &str,
) -> anyhow::Result<TcpListener> {
    let bound = mesh_runtime::listen_in(netns, addr);
    let place = netns.map_or_else(String::new, |n| format!(" in {}", n.name()));
    bound.with_context(|| format!("{what}: cannot bind {addr}{place}"))
}

/// Waits for SIGTERM or SIGINT, then drains: not ready any more, `shutdown` cancelled (the
/// proxy stops accepting, sends GOAWAY on its tunnels and `Connection: close` on its
/// keep-alive connections), and up to `grace` for the open connections to finish.
pub async fn run_until_signalled(
    mut signals: ShutdownSignals,
    readiness: Readiness,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let signal = signals.recv().await;
    let open = ConnectionLimit::process().open();
    info!(signal, open, grace = ?grace, "draining");
    readiness.set_ready(false);
    shutdown.cancel();
    let deadline = tokio::time::Instant::now() + grace;
    while ConnectionLimit::process().open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = ConnectionLimit::process().open();
    info!(left, "drained; exiting");
}

/// A program's `main`: runs `run` on a fresh runtime; an error is printed as `<name>: <error>`
/// and exits non-zero.
pub fn main(name: &str, run: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    match runtime().and_then(|runtime| runtime.block_on(run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Process setup both programs share: logs, the open-file limit the connection caps follow,
/// and a multi-threaded runtime.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    mesh_runtime::init_logging_with("info");
    let open_files = mesh_runtime::raise_open_file_limit();
    tracing::debug!(open_files, "open file limit");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}
