//! ztunnel: the per-node L4 proxy of the ambient mesh.
//!
//! For every pod on its node it listens for inbound HBONE on 15008 (delivered to the app on
//! `podIP:port`), and takes the pod's outgoing connections into the mesh. In loopback mode
//! (the default) the listeners are on the pod's own loopback address, and its clients enter
//! through SOCKS5 on `podIP:15080` (the listener address tells which pod is the source). With
//! capture (`capture`), the listeners are opened inside the pod's network namespace, whose
//! redirect rules send its outgoing TCP to 15001 and its incoming plaintext to 15006.
//! Listeners follow the config snapshot: pods that appear get listeners, pods that disappear
//! lose them.

mod accept;
pub mod authz;
mod balance;
pub mod capture;
pub mod inbound;
mod inbound_plaintext;
pub mod metrics;
pub mod outbound;
mod outbound_conn;
mod phases;
pub mod pod_network;
pub mod socks5;
mod socks_entry;
mod start_failures;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_config::{Snapshot, Store, Workload};
use mesh_hbone::{CertificateProvider, HboneError, Identity, Pool};
use mesh_runtime::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::capture::zds::ZdsPods;
use crate::capture::{Capture, rules::CapturePorts};
use crate::metrics::Metrics;
use crate::pod_network::PodNetwork;
use crate::start_failures::StartFailures;

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
    /// How local pods' traffic reaches this ztunnel (default: loopback, no capture).
    pub capture: Capture,
}

impl ZtunnelSettings {
    pub fn new(node: impl Into<String>) -> Self {
        ZtunnelSettings {
            node: node.into(),
            hbone_port: mesh_core::ports::HBONE,
            socks5_port: mesh_core::ports::SOCKS5,
            socks5_handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(3600),
            capture: Capture::Loopback,
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
    /// Pods the CNI node agent handed over (`Capture::Zds`).
    zds: Option<ZdsPods>,
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
            zds: matches!(settings.capture, Capture::Zds(_)).then(ZdsPods::default),
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
        let mut running: HashMap<PodKey, CancellationToken> = HashMap::new();
        let mut failing = StartFailures::default();
        let sweeping = tokio::spawn(sweep(self.ctx.clone(), shutdown.clone()));
        let mut handed_over = match (&self.settings.capture, &self.zds) {
            (Capture::Zds(path), Some(pods)) => {
                tokio::spawn(capture::zds::run(
                    path.clone(),
                    pods.clone(),
                    shutdown.clone(),
                ));
                Some(pods.subscribe())
            }
            _ => None,
        };
        loop {
            let snapshot = self.ctx.store.load();
            let ok = (self.reconcile(&snapshot, &mut running, &mut failing, &shutdown)).await;
            let synced = self.zds.as_ref().is_none_or(ZdsPods::synced);
            self.readiness.set_ready(ok && synced);
            // A pod that could not start (no certificate yet, its address still held) is
            // tried again, without waiting for the config to change.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = versions.changed() => if changed.is_err() { break },
                changed = async { handed_over.as_mut()?.changed().await.ok() }, if handed_over.is_some() => {
                    if changed.is_none() { break }
                }
                () = tokio::time::sleep(RETRY_START), if !ok => {}
            }
        }
        sweeping.abort();
        for (key, token) in running {
            token.cancel();
            self.release(key.2).await;
        }
    }

    async fn reconcile(
        &self,
        snapshot: &Snapshot,
        running: &mut HashMap<PodKey, CancellationToken>,
        failing: &mut StartFailures<IpAddr>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut all_bound = true;
        let mut desired: HashMap<PodKey, Arc<Workload>> = HashMap::new();
        let node = &self.settings.node;
        let mut local = HashSet::new();
        for pod in local_pods(snapshot, node) {
            local.insert(pod.ip);
            match self.network_of(pod) {
                Ok(Some(network)) => {
                    desired.insert((pod.ip, pod.identity.clone(), network), pod.clone());
                }
                // Not handed over by the CNI node agent (yet): not captured, not served.
                Ok(None) => {}
                Err(e) => {
                    all_bound = false;
                    let error = e.to_string();
                    if let Some(line) = failing.failed(pod.ip, &error, Instant::now()) {
                        error!(%node, pod = %pod.name, %error, tries = line.tries, failing_s = line.failing_for.as_secs(), "cannot find the pod's network namespace");
                    }
                }
            }
        }
        // A pod gone from this node is no longer failing.
        failing.retain(|ip| local.contains(ip));
        let mut left = Vec::new();
        running.retain(|key, token| {
            let keep = desired.contains_key(key);
            if !keep {
                info!(node = %self.settings.node, pod.ip = %key.0, "pod left this node: closing its listeners");
                token.cancel();
                left.push(key.2.clone());
            }
            keep
        });
        for network in left {
            self.release(network).await;
        }
        for (key, pod) in desired {
            if running.contains_key(&key) {
                continue;
            }
            let token = shutdown.child_token();
            match self
                .start_pod(pod.clone(), key.2.clone(), token.clone())
                .await
            {
                Ok(()) => {
                    if let Some(failed_for) = failing.succeeded(&key.0, Instant::now()) {
                        info!(%node, pod = %pod.name, failed_s = failed_for.as_secs(), "pod listeners started");
                    }
                    running.insert(key, token);
                }
                Err(e) => {
                    token.cancel();
                    all_bound = false;
                    let error = e.to_string();
                    if let Some(line) = failing.failed(key.0, &error, Instant::now()) {
                        error!(%node, pod = %pod.name, %error, tries = line.tries, failing_s = line.failing_for.as_secs(), "cannot start pod listeners");
                    }
                }
            }
        }
        all_bound
    }

    /// Where `pod`'s sockets live under this ztunnel's capture mode; `None` for a pod this
    /// ztunnel was not given.
    fn network_of(&self, pod: &Workload) -> Result<Option<PodNetwork>, mesh_runtime::NetnsError> {
        Ok(Some(match &self.settings.capture {
            Capture::Loopback => PodNetwork::Loopback,
            Capture::NetnsDir(dir) => PodNetwork::InPod(capture::open_pod_netns(dir, pod)?),
            Capture::Zds(_) => {
                let handed_over = self
                    .zds
                    .as_ref()
                    .and_then(|z| z.netns_of(&pod.namespace, &pod.name));
                match handed_over {
                    Some(netns) => PodNetwork::InPod(netns),
                    None => return Ok(None),
                }
            }
        }))
    }

    /// Stops capturing a pod that left, when this ztunnel set it up: its redirects go, its
    /// open connections drain (`capture::rules::iptables_released`).
    async fn release(&self, network: PodNetwork) {
        if let (Capture::NetnsDir(_), PodNetwork::InPod(netns)) = (&self.settings.capture, network)
        {
            let name = netns.name().to_string();
            if let Err(e) = capture::remove(netns).await {
                // The namespace may be gone with its pod, rules and all.
                debug!(netns = %name, error = %e, "capture redirects not removed");
            }
        }
    }

    async fn start_pod(
        &self,
        pod: Arc<Workload>,
        network: PodNetwork,
        token: CancellationToken,
    ) -> Result<(), StartError> {
        // The pod's certificate first (fetched from the CA if that is where they come from).
        self.ctx.certs.prepare(&pod.identity).await?;
        let tls = mesh_hbone::server_config(self.ctx.certs.clone(), pod.identity.clone())?;
        let bind = |addr: SocketAddr| network.listen(addr).map_err(|e| StartError::Bind(addr, e));
        let (hbone, socks, captured) = match &network {
            PodNetwork::Loopback => {
                let hbone = bind(SocketAddr::new(pod.ip, self.settings.hbone_port))?;
                let socks = bind(SocketAddr::new(pod.ip, self.settings.socks5_port))?;
                (hbone, socks, None)
            }
            PodNetwork::InPod(netns) => {
                let ports = self.capture_ports();
                if matches!(self.settings.capture, Capture::NetnsDir(_)) {
                    capture::install(netns.clone(), ports).await?;
                }
                // Inside the pod, every address is the pod's: listen on all of them.
                let any = std::net::Ipv4Addr::UNSPECIFIED.into();
                let localhost = std::net::Ipv4Addr::LOCALHOST.into();
                let hbone = bind(SocketAddr::new(any, ports.inbound_hbone))?;
                let socks = bind(SocketAddr::new(localhost, self.settings.socks5_port))?;
                let outbound = bind(SocketAddr::new(any, ports.outbound))?;
                let plaintext = bind(SocketAddr::new(any, ports.inbound_plaintext))?;
                (hbone, socks, Some((outbound, plaintext)))
            }
        };
        debug!(pod = %pod.name, captured = captured.is_some(), "pod listeners bound");
        self.serve_hbone(&pod, &network, mesh_hbone::Server::new(tls), hbone, &token);
        let pod_ip = pod.ip;
        if let Some((outbound, plaintext)) = captured {
            let (ctx, net) = (self.ctx.clone(), network.clone());
            tokio::spawn(accept::serve(
                outbound,
                "outbound",
                token.clone(),
                move |s, c| capture::outbound::connection(ctx.clone(), net.clone(), pod_ip, s, c),
            ));
            let (ctx, net, pod) = (self.ctx.clone(), network.clone(), pod.clone());
            tokio::spawn(accept::serve(
                plaintext,
                "inbound_plaintext",
                token.clone(),
                move |s, c| {
                    inbound_plaintext::connection(ctx.clone(), pod.clone(), net.clone(), s, c)
                },
            ));
        }
        let ctx = self.ctx.clone();
        tokio::spawn(accept::serve(socks, "socks5", token, move |s, c| {
            socks_entry::outbound_connection(ctx.clone(), network.clone(), pod_ip, s, c)
        }));
        Ok(())
    }

    fn serve_hbone(
        &self,
        pod: &Arc<Workload>,
        network: &PodNetwork,
        server: mesh_hbone::Server,
        listener: TcpListener,
        token: &CancellationToken,
    ) {
        let (ctx, pod, network) = (self.ctx.clone(), pod.clone(), network.clone());
        let handler =
            move |connect| inbound::handle(ctx.clone(), pod.clone(), network.clone(), connect);
        tokio::spawn(server.serve(listener, handler, token.clone()));
    }

    fn capture_ports(&self) -> CapturePorts {
        CapturePorts {
            inbound_hbone: self.settings.hbone_port,
            ..CapturePorts::default()
        }
    }
}

/// What identifies a running pod: a new address, identity or namespace starts it anew.
type PodKey = (IpAddr, Identity, PodNetwork);

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
    #[error("capture rules: {0}")]
    Capture(#[from] capture::InstallError),
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
