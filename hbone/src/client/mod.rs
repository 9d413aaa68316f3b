//! Outbound HBONE: a pool of mutual-TLS HTTP/2 connections, one set per [`PoolKey`], carrying
//! many CONNECT streams each.

mod conn;
mod dial;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri};
use mesh_runtime::Netns;
use tracing::debug;

use crate::certs::CertificateProvider;
use crate::error::HboneError;
use crate::http2;
use crate::identity::Identity;
use crate::stream::HboneStream;

use conn::{Conn, ConnShared, Lease};

/// What separates pooled connections: who we are, where from, where to, whom we expect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Identity we present.
    pub source: Identity,
    /// Bind the TCP socket to this local IP when Some.
    pub source_ip: Option<IpAddr>,
    /// Make the TCP socket inside this network namespace (a captured pod's) when Some.
    pub source_netns: Option<Netns>,
    /// HBONE next hop, e.g. 127.0.10.5:15008.
    pub destination: SocketAddr,
    /// Acceptable server identities (sorted by the caller).
    pub expected: Vec<Identity>,
}

/// One CONNECT: the `:authority` and extra headers (baggage, forwarded, traceparent).
#[derive(Clone, Debug, Default)]
pub struct ConnectRequest {
    pub authority: String,
    pub headers: HeaderMap,
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Tunnels opened on one connection at once; more open another connection. Capped at
    /// as many as fit in the connection window ([`http2::client_max_streams`]), which flow
    /// control relies on.
    pub max_streams_per_connection: usize,
    /// Flow-control window of each tunnel: what a tunnel whose reader has stopped can hold.
    /// Default [`http2::CLIENT_STREAM_WINDOW`] (512 KiB), at most 1 MiB.
    pub stream_window: u32,
    pub idle_timeout: Duration,
    /// Bounds the dial (TCP + TLS + HTTP/2) and, separately, the wait for a CONNECT answer.
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_streams_per_connection: http2::client_max_streams(http2::CLIENT_STREAM_WINDOW),
            stream_window: http2::CLIENT_STREAM_WINDOW,
            idle_timeout: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: http2::KEEPALIVE_INTERVAL,
            keepalive_timeout: http2::KEEPALIVE_TIMEOUT,
        }
    }
}

/// Counters since the pool was created. `streams_opened` counts CONNECTs answered 200.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub connections_opened: u64,
    pub connections_open: usize,
    pub streams_opened: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    connections_opened: AtomicU64,
    connections_open: AtomicUsize,
    streams_opened: AtomicU64,
}

impl Counters {
    fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serialises dials per key and remembers how the last one ended, so callers that waited on
/// a failed dial get its error instead of dialing again one after another.
#[derive(Default)]
struct Dialer {
    epoch: AtomicU64,
    last_failure: tokio::sync::Mutex<Option<HboneError>>,
}

#[derive(Default)]
struct KeyEntry {
    conns: Vec<Arc<Conn>>,
    dialer: Arc<Dialer>,
}

pub(crate) struct PoolInner {
    provider: Arc<dyn CertificateProvider>,
    config: PoolConfig,
    entries: Mutex<HashMap<PoolKey, KeyEntry>>,
    counters: Arc<Counters>,
    next_id: AtomicU64,
}

/// Pool of outbound HBONE connections. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The CONNECT request for `request`: only `:method` and `:authority` pseudo-headers.
fn connect_request(request: &ConnectRequest) -> Result<Request<()>, HboneError> {
    if !crate::server::authority_is_valid(&request.authority) {
        return Err(HboneError::Config(format!(
            "invalid CONNECT authority {:?}",
            request.authority
        )));
    }
    let authority = request
        .authority
        .parse::<http::uri::Authority>()
        .map_err(|e| HboneError::Config(format!("invalid CONNECT authority: {e}")))?;
    let mut uri = http::uri::Parts::default();
    uri.authority = Some(authority);
    let uri = Uri::from_parts(uri).map_err(|e| HboneError::Config(e.to_string()))?;
    let mut built = Request::new(());
    *built.method_mut() = Method::CONNECT;
    *built.uri_mut() = uri;
    *built.headers_mut() = request.headers.clone();
    Ok(built)
}

impl Pool {
    pub fn new(provider: Arc<dyn CertificateProvider>, config: PoolConfig) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                provider,
                config,
                entries: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Opens a CONNECT stream; returns once the peer answered 200. Non-200 answers map to
    /// [`HboneError::BadRequest`], [`HboneError::Unauthorized`], [`HboneError::Unavailable`] or
    /// [`HboneError::UnexpectedStatus`]. One dial per key at a time; a connection at its stream
    /// limit makes a new one; a reused connection that turns out dead is evicted and the
    /// request retried once on another.
    pub async fn connect(
        &self,
        key: &PoolKey,
        request: ConnectRequest,
    ) -> Result<HboneStream, HboneError> {
        let timeout = self.inner.config.connect_timeout;
        let mut retried = false;
        loop {
            let connect = connect_request(&request)?;
            let (conn, lease, reused) = self.inner.checkout(key).await?;
            match conn.open(connect, lease, timeout).await {
                Ok(stream) => {
                    let counters = &self.inner.counters;
                    counters.streams_opened.fetch_add(1, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(failure) => {
                    if failure.broken {
                        conn.shared.mark_unusable();
                        self.inner.remove(key, conn.shared.id);
                    }
                    if reused && failure.retriable && !retried {
                        debug!(dst.hbone_addr = %key.destination, error = %failure.error,
                            "pooled HBONE connection failed; retrying on another");
                        retried = true;
                        continue;
                    }
                    return Err(failure.error);
                }
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let counters = &self.inner.counters;
        PoolStats {
            connections_opened: counters.connections_opened.load(Ordering::Relaxed),
            connections_open: counters.connections_open.load(Ordering::Relaxed),
            streams_opened: counters.streams_opened.load(Ordering::Relaxed),
        }
    }
}

impl PoolInner {
    fn entries(&self) -> MutexGuard<'_, HashMap<PoolKey, KeyEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At most as many streams as fit in a connection's window, which keeps one stalled
    /// stream from starving the others (see [`http2`]).
    fn max_streams(&self) -> usize {
        let fit = http2::client_max_streams(self.config.stream_window);
        self.config.max_streams_per_connection.clamp(1, fit)
    }

    /// A slot on an existing connection, or the key's dialer when there is none.
    fn reserve(&self, key: &PoolKey) -> Result<(Arc<Conn>, Lease), Arc<Dialer>> {
        let mut entries = self.entries();
        if !entries.contains_key(key) {
            entries.insert(key.clone(), KeyEntry::default());
        }
        let entry = entries.get_mut(key).expect("inserted above");
        for conn in &entry.conns {
            if let Some(lease) = conn.try_lease(self.max_streams()) {
                return Ok((conn.clone(), lease));
            }
        }
        Err(entry.dialer.clone())
    }

    /// A stream slot for `key`: on a pooled connection, or on a new one (one dial at a time).
    /// The flag says whether the connection was already there.
    async fn checkout(
        self: &Arc<Self>,
        key: &PoolKey,
    ) -> Result<(Arc<Conn>, Lease, bool), HboneError> {
        let dialer = match self.reserve(key) {
            Ok((conn, lease)) => return Ok((conn, lease, true)),
            Err(dialer) => dialer,
        };
        let seen = dialer.epoch.load(Ordering::Acquire);
        let mut last_failure = dialer.last_failure.lock().await;
        if dialer.epoch.load(Ordering::Acquire) != seen
            && let Some(failure) = last_failure.as_ref()
        {
            return Err(failure.duplicate(key.destination));
        }
        if let Ok((conn, lease)) = self.reserve(key) {
            return Ok((conn, lease, true));
        }
        let dialed = tokio::time::timeout(
            self.config.connect_timeout,
            dial::dial(self.provider.clone(), key, self.config.stream_window),
        )
        .await
        .unwrap_or_else(|_| {
            Err(HboneError::Timeout {
                addr: key.destination,
            })
        });
        dialer.epoch.fetch_add(1, Ordering::AcqRel);
        match dialed {
            Ok(dialed) => {
                *last_failure = None;
                let (conn, lease) = self.install(key, dialed);
                Ok((conn, lease, false))
            }
            Err(e) => {
                debug!(dst.hbone_addr = %key.destination, error = %e, "HBONE dial failed");
                *last_failure = Some(e.duplicate(key.destination));
                drop(last_failure);
                drop(dialer);
                Self::prune_locked(&mut self.entries(), key);
                Err(e)
            }
        }
    }

    /// Adds a freshly dialed connection to the pool, with one slot reserved, and starts its task.
    fn install(self: &Arc<Self>, key: &PoolKey, dialed: dial::Dialed) -> (Arc<Conn>, Lease) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(
            id,
            dialed.send_request,
            dialed.peer_identity,
            key.destination,
        ));
        let lease = conn
            .try_lease(self.max_streams())
            .expect("a new connection has free slots");
        self.entries()
            .entry(key.clone())
            .or_default()
            .conns
            .push(conn.clone());
        self.counters.connection_opened();
        tokio::spawn(conn::drive(
            dialed.connection,
            dialed.ping_pong,
            conn.shared.clone(),
            Arc::downgrade(self),
            self.counters.clone(),
            key.clone(),
            self.config.clone(),
        ));
        (conn, lease)
    }

    /// Drops connection `id` from the pool (its request handle goes with it).
    fn remove(&self, key: &PoolKey, id: u64) {
        let mut entries = self.entries();
        Self::remove_locked(&mut entries, key, id);
    }

    fn remove_locked(entries: &mut HashMap<PoolKey, KeyEntry>, key: &PoolKey, id: u64) {
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        entry.conns.retain(|conn| conn.shared.id != id);
        Self::prune_locked(entries, key);
    }

    /// Forgets `key` when it has no connection and nobody is dialing or waiting for it.
    fn prune_locked(entries: &mut HashMap<PoolKey, KeyEntry>, key: &PoolKey) {
        let unused = entries
            .get(key)
            .is_some_and(|entry| entry.conns.is_empty() && Arc::strong_count(&entry.dialer) == 1);
        if unused {
            entries.remove(key);
        }
    }

    /// Removes the connection when it has had no stream for `timeout`.
    fn evict_if_idle(&self, key: &PoolKey, shared: &ConnShared, timeout: Duration) -> bool {
        let mut entries = self.entries();
        if !shared.idle_expired(timeout) {
            return false;
        }
        Self::remove_locked(&mut entries, key, shared.id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_has_only_method_and_authority() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "baggage",
            "k8s.namespace.name=default".parse().expect("value"),
        );
        let request = connect_request(&ConnectRequest {
            authority: "10.0.0.7:8080".into(),
            headers,
        })
        .expect("valid");
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(request.uri().to_string(), "10.0.0.7:8080");
        assert_eq!(request.uri().scheme(), None);
        assert_eq!(request.uri().path_and_query(), None);
        assert!(request.headers().contains_key("baggage"));
    }

    #[test]
    fn connect_request_rejects_bad_authorities() {
        for bad in ["", "10.0.0.7", "http://x:80/", "x:0"] {
            let err = connect_request(&ConnectRequest {
                authority: bad.into(),
                headers: HeaderMap::new(),
            })
            .expect_err(bad);
            assert!(matches!(err, HboneError::Config(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn default_config_matches_istio_but_for_streams_per_connection() {
        let config = PoolConfig::default();
        // Istio opens 100 streams of 4 MiB in a 16 MiB connection window; see `http2`.
        assert_eq!(config.max_streams_per_connection, 32);
        assert_eq!(config.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.keepalive_interval, Duration::from_secs(10));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(20));
    }
}
