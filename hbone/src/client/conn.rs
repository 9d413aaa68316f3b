//! One pooled HBONE connection: stream accounting, opening CONNECT streams, and the task that
//! drives the HTTP/2 connection (keepalive, idle release).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use h2::client::SendRequest;
use http::{Request, StatusCode};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::dial::ClientConnection;
use super::{Counters, PoolConfig, PoolInner, PoolKey};
use crate::error::HboneError;
use crate::http2;
use crate::identity::Identity;
use crate::stream::HboneStream;

/// How long an idle-released connection may take to say GOAWAY and close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Usage {
    active: usize,
    idle_since: Instant,
    usable: bool,
}

/// The part of a connection its streams and its driver task share.
pub(super) struct ConnShared {
    pub(super) id: u64,
    usage: Mutex<Usage>,
    idle: Notify,
}

impl ConnShared {
    fn usage(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn mark_unusable(&self) {
        self.usage().usable = false;
    }

    /// Evicts when idle for `timeout`; the caller holds the pool lock.
    pub(super) fn idle_expired(&self, timeout: Duration) -> bool {
        let mut usage = self.usage();
        let expired = usage.active == 0 && usage.idle_since.elapsed() >= timeout;
        if expired {
            usage.usable = false;
        }
        expired
    }
}

/// A reserved stream slot; dropping it frees the slot.
pub(super) struct Lease {
    shared: Arc<ConnShared>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut usage = self.shared.usage();
        usage.active -= 1;
        if usage.active == 0 {
            usage.idle_since = Instant::now();
            drop(usage);
            self.shared.idle.notify_one();
        }
    }
}

/// A pooled connection: the request handle plus shared accounting.
pub(super) struct Conn {
    pub(super) shared: Arc<ConnShared>,
    send_request: SendRequest<Bytes>,
    peer_identity: Identity,
    peer_addr: SocketAddr,
}

/// Why opening a stream failed, and what that says about the connection.
pub(super) struct OpenFailure {
    pub(super) error: HboneError,
    /// The connection cannot carry more streams.
    pub(super) broken: bool,
    /// Nothing reached the destination; another connection may succeed.
    pub(super) retriable: bool,
}

impl OpenFailure {
    fn answered(error: HboneError) -> Self {
        OpenFailure {
            error,
            broken: false,
            retriable: false,
        }
    }

    fn from_h2(error: h2::Error, addr: SocketAddr) -> Self {
        let refused = error.reason() == Some(Reason::REFUSED_STREAM) && error.is_remote();
        let broken = error.is_io() || error.is_go_away();
        let error = if error.is_io() {
            let source = error.into_io().expect("is_io was checked");
            HboneError::Connect { addr, source }
        } else {
            HboneError::H2(error)
        };
        OpenFailure {
            error,
            broken,
            retriable: broken || refused,
        }
    }
}

impl Conn {
    pub(super) fn new(
        id: u64,
        send_request: SendRequest<Bytes>,
        peer_identity: Identity,
        peer_addr: SocketAddr,
    ) -> Self {
        let usage = Usage {
            active: 0,
            idle_since: Instant::now(),
            usable: true,
        };
        Conn {
            shared: Arc::new(ConnShared {
                id,
                usage: Mutex::new(usage),
                idle: Notify::new(),
            }),
            send_request,
            peer_identity,
            peer_addr,
        }
    }

    /// Reserves a stream slot if the connection is usable and below `max_streams`.
    pub(super) fn try_lease(&self, max_streams: usize) -> Option<Lease> {
        let mut usage = self.shared.usage();
        if !usage.usable || usage.active >= max_streams {
            return None;
        }
        usage.active += 1;
        Some(Lease {
            shared: self.shared.clone(),
        })
    }

    /// Sends the CONNECT and waits (at most `timeout`) for the answer.
    pub(super) async fn open(
        &self,
        request: Request<()>,
        lease: Lease,
        timeout: Duration,
    ) -> Result<HboneStream, OpenFailure> {
        let addr = self.peer_addr;
        let exchange = async {
            let mut sender = self.send_request.clone().ready().await?;
            let (response, send) = sender.send_request(request, false)?;
            Ok::<_, h2::Error>((response.await?, send))
        };
        let (response, send) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(OpenFailure::from_h2(e, addr)),
            Err(_) => return Err(OpenFailure::answered(HboneError::Timeout { addr })),
        };
        if response.status() != StatusCode::OK {
            return Err(OpenFailure::answered(HboneError::from_status(
                response.status(),
            )));
        }
        Ok(HboneStream::new(
            send,
            response.into_body(),
            self.peer_identity.clone(),
            addr,
            Some(Box::new(lease)),
        ))
    }
}

/// Returns once the connection has been idle for `timeout` and was removed from the pool.
async fn idle_release(
    shared: Arc<ConnShared>,
    pool: Weak<PoolInner>,
    key: PoolKey,
    timeout: Duration,
) {
    loop {
        let deadline = {
            let usage = shared.usage();
            (usage.active == 0).then(|| usage.idle_since + timeout)
        };
        let Some(deadline) = deadline else {
            shared.idle.notified().await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = shared.idle.notified() => continue,
        }
        let Some(pool) = pool.upgrade() else {
            return; // the pool is gone: every request handle is gone with it
        };
        if pool.evict_if_idle(&key, &shared, timeout) {
            return;
        }
    }
}

/// Drives one connection until it closes, fails its keepalive, or is released as idle; then
/// removes it from the pool.
pub(super) async fn drive(
    connection: ClientConnection,
    ping_pong: Option<h2::PingPong>,
    shared: Arc<ConnShared>,
    pool: Weak<PoolInner>,
    counters: Arc<Counters>,
    key: PoolKey,
    config: PoolConfig,
) {
    let keepalive = http2::keepalive(
        ping_pong,
        config.keepalive_interval,
        config.keepalive_timeout,
    );
    let idle = idle_release(
        shared.clone(),
        pool.clone(),
        key.clone(),
        config.idle_timeout,
    );
    tokio::pin!(connection, keepalive, idle);
    let addr = key.destination;
    tokio::select! {
        result = &mut connection => {
            if let Err(e) = result {
                debug!(dst.hbone_addr = %addr, error = %e, "HBONE connection closed");
            }
        }
        failure = &mut keepalive => {
            warn!(dst.hbone_addr = %addr, %failure, "HBONE keepalive failed; closing connection");
        }
        () = &mut idle => {
            // The request handle left with the pool entry: h2 sends GOAWAY and finishes.
            if tokio::time::timeout(CLOSE_GRACE, &mut connection).await.is_err() {
                debug!(dst.hbone_addr = %addr, "idle HBONE connection did not close in time");
            }
        }
    }
    shared.mark_unusable();
    if let Some(pool) = pool.upgrade() {
        pool.remove(&key, shared.id);
    }
    counters.connection_closed();
}
