//! Inbound HBONE: accept mutual-TLS HTTP/2 connections and hand each CONNECT stream to a handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use mesh_runtime::{ConnectionLimit, LogLimit};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::HboneError;
use crate::http2;
use crate::identity::Identity;
use crate::stream::HboneStream;

/// Failed inbound handshakes are logged at info with the peer's address, at most 10 a second
/// per process (`suppressed` counts those left out).
static HANDSHAKE_FAILURES: LogLimit = LogLimit::new(10, Duration::from_secs(1));

/// Bound on TLS + HTTP/2 handshakes of one inbound connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept() (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One CONNECT request waiting for an answer. Dropping it unanswered answers 503.
pub struct InboundConnect {
    peer_identity: Identity,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    authority: String,
    headers: HeaderMap,
    recv: Option<RecvStream>,
    respond: Option<SendResponse<Bytes>>,
}

impl std::fmt::Debug for InboundConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundConnect")
            .field("peer_identity", &self.peer_identity)
            .field("peer_addr", &self.peer_addr)
            .field("local_addr", &self.local_addr)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl InboundConnect {
    /// From the client's certificate.
    pub fn peer_identity(&self) -> &Identity {
        &self.peer_identity
    }

    /// TCP peer of the HBONE connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Where the HBONE connection was accepted.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CONNECT `:authority` as sent.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The authority as a socket address, when it is `ip:port`.
    pub fn authority_addr(&self) -> Option<SocketAddr> {
        self.authority.parse().ok()
    }

    /// Request headers (`baggage`, `forwarded`, `traceparent`, when sent).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Answers `status` and ends the stream.
    pub fn reject(mut self, status: StatusCode) {
        if let Some(respond) = self.respond.take() {
            respond_and_end(respond, status);
        }
    }

    /// Answers 200 with `headers`; the stream then carries the tunneled bytes.
    pub fn accept(mut self, headers: HeaderMap) -> Result<HboneStream, HboneError> {
        let mut respond = self
            .respond
            .take()
            .expect("answered only once (consumes self)");
        let recv = self.recv.take().expect("body taken only by accept");
        let mut response = Response::new(());
        *response.headers_mut() = headers;
        let send = respond.send_response(response, false)?;
        Ok(HboneStream::new(
            send,
            recv,
            self.peer_identity.clone(),
            self.peer_addr,
            None,
        ))
    }
}

impl Drop for InboundConnect {
    fn drop(&mut self) {
        if let Some(respond) = self.respond.take() {
            respond_and_end(respond, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

fn respond_and_end(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Err(e) = respond.send_response(response, true) {
        debug!(%status, error = %e, "could not answer CONNECT");
    }
}

/// A CONNECT authority we can act on: `host:port` with a non-zero port and no userinfo.
pub fn authority_is_valid(authority: &str) -> bool {
    match authority.parse::<http::uri::Authority>() {
        Ok(parsed) => {
            !authority.contains('@')
                && !parsed.host().is_empty()
                && parsed.port_u16().is_some_and(|port| port != 0)
        }
        Err(_) => false,
    }
}

/// Why a request is answered 400 without reaching the handler, if it is.
fn bad_request_reason<B>(request: &Request<B>) -> Option<&'static str> {
    if request.method() != Method::CONNECT {
        return Some("not a CONNECT request");
    }
    match request.uri().authority() {
        Some(authority) if authority_is_valid(authority.as_str()) => None,
        _ => Some("unparsable CONNECT authority"),
    }
}

/// The inbound HBONE server.
pub struct Server {
    tls: Arc<rustls::ServerConfig>,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    connection_limit: Arc<ConnectionLimit>,
}

/// The listener name connection refusals are counted under.
const LISTENER: &str = "hbone";

/// What every connection task of one server shares.
struct Shared<H> {
    acceptor: TlsAcceptor,
    handler: H,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    shutdown: CancellationToken,
}

impl Server {
    pub fn new(tls: Arc<rustls::ServerConfig>) -> Self {
        Server {
            tls,
            keepalive_interval: http2::KEEPALIVE_INTERVAL,
            keepalive_timeout: http2::KEEPALIVE_TIMEOUT,
            connection_limit: ConnectionLimit::process().clone(),
        }
    }

    /// Caps accepted connections with `limit` instead of the process-wide one.
    pub fn with_connection_limit(mut self, limit: Arc<ConnectionLimit>) -> Self {
        self.connection_limit = limit;
        self
    }

    /// Overrides the PING keepalive (default: every 10 s, 20 s to answer).
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Accept loop until `shutdown` is cancelled. Connections over the connection limit are
    /// closed at once. Each TLS+h2 connection runs on its own task,
    /// each CONNECT stream is handed to `handler` on its own task. Non-CONNECT requests or an
    /// unparsable authority get 400 without calling the handler. A failing peer only closes its
    /// own connection. On shutdown, open connections get GOAWAY and drain their streams.
    pub async fn serve<H, F>(self, listener: TcpListener, handler: H, shutdown: CancellationToken)
    where
        H: Fn(InboundConnect) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            acceptor: TlsAcceptor::from(self.tls),
            handler,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            shutdown: shutdown.clone(),
        });
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer_addr)) => {
                    // Over a cap: closed at once (the refusal is logged and counted).
                    let Ok(permit) = self.connection_limit.admit(LISTENER, peer_addr.ip()) else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve_connection(shared, tcp, peer_addr).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "HBONE accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

type ServerConnection = h2::server::Connection<tokio_rustls::server::TlsStream<TcpStream>, Bytes>;

/// TLS and HTTP/2 handshakes; the peer's identity comes from its verified certificate.
async fn handshake<H>(
    shared: &Shared<H>,
    tcp: TcpStream,
) -> Result<(ServerConnection, Identity), String> {
    let tls = shared
        .acceptor
        .accept(tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let identity = crate::tls::peer_identity(tls.get_ref().1).map_err(|e| e.to_string())?;
    let conn = http2::server_builder()
        .handshake(tls)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    Ok((conn, identity))
}

async fn serve_connection<H, F>(shared: Arc<Shared<H>>, tcp: TcpStream, peer_addr: SocketAddr)
where
    H: Fn(InboundConnect) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let _ = tcp.set_nodelay(true);
    let local_addr = match tcp.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            debug!(%peer_addr, error = %e, "HBONE connection gone before handshake");
            return;
        }
    };
    let (mut conn, identity) =
        // Boxed: the handshakes' state is large and must not stay in the connection's task.
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(handshake(&shared, tcp))).await {
            Ok(Ok(done)) => done,
            Ok(Err(why)) => {
                if let Some(suppressed) = HANDSHAKE_FAILURES.allow() {
                    info!(%peer_addr, error = %why, suppressed, "HBONE connection refused");
                }
                return;
            }
            Err(_) => {
                if let Some(suppressed) = HANDSHAKE_FAILURES.allow() {
                    info!(%peer_addr, suppressed, "HBONE handshake timed out");
                }
                return;
            }
        };
    let keepalive = http2::keepalive(
        conn.ping_pong(),
        shared.keepalive_interval,
        shared.keepalive_timeout,
    );
    tokio::pin!(keepalive);
    let mut draining = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    dispatch(&shared, request, respond, &identity, peer_addr, local_addr);
                }
                Some(Err(e)) => {
                    debug!(%peer_addr, peer = %identity, error = %e, "HBONE connection failed");
                    break;
                }
                None => break,
            },
            failure = &mut keepalive => {
                warn!(%peer_addr, peer = %identity, %failure, "HBONE keepalive failed; closing");
                break;
            }
            () = shared.shutdown.cancelled(), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
        }
    }
}

fn dispatch<H, F>(
    shared: &Arc<Shared<H>>,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    identity: &Identity,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
) where
    H: Fn(InboundConnect) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(why) = bad_request_reason(&request) {
        debug!(%peer_addr, peer = %identity, method = %request.method(), uri = %request.uri(),
            reason = why, "HBONE request refused with 400");
        respond_and_end(respond, StatusCode::BAD_REQUEST);
        return;
    }
    let (parts, recv) = request.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let inbound = InboundConnect {
        peer_identity: identity.clone(),
        peer_addr,
        local_addr,
        authority,
        headers: parts.headers,
        recv: Some(recv),
        respond: Some(respond),
    };
    tokio::spawn((shared.handler)(inbound));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_need_host_and_port() {
        for good in [
            "10.0.0.1:8080",
            "[fd00::1]:80",
            "reviews.default.svc.cluster.local:9080",
        ] {
            assert!(authority_is_valid(good), "{good}");
        }
        for bad in [
            "10.0.0.1",
            "reviews:",
            "10.0.0.1:0",
            ":80",
            "user@host:80",
            "a b:80",
            "",
        ] {
            assert!(!authority_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn only_connect_with_authority_reaches_the_handler() {
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("10.0.0.1:80")
            .body(())
            .expect("request");
        assert_eq!(bad_request_reason(&connect), None);
        let get = Request::builder()
            .method(Method::GET)
            .uri("http://10.0.0.1:80/")
            .body(())
            .expect("request");
        assert_eq!(bad_request_reason(&get), Some("not a CONNECT request"));
        let no_port = Request::builder()
            .method(Method::CONNECT)
            .uri("10.0.0.1")
            .body(())
            .expect("request");
        assert_eq!(
            bad_request_reason(&no_port),
            Some("unparsable CONNECT authority")
        );
    }
}
