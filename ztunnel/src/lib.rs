//! ztunnel: the per-node L4 proxy of the ambient mesh (loopback mode).
//!
//! For every pod on its node it listens on `podIP:15008` (inbound HBONE, delivered to the app on
//! `podIP:port`) and `podIP:15080` (SOCKS5: the pod's clients enter the mesh here; the listener
//! address tells which pod is the source). Listeners follow the config snapshot: pods that appear
//! get listeners, pods that disappear lose them.

pub mod authz;
mod balance;
pub mod dial;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod socks5;
mod socks_entry;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_config::{Snapshot, Store, Workload};
use mesh_hbone::{CertificateProvider, HboneError, Identity, Pool};
use mesh_runtime::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::metrics::Metrics;

/// How soon pods that could not start are tried again.
const RETRY_START: Duration = Duration::from_secs(1);

/// Static settings of one node's ztunnel.
#[derive(Clone, Debug)]
pub struct ZtunnelSettings {
    pub node: String,
    pub hbone_port: u16,
    pub socks5_port: u16,
    /// How long a SOCKS5 client may take to name its destination (default 10 s).
    pub socks5_handshake_timeout: std::time::Duration,
    /// A connection with no byte either way for this long is closed, flag `SI` (default 1 h,
    /// Envoy's TCP proxy `idle_timeout`).
    pub idle_timeout: std::time::Duration,
}

impl ZtunnelSettings {
    pub fn new(node: impl Into<String>) -> Self {
        ZtunnelSettings {
            node: node.into(),
            hbone_port: mesh_core::ports::HBONE,
            socks5_port: mesh_core::ports::SOCKS5,
            socks5_handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(3600),
        }
    }
}

/// What every connection handler of one ztunnel shares.
pub(crate) struct NodeContext {
    pub(crate) store: Arc<Store>,
    pub(crate) pool: Pool,
    pub(crate) certs: Arc<dyn CertificateProvider>,
    pub(crate) metrics: Metrics,
    pub(crate) socks5_handshake_timeout: std::time::Duration,
    pub(crate) idle_timeout: std::time::Duration,
    /// Connection-level balancing over Service endpoints (DestinationRule).
    pub(crate) balancer: balance::NodeBalancer,
}

pub struct Ztunnel {
    settings: ZtunnelSettings,
    ctx: Arc<NodeContext>,
    readiness: Readiness,
}

impl Ztunnel {
    pub fn new(
        settings: ZtunnelSettings,
        store: Arc<Store>,
        certs: Arc<dyn CertificateProvider>,
        pool: Pool,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(Ztunnel {
            ctx: Arc::new(NodeContext {
                store,
                pool,
                certs,
                metrics: Metrics::new(registry)?,
                socks5_handshake_timeout: settings.socks5_handshake_timeout,
                idle_timeout: settings.idle_timeout,
                balancer: Default::default(),
            }),
            settings,
            readiness: Readiness::new(),
        })
    }

    /// Ready once every local pod's listeners are bound.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs until `shutdown`, reconciling pod listeners with each snapshot.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut versions = self.ctx.store.subscribe();
        let mut running: HashMap<(IpAddr, Identity), CancellationToken> = HashMap::new();
        let sweeping = tokio::spawn(sweep(self.ctx.clone(), shutdown.clone()));
        loop {
            let snapshot = self.ctx.store.load();
            let ok = self.reconcile(&snapshot, &mut running, &shutdown).await;
            self.readiness.set_ready(ok);
            // A pod that could not start (no certificate yet, its address still held) is
            // tried again, without waiting for the config to change.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = versions.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(RETRY_START), if !ok => {}
            }
        }
        sweeping.abort();
        for token in running.values() {
            token.cancel();
        }
    }

    async fn reconcile(
        &self,
        snapshot: &Snapshot,
        running: &mut HashMap<(IpAddr, Identity), CancellationToken>,
        shutdown: &CancellationToken,
    ) -> bool {
        let desired: HashMap<(IpAddr, Identity), Arc<Workload>> =
            local_pods(snapshot, &self.settings.node)
                .map(|w| ((w.ip, w.identity.clone()), w.clone()))
                .collect();
        running.retain(|key, token| {
            let keep = desired.contains_key(key);
            if !keep {
                info!(node = %self.settings.node, pod.ip = %key.0, "pod left this node: closing its listeners");
                token.cancel();
            }
            keep
        });
        let mut all_bound = true;
        for (key, pod) in desired {
            if running.contains_key(&key) {
                continue;
            }
            let token = shutdown.child_token();
            match self.start_pod(pod.clone(), token.clone()).await {
                Ok(()) => {
                    running.insert(key, token);
                }
                Err(e) => {
                    all_bound = false;
                    error!(node = %self.settings.node, pod = %pod.name, error = %e, "cannot start pod listeners");
                }
            }
        }
        all_bound
    }

    async fn start_pod(
        &self,
        pod: Arc<Workload>,
        token: CancellationToken,
    ) -> Result<(), StartError> {
        // The pod's certificate first (fetched from the CA if that is where they come from).
        self.ctx.certs.prepare(&pod.identity).await?;
        let tls = mesh_hbone::server_config(self.ctx.certs.clone(), pod.identity.clone())?;
        let hbone_addr = SocketAddr::new(pod.ip, self.settings.hbone_port);
        let socks_addr = SocketAddr::new(pod.ip, self.settings.socks5_port);
        let hbone = TcpListener::bind(hbone_addr)
            .await
            .map_err(|e| StartError::Bind(hbone_addr, e))?;
        let socks = TcpListener::bind(socks_addr)
            .await
            .map_err(|e| StartError::Bind(socks_addr, e))?;
        debug!(pod = %pod.name, %hbone_addr, %socks_addr, "pod listeners bound");
        let ctx = self.ctx.clone();
        let inbound_pod = pod.clone();
        let handler = move |connect| inbound::handle(ctx.clone(), inbound_pod.clone(), connect);
        tokio::spawn(mesh_hbone::Server::new(tls).serve(hbone, handler, token.clone()));
        tokio::spawn(socks_entry::serve(self.ctx.clone(), pod.ip, socks, token));
        Ok(())
    }
}

/// Pods on `node` that ztunnel serves (waypoint pods run their own HBONE listener).
pub fn local_pods<'a>(
    snapshot: &'a Snapshot,
    node: &'a str,
) -> impl Iterator<Item = &'a Arc<Workload>> {
    snapshot
        .workloads_on_node(node)
        .filter(move |w| snapshot.waypoint_by_ip(w.ip).is_none())
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("certificate: {0}")]
    Certificate(#[from] mesh_hbone::CertError),
    #[error("TLS: {0}")]
    Tls(#[from] HboneError),
    #[error("bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Forgets, every 30 s, balancing state no connection needs any more.
async fn sweep(ctx: Arc<NodeContext>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = every.tick() => ctx.balancer.forget_idle(),
            () = shutdown.cancelled() => return,
        }
    }
}
