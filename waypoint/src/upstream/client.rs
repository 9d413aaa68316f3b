//! HTTP clients to endpoints, over HBONE, pooled per endpoint: the waypoint's upstream
//! connections, with no socket between Pingora and the HBONE stream.
//!
//! An HTTP/1.1 connection serves one request at a time: it is checked out for a request and
//! checked back in once its exchange is complete (hyper's `is_ready`). An HTTP/2 connection
//! is shared by the concurrent requests to its endpoint, at most [`H2_MAX_STREAMS`] at once:
//! as on HBONE, `streams × stream window ≤ connection window`, so requests whose callers
//! stopped reading (each holding its stream's window) can never use up the connection's and
//! stall everyone else's; a full connection gives way to a new shared one. Each connection is
//! one HBONE tunnel (a CONNECT stream on the waypoint's pooled mTLS connection to the
//! endpoint's node).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_hbone::{ConnectRequest, HboneError, Identity, Pool, PoolKey};
use mesh_runtime::Netns;
use tokio::sync::Notify;

use super::protocol::UpstreamProtocol;

/// Most header fields an HTTP/1.1 upstream response may have (hyper's default is 100; an
/// app echoing a caller's 100 headers back needs more).
const MAX_RESPONSE_HEADERS: usize = 256;

/// What one response stream on an upstream HTTP/2 connection may have unread (and a request
/// stream unsent): what a request whose caller stopped reading holds.
pub const H2_STREAM_WINDOW: u32 = crate::UPSTREAM_STREAM_WINDOW;
/// An upstream HTTP/2 connection's window (hyper's default is 5 MiB under 2 MiB streams:
/// three stalled streams stopped the connection).
pub const H2_CONNECTION_WINDOW: u32 = mesh_hbone::http2::CONNECTION_WINDOW;
/// Requests at once on one upstream HTTP/2 connection: as many as fit in its window.
pub const H2_MAX_STREAMS: usize = (H2_CONNECTION_WINDOW / H2_STREAM_WINDOW) as usize;

/// The body of a request sent upstream.
pub type UpstreamBody = BoxBody<Bytes, std::io::Error>;

/// Where one request goes over HBONE: the endpoint, its node's ztunnel, and who that must be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// `:authority` of the HBONE CONNECT: the endpoint's `podIP:targetPort`.
    pub authority: SocketAddr,
    /// The HBONE next hop (the pod's address, port 15008).
    pub hbone_addr: SocketAddr,
    /// The identity the endpoint's side must present.
    pub identity: Identity,
    /// `identity` as a SPIFFE URI (written once, read by metrics).
    pub identity_uri: String,
}

impl Target {
    /// The target for `endpoint`: its pod's ztunnel, presenting the pod's identity.
    pub fn for_endpoint(endpoint: &mesh_config::Endpoint) -> Self {
        let workload = &endpoint.workload;
        Target::new(
            SocketAddr::new(workload.ip, endpoint.port),
            SocketAddr::new(workload.ip, mesh_core::ports::HBONE),
            workload.identity.clone(),
        )
    }

    pub fn new(authority: SocketAddr, hbone_addr: SocketAddr, identity: Identity) -> Self {
        Target {
            authority,
            hbone_addr,
            identity_uri: identity.to_string(),
            identity,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    target: Target,
    protocol: UpstreamProtocol,
}

impl Key {
    fn new(target: &Target, protocol: UpstreamProtocol) -> Self {
        Key {
            target: target.clone(),
            protocol,
        }
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("HBONE connect to {addr} failed: {source}")]
    Hbone {
        addr: SocketAddr,
        source: HboneError,
    },
    #[error("HBONE connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("HTTP handshake inside the tunnel failed: {0}")]
    Handshake(hyper::Error),
    /// The destination has its most connections, all busy, and its most requests waiting.
    #[error("overflow")]
    Overflow,
}

/// Limits of the pool.
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// The HBONE dial (TCP, TLS, HTTP/2, CONNECT), at most.
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections older than this are closed.
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            max_idle_per_endpoint: 1024,
        }
    }
}

/// A destination's settings for its connections (its DestinationRule's `connectionPool`);
/// `None`: the pool's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// A connection serves at most this many requests, then closes (HTTP/1.1) or takes no
    /// new stream (HTTP/2).
    pub max_requests_per_connection: Option<u32>,
    /// Connections open to the destination, across its endpoints (`tcp.maxConnections`).
    pub max_connections: Option<u32>,
    /// Requests waiting for one of them (`http.http1MaxPendingRequests`); more: overflow.
    pub max_pending: Option<u32>,
}

impl PoolSettings {
    pub fn of(pool: &mesh_config::ConnectionPool) -> Self {
        PoolSettings {
            connect_timeout: pool.connect_timeout,
            idle_timeout: pool.idle_timeout,
            max_requests_per_connection: pool.max_requests_per_connection,
            max_connections: pool.max_connections,
            max_pending: pool.max_pending_requests,
        }
    }

    /// Whether a connection that has served `served` requests may take another.
    fn has_room(&self, served: u32) -> bool {
        self.max_requests_per_connection
            .is_none_or(|max| served < max)
    }
}

/// One destination's upstream connections: how many are open, how many requests wait for
/// one, and a wake-up for them when one is freed.
#[derive(Debug, Default)]
pub struct ConnectionSlots {
    open: AtomicU32,
    pending: AtomicU32,
    freed: Notify,
}

impl ConnectionSlots {
    /// A slot for a new connection, unless `max` are open.
    fn take(self: &Arc<Self>, max: Option<u32>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                max.is_none_or(|max| open < max).then_some(open + 1)
            })
            .ok()?;
        Some(Slot(self.clone()))
    }

    /// Counts a request waiting for a connection, unless `max` already wait.
    fn wait(self: &Arc<Self>, max: Option<u32>) -> Option<Waiting> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                max.is_none_or(|max| pending < max).then_some(pending + 1)
            })
            .ok()?;
        Some(Waiting(self.clone()))
    }
}

/// One open connection of a destination, counted until dropped (with the connection's last
/// handle in the pool or a request).
#[derive(Debug)]
pub struct Slot(Arc<ConnectionSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_waiters();
    }
}

/// A request waiting for a connection, counted until dropped.
struct Waiting(Arc<ConnectionSlots>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection checked out for one request.
pub enum Checkout {
    Http1 {
        sender: http1::SendRequest<UpstreamBody>,
        /// Whether it served a request before (a closed reused connection may be retried).
        reused: bool,
        /// Requests it has served, this one included.
        served: u32,
        slot: Slot,
    },
    Http2 {
        sender: http2::SendRequest<UpstreamBody>,
        reused: bool,
        /// Held when this request has the connection to itself (not the shared one).
        slot: Option<Slot>,
        /// Counts this request on the shared connection while it lasts.
        _stream: Option<StreamCount>,
    },
}

/// One request on a shared HTTP/2 connection, counted from checkout until it is done with
/// (its response read, or given up).
pub struct StreamCount(Arc<AtomicUsize>);

impl StreamCount {
    /// Counts one more on `streams`, unless it already has [`H2_MAX_STREAMS`].
    fn take(streams: &Arc<AtomicUsize>) -> Option<Self> {
        let counted = streams.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < H2_MAX_STREAMS).then_some(open + 1)
        });
        counted.ok().map(|_| StreamCount(streams.clone()))
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Checkout {
    /// Waits until the connection can take a request (an HTTP/2 one may be at its stream limit).
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Checkout::Http1 { sender, .. } => sender.ready().await,
            Checkout::Http2 { sender, .. } => sender.ready().await,
        }
    }

    pub fn reused(&self) -> bool {
        match self {
            Checkout::Http1 { reused, .. } | Checkout::Http2 { reused, .. } => *reused,
        }
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
    served: u32,
    idle_timeout: Duration,
    slot: Slot,
}

/// The HTTP/2 connection an endpoint's requests share.
struct Shared {
    sender: http2::SendRequest<UpstreamBody>,
    /// Requests on it now (see [`StreamCount`]).
    streams: Arc<AtomicUsize>,
    served: u32,
    last_used: Instant,
    idle_timeout: Duration,
    /// Freed when the connection leaves the pool.
    _slot: Slot,
}

#[derive(Default)]
struct Connections {
    idle: HashMap<Key, Vec<Idle>>,
    shared: HashMap<Key, Shared>,
}

/// The waypoint's upstream connections.
#[derive(Clone)]
pub struct Upstreams {
    hbone: Pool,
    identity: Identity,
    source_ip: IpAddr,
    /// The waypoint pod's network namespace, when it is not the process's own.
    source_netns: Option<Netns>,
    config: ClientConfig,
    connections: Arc<Mutex<Connections>>,
}

impl Upstreams {
    /// Clients dialling HBONE through `hbone` as `identity`, from `source_ip`.
    pub fn new(hbone: Pool, identity: Identity, source_ip: IpAddr, config: ClientConfig) -> Self {
        Upstreams {
            hbone,
            identity,
            source_ip,
            source_netns: None,
            config,
            connections: Arc::default(),
        }
    }

    /// Dials from inside `netns` (the waypoint pod's) when given.
    pub fn in_netns(mut self, netns: Option<Netns>) -> Self {
        self.source_netns = netns;
        self
    }

    /// A connection to `target` speaking `protocol`: an idle or shared one (unless `fresh`),
    /// else a new one, within the destination's `slots`. At its most connections, an idle
    /// connection to another of its endpoints is closed to make room; with every one busy,
    /// the request waits for one (as a pending request, within `max_pending`), or overflows.
    pub async fn checkout(
        &self,
        target: &Target,
        protocol: UpstreamProtocol,
        settings: PoolSettings,
        slots: &Arc<ConnectionSlots>,
        fresh: bool,
    ) -> Result<Checkout, ConnectError> {
        let key = Key::new(target, protocol);
        let timeout = settings
            .connect_timeout
            .unwrap_or(self.config.connect_timeout);
        let mut waiting = None;
        loop {
            let freed = slots.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !fresh && let Some(found) = self.pooled(&key, settings) {
                return Ok(found);
            }
            if let Some(slot) = slots.take(settings.max_connections) {
                return self
                    .connect(target, protocol, settings, slot, timeout)
                    .await;
            }
            if self.close_idle_of(slots) {
                continue;
            }
            if waiting.is_none() {
                waiting = Some(
                    slots
                        .wait(settings.max_pending)
                        .ok_or(ConnectError::Overflow)?,
                );
            }
            // Waits no longer than a connection may take to be made.
            if tokio::time::timeout(timeout, freed).await.is_err() {
                return Err(ConnectError::Overflow);
            }
        }
    }

    /// A new connection to `target` in `slot` (an HTTP/2 one becomes the shared one).
    async fn connect(
        &self,
        target: &Target,
        protocol: UpstreamProtocol,
        settings: PoolSettings,
        slot: Slot,
        timeout: Duration,
    ) -> Result<Checkout, ConnectError> {
        let key = Key::new(target, protocol);
        let io = TokioIo::new(self.tunnel(target, timeout).await?);
        match protocol {
            UpstreamProtocol::Http1 => {
                let (sender, connection) = http1::Builder::new()
                    .max_headers(MAX_RESPONSE_HEADERS)
                    .handshake(io)
                    .await
                    .map_err(ConnectError::Handshake)?;
                tokio::spawn(connection);
                Ok(Checkout::Http1 {
                    sender,
                    reused: false,
                    served: 1,
                    slot,
                })
            }
            UpstreamProtocol::Http2 => {
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(H2_STREAM_WINDOW)
                    .initial_connection_window_size(H2_CONNECTION_WINDOW)
                    .max_send_buf_size(H2_STREAM_WINDOW as usize)
                    .handshake(io)
                    .await
                    .map_err(ConnectError::Handshake)?;
                tokio::spawn(connection);
                let mut connections = self.lock();
                let current = connections.shared.get(&key);
                let replace = current.is_none_or(|current| {
                    let full = current.streams.load(Ordering::Acquire) >= H2_MAX_STREAMS;
                    current.sender.is_closed() || !settings.has_room(current.served) || full
                });
                if !replace {
                    // Another request made the shared one meanwhile: this one is this
                    // request's alone.
                    return Ok(Checkout::Http2 {
                        sender,
                        reused: false,
                        slot: Some(slot),
                        _stream: None,
                    });
                }
                let streams = Arc::new(AtomicUsize::new(0));
                let stream = StreamCount::take(&streams);
                let shared = Shared {
                    sender: sender.clone(),
                    streams,
                    served: 1,
                    last_used: Instant::now(),
                    idle_timeout: settings.idle_timeout.unwrap_or(self.config.idle_timeout),
                    _slot: slot,
                };
                connections.shared.insert(key, shared);
                Ok(Checkout::Http2 {
                    sender,
                    reused: false,
                    slot: None,
                    _stream: stream,
                })
            }
        }
    }

    /// Closes one idle connection of the destination `slots` counts, if it has one.
    fn close_idle_of(&self, slots: &Arc<ConnectionSlots>) -> bool {
        let mut connections = self.lock();
        for idle in connections.idle.values_mut() {
            if let Some(at) = idle.iter().position(|i| Arc::ptr_eq(&i.slot.0, slots)) {
                idle.swap_remove(at);
                return true;
            }
        }
        false
    }

    /// Returns an HTTP/1.1 connection whose exchange is complete, and which has served
    /// `served` requests, to the pool (or closes it, past `settings`' request limit).
    pub fn checkin(
        &self,
        target: &Target,
        sender: http1::SendRequest<UpstreamBody>,
        served: u32,
        slot: Slot,
        settings: PoolSettings,
    ) {
        if !sender.is_ready() || !settings.has_room(served) {
            return;
        }
        // Requests waiting for a connection of this destination may take this one.
        let slots = slot.0.clone();
        let key = Key::new(target, UpstreamProtocol::Http1);
        let mut connections = self.lock();
        let now = Instant::now();
        let idle = connections.idle.entry(key).or_default();
        idle.retain(|i| now.duration_since(i.since) < i.idle_timeout);
        if idle.len() < self.config.max_idle_per_endpoint {
            idle.push(Idle {
                sender,
                since: now,
                served,
                idle_timeout: settings.idle_timeout.unwrap_or(self.config.idle_timeout),
                slot,
            });
        }
        drop(connections);
        slots.freed.notify_waiters();
    }

    /// Closes idle connections past their idle timeout (and forgets closed shared ones).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut connections = self.lock();
        connections.idle.retain(|_, idle| {
            idle.retain(|i| now.duration_since(i.since) < i.idle_timeout && !i.sender.is_closed());
            !idle.is_empty()
        });
        connections.shared.retain(|_, shared| {
            !shared.sender.is_closed() && now.duration_since(shared.last_used) < shared.idle_timeout
        });
    }

    fn pooled(&self, key: &Key, settings: PoolSettings) -> Option<Checkout> {
        let mut connections = self.lock();
        let now = Instant::now();
        match key.protocol {
            UpstreamProtocol::Http1 => {
                let idle = connections.idle.get_mut(key)?;
                while let Some(found) = idle.pop() {
                    let fresh = now.duration_since(found.since) < found.idle_timeout;
                    if found.sender.is_ready() && fresh && settings.has_room(found.served) {
                        return Some(Checkout::Http1 {
                            sender: found.sender,
                            reused: true,
                            served: found.served + 1,
                            slot: found.slot,
                        });
                    }
                }
                None
            }
            UpstreamProtocol::Http2 => {
                let shared = connections.shared.get_mut(key)?;
                if shared.sender.is_closed() || !settings.has_room(shared.served) {
                    // Streams still open on it finish; new ones go to a new connection.
                    connections.shared.remove(key);
                    return None;
                }
                // Full: a new connection takes over as the shared one.
                let stream = StreamCount::take(&shared.streams)?;
                shared.served += 1;
                shared.last_used = now;
                Some(Checkout::Http2 {
                    sender: shared.sender.clone(),
                    reused: true,
                    slot: None,
                    _stream: Some(stream),
                })
            }
        }
    }

    /// An HBONE tunnel to `target`, as the waypoint, within `timeout`: what each pooled
    /// connection runs over, and what the waypoint's own requests (a JWKS fetch) use alone.
    pub async fn tunnel(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<mesh_hbone::HboneStream, ConnectError> {
        let key = PoolKey {
            source: self.identity.clone(),
            source_ip: Some(self.source_ip),
            source_netns: self.source_netns.clone(),
            destination: target.hbone_addr,
            expected: vec![target.identity.clone()],
        };
        let request = ConnectRequest {
            authority: target.authority.to_string(),
            headers: http::HeaderMap::new(),
        };
        match tokio::time::timeout(timeout, self.hbone.connect(&key, request)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(ConnectError::Hbone {
                addr: target.hbone_addr,
                source,
            }),
            Err(_) => Err(ConnectError::Timeout(target.hbone_addr)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The body of an answer the waypoint asked for itself (an authorizer's, a collector's, a
/// key set), read whole up to `limit` bytes; a longer one is an error.
pub async fn read_answer<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, limit).collect().await;
    Ok(collected
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes())
}
