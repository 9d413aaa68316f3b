//! The waypoint: an L7 proxy for ambient mesh traffic, built on Pingora.
//!
//! ```text
//! ztunnel ──HBONE──▶ ingress (mesh-hbone server, :15008)
//!                      └─ each CONNECT stream ─▶ TunnelIo ─▶ Pingora HttpProxy (h1 / h2c)
//!                           request_filter: request::plan = check → resolve → select
//!                                             → authenticate → authorize → route
//!                                           upstream::forward over a pooled upstream::client connection
//!                                           ──HBONE(waypoint identity)──▶ endpoint's ztunnel :15008
//! ```
//! The Pingora hooks (`proxy`) are thin: decisions are pure functions (`request::pipeline`,
//! `dispatch`, `route`, `authn`, `authz`, `outcome`), replies are rendered in one place
//! (`reply`), route filters run in `filters`, the upstream half lives in `upstream`, metrics
//! and access logs in `telemetry`. This crate is the only one in the workspace that depends on Pingora.

pub mod authn;
pub mod authz;
pub mod dispatch;
pub mod ext_authz;
pub mod filters;
pub mod ingress;
pub mod outcome;
pub mod proxy;
pub mod reply;
pub mod request;
pub mod route;
pub mod telemetry;
pub mod tunnel_io;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_config::{ObjectRef, Store};
use mesh_hbone::{CertificateProvider, Identity, Pool, PoolConfig};
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::authn::jwks::{Fetcher, RemoteKeys};
use crate::ingress::TunnelHttp;
use crate::proxy::WaypointProxy;
pub use crate::request::HeaderLimits;
use crate::telemetry::Metrics;
use crate::telemetry::report::Reporter;
use crate::telemetry::trace::Tracers;
use crate::tunnel_io::HeadBounds;
use crate::upstream::{ClientConfig, Upstreams};
use mesh_config::health::Health;

/// Static settings of one waypoint instance (one pod of a waypoint `Gateway`).
#[derive(Clone, Debug)]
pub struct WaypointSettings {
    /// The waypoint `Gateway` this instance serves.
    pub waypoint: ObjectRef,
    /// The pod address the HBONE listener binds.
    pub address: IpAddr,
    pub hbone_port: u16,
    /// The waypoint's own identity (the pod's service account).
    pub identity: Identity,
    /// Bounds on request headers (431 over them).
    pub header_limits: HeaderLimits,
    pub timeouts: Timeouts,
    /// How `https` key servers (`jwksUri`) are verified; `None`: against the system's roots.
    pub jwks_tls: Option<Arc<rustls::ClientConfig>>,
    /// The pod's network namespace, when it is not the process's own (a local mesh in
    /// namespaces): the listener is opened and upstream tunnels dialled inside it.
    pub netns: Option<mesh_runtime::Netns>,
}

/// What a request whose caller stopped reading its response makes the waypoint hold, whatever
/// the response's size: the window of its upstream stream (an HBONE tunnel for HTTP/1.1, an
/// HTTP/2 stream for h2c), since the response is read no faster than the caller takes it.
pub const UPSTREAM_STREAM_WINDOW: u32 = 160 << 10;
/// HTTP/2 streams a caller connection may have open at once (Pingora's default, Istio
/// ztunnel's per HBONE connection).
pub const CALLER_MAX_STREAMS: u32 = 100;
/// The most one caller connection can make the waypoint hold: every stream stalled, each
/// holding its upstream window — 16 MiB, as much as an HBONE connection's window.
pub const CALLER_CONNECTION_BUDGET: u64 = CALLER_MAX_STREAMS as u64 * UPSTREAM_STREAM_WINDOW as u64;
const _: () = assert!(CALLER_CONNECTION_BUDGET <= mesh_hbone::http2::CONNECTION_WINDOW as u64);

/// The HBONE pool settings a waypoint dials its upstreams with: each tunnel gets
/// [`UPSTREAM_STREAM_WINDOW`], as many as fit in a connection's window share it.
pub fn upstream_pool_config() -> PoolConfig {
    PoolConfig {
        stream_window: UPSTREAM_STREAM_WINDOW,
        max_streams_per_connection: mesh_hbone::http2::client_max_streams(UPSTREAM_STREAM_WINDOW),
        ..PoolConfig::default()
    }
}

/// How long the waypoint waits on a silent peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A request whose upstream sends and accepts nothing for this long ends with 504 `UT`
    /// (Envoy's `stream_idle_timeout`, 5 min).
    pub stream_idle: Duration,
    /// An HTTP/2 caller connection with no open stream for this long is closed (Envoy's
    /// connection `idle_timeout`, 1 h). HTTP/1.1 callers: Pingora's 60 s per read.
    pub downstream_idle: Duration,
    /// An HTTP/1.1 caller that has started a request's head must finish it within this long,
    /// else its connection is closed (slowloris; 10 s).
    pub request_headers: Duration,
    /// How often a `jwksUri`'s key set is fetched again (Envoy's JWKS `cache_duration`,
    /// 10 min).
    pub jwks_refresh: Duration,
    /// How long spans wait to be exported in a batch.
    pub span_export_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stream_idle: Duration::from_secs(300),
            downstream_idle: Duration::from_secs(3600),
            request_headers: Duration::from_secs(10),
            jwks_refresh: authn::jwks::DEFAULT_REFRESH,
            span_export_delay: telemetry::trace::DEFAULT_EXPORT_DELAY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WaypointError {
    #[error("waypoint {waypoint}: cannot bind {addr}: {source}")]
    Bind {
        waypoint: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("waypoint {waypoint}: TLS setup: {source}")]
    Tls {
        waypoint: String,
        source: mesh_hbone::HboneError,
    },
    #[error("waypoint metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A bound waypoint, ready to run.
pub struct WaypointServer {
    settings: WaypointSettings,
    listener: TcpListener,
    hbone: mesh_hbone::Server,
    upstreams: Upstreams,
    health: Arc<Health>,
    http: Arc<TunnelHttp>,
    store: Arc<Store>,
    jwks: Arc<RemoteKeys>,
    tracers: Arc<Tracers>,
}

impl WaypointServer {
    pub async fn bind(
        settings: WaypointSettings,
        store: Arc<Store>,
        certs: Arc<dyn CertificateProvider>,
        pool: Pool,
        registry: &prometheus::Registry,
    ) -> Result<Self, WaypointError> {
        let name = format!("{}/{}", settings.waypoint.namespace, settings.waypoint.name);
        let addr = SocketAddr::new(settings.address, settings.hbone_port);
        let bind_err = |addr: String| {
            let name = name.clone();
            move |source| WaypointError::Bind {
                waypoint: name,
                addr,
                source,
            }
        };
        let listener = mesh_runtime::listen_in(settings.netns.as_ref(), addr)
            .map_err(bind_err(addr.to_string()))?;
        let health = Arc::new(Health::default());
        let upstreams = Upstreams::new(
            pool,
            settings.identity.clone(),
            settings.address,
            ClientConfig::default(),
        )
        .in_netns(settings.netns.clone());
        let tls =
            mesh_hbone::server_config(certs, settings.identity.clone()).map_err(|source| {
                WaypointError::Tls {
                    waypoint: name.clone(),
                    source,
                }
            })?;
        let jwks = Arc::new(RemoteKeys::default());
        let tracers = Arc::new(Tracers::new(
            settings.waypoint.clone(),
            store.clone(),
            upstreams.clone(),
            settings.timeouts.span_export_delay,
        ));
        let reporter = Reporter::new(
            Metrics::new(registry)?,
            settings.waypoint.clone(),
            settings.identity.to_string(),
        );
        let inner = WaypointProxy {
            tracers: tracers.clone(),
            jwks: jwks.clone(),
            verified_tokens: Default::default(),
            store: store.clone(),
            waypoint: settings.waypoint.clone(),
            upstreams: upstreams.clone(),
            destinations: Default::default(),
            health: health.clone(),
            reporter: reporter.clone(),
            header_limits: settings.header_limits,
            stream_idle_timeout: settings.timeouts.stream_idle,
        };
        let conf = Arc::new(ServerConf::default());
        let mut proxy = pingora_proxy::http_proxy(&conf, inner);
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        options.h2_idle_timeout = Some(settings.timeouts.downstream_idle);
        proxy.server_options = Some(options);
        let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
        h2.max_concurrent_streams(CALLER_MAX_STREAMS);
        proxy.h2_options = Some(h2);
        let head = HeadBounds {
            timeout: settings.timeouts.request_headers,
            max_bytes: settings.header_limits.max_head_bytes(),
        };
        Ok(WaypointServer {
            settings,
            listener,
            hbone: mesh_hbone::Server::new(tls),
            upstreams,
            health,
            http: Arc::new(TunnelHttp {
                proxy: Arc::new(proxy),
                reporter,
                head,
            }),
            store,
            jwks,
            tracers,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let fetcher = Fetcher {
            store: self.store.clone(),
            waypoint: self.settings.waypoint.clone(),
            upstreams: self.upstreams.clone(),
            keys: self.jwks,
            refresh: self.settings.timeouts.jwks_refresh,
            tls: (self.settings.jwks_tls.clone()).unwrap_or_else(authn::jwks::system_roots),
        };
        let fetching = tokio::spawn(fetcher.run(shutdown.clone()));
        let tracers = self.tracers;
        let sweeping = tokio::spawn(sweep(
            self.upstreams,
            self.health,
            tracers.clone(),
            self.store.clone(),
            shutdown.clone(),
        ));
        ingress::serve(
            self.listener,
            self.hbone,
            self.http,
            self.store,
            self.settings.waypoint,
            shutdown,
        )
        .await;
        let _ = sweeping.await;
        let _ = fetching.await;
        tracers.shutdown().await;
    }
}

/// Every 30 s: idle upstream connections closed, idle endpoints' health forgotten, exporters
/// of tracing providers no longer used flushed and stopped.
async fn sweep(
    upstreams: Upstreams,
    health: Arc<Health>,
    tracers: Arc<Tracers>,
    store: Arc<Store>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = every.tick() => {
                upstreams.sweep();
                health.forget_idle();
                tracers.retire_unused(&store.load());
            }
            () = shutdown.cancelled() => return,
        }
    }
}
