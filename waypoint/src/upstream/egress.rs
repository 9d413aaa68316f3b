//! HBONE egress: the upstream half of the waypoint.
//!
//! Pingora reuses pooled upstream connections only for its own peer kinds, so upstreams are
//! Pingora CONNECT-proxy peers (`HttpPeer::new_proxy`) whose next hop is this in-process Unix
//! socket. Each accepted Unix connection carries one `CONNECT ip:port HTTP/1.1` naming the
//! endpoint; the egress opens an HBONE stream with the waypoint's identity to the endpoint's
//! ztunnel, answers 200 only after the HBONE 200 (naming the connection for its
//! [`Backlog`](super::backlog::Backlog)), then splices bytes until both sides end, queueing what
//! Pingora writes so its writes complete at once (see [`super::backlog`]).
//! Pingora keeps the Unix connection alive between requests, so one client connection through
//! the waypoint costs one CONNECT stream upstream, not one per request.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mesh_config::Endpoint;
use mesh_hbone::{ConnectRequest, HboneError, HboneStream, Identity, Pool, PoolKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::backlog::{Backlog, Backlogs, CONNECTION_ID_HEADER, QUEUE_LIMIT};

/// Proxy header naming the HBONE next hop (the endpoint's ztunnel, `ip:15008`).
pub const HBONE_ADDR_HEADER: &str = "x-mesh-hbone-addr";
/// Proxy header naming the identity the next hop must present.
pub const HBONE_IDENTITY_HEADER: &str = "x-mesh-hbone-identity";

/// Response header on a failed CONNECT, saying why the HBONE dial failed.
pub const HBONE_ERROR_HEADER: &str = "x-mesh-hbone-error";

const MAX_HEAD: usize = 16 * 1024;

/// Where one upstream request must go over HBONE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressTarget {
    /// `:authority` of the HBONE CONNECT: the endpoint's `podIP:targetPort`.
    pub authority: SocketAddr,
    /// The HBONE next hop.
    pub hbone_addr: SocketAddr,
    pub identity: Identity,
    /// `identity` as a SPIFFE URI (written once, read by the proxy headers and metrics).
    pub identity_uri: String,
}

impl EgressTarget {
    /// The target for `endpoint`: its pod's ztunnel, presenting the pod's identity.
    pub fn for_endpoint(endpoint: &Endpoint) -> Self {
        let workload = &endpoint.workload;
        EgressTarget::new(
            SocketAddr::new(workload.ip, endpoint.port),
            SocketAddr::new(workload.ip, mesh_core::ports::HBONE),
            workload.identity.clone(),
        )
    }

    pub fn new(authority: SocketAddr, hbone_addr: SocketAddr, identity: Identity) -> Self {
        EgressTarget {
            authority,
            hbone_addr,
            identity_uri: identity.to_string(),
            identity,
        }
    }

    /// The proxy headers that carry this target through Pingora. They are part of Pingora's
    /// pool key, so connections to different identities or next hops never mix.
    pub fn proxy_headers(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (
                HBONE_ADDR_HEADER.to_string(),
                self.hbone_addr.to_string().into_bytes(),
            ),
            (
                HBONE_IDENTITY_HEADER.to_string(),
                self.identity_uri.clone().into_bytes(),
            ),
        ])
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressRequestError {
    #[error("malformed CONNECT request: {0}")]
    Malformed(String),
    #[error("missing or invalid header {0}")]
    Header(&'static str),
}

/// Parses the CONNECT head Pingora sends. Returns the target and the head's length.
pub fn parse_connect(buf: &[u8]) -> Result<Option<(EgressTarget, usize)>, EgressRequestError> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(EgressRequestError::Malformed(e.to_string())),
    };
    if req.method != Some("CONNECT") {
        return Err(EgressRequestError::Malformed(format!(
            "method {:?}",
            req.method
        )));
    }
    let authority = req
        .path
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .ok_or_else(|| EgressRequestError::Malformed(format!("authority {:?}", req.path)))?;
    let header = |name: &'static str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .ok_or(EgressRequestError::Header(name))
    };
    let hbone_addr = header(HBONE_ADDR_HEADER)?
        .parse()
        .map_err(|_| EgressRequestError::Header(HBONE_ADDR_HEADER))?;
    let identity = header(HBONE_IDENTITY_HEADER)?
        .parse()
        .map_err(|_| EgressRequestError::Header(HBONE_IDENTITY_HEADER))?;
    Ok(Some((
        EgressTarget::new(authority, hbone_addr, identity),
        len,
    )))
}

/// The in-process HBONE egress of one waypoint.
pub struct Egress {
    listener: UnixListener,
    path: PathBuf,
    backlogs: Arc<Backlogs>,
    pool: Pool,
    identity: Identity,
    source_ip: IpAddr,
    dial_timeout: Duration,
}

impl Egress {
    /// Binds a Unix socket at `path` (its directory must be private to this process's user).
    /// Each connection's queue is recorded in `backlogs`.
    pub fn bind(
        path: &Path,
        backlogs: Arc<Backlogs>,
        pool: Pool,
        identity: Identity,
        source_ip: IpAddr,
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(Egress {
            listener,
            path: path.to_path_buf(),
            backlogs,
            pool,
            identity,
            source_ip,
            dial_timeout: Duration::from_secs(10),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let dial = Dial {
                        pool: self.pool.clone(),
                        identity: self.identity.clone(),
                        source_ip: self.source_ip,
                        timeout: self.dial_timeout,
                    };
                    let registration = self.backlogs.register();
                    tokio::spawn(async move {
                        if let Err(e) = tunnel(stream, dial, registration).await {
                            debug!(error = %e, "egress tunnel ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "egress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn read_head(stream: &mut UnixStream) -> std::io::Result<(EgressTarget, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_connect(&buf) {
            Ok(Some((target, len))) => return Ok((target, buf.split_off(len))),
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => return Err(std::io::Error::other("CONNECT head too large")),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// How the egress dials HBONE for one connection.
struct Dial {
    pool: Pool,
    identity: Identity,
    source_ip: IpAddr,
    timeout: Duration,
}

async fn tunnel(
    mut downstream: UnixStream,
    dial: Dial,
    registration: super::backlog::Registration,
) -> std::io::Result<()> {
    let (target, early) = match read_head(&mut downstream).await {
        Ok(head) => head,
        Err(e) => {
            let _ = downstream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            return Err(e);
        }
    };
    let key = PoolKey {
        source: dial.identity,
        source_ip: Some(dial.source_ip),
        destination: target.hbone_addr,
        expected: vec![target.identity.clone()],
    };
    let request = ConnectRequest {
        authority: target.authority.to_string(),
        headers: http::HeaderMap::new(),
    };
    let connected = tokio::time::timeout(dial.timeout, dial.pool.connect(&key, request))
        .await
        .unwrap_or(Err(HboneError::Timeout {
            addr: target.hbone_addr,
        }));
    let mut upstream = match connected {
        Ok(stream) => stream,
        Err(e) => {
            warn!(dst.hbone_addr = %target.hbone_addr, dst.addr = %target.authority, error = %e, "upstream HBONE connect failed");
            let reason = e.to_string().replace(['\r', '\n'], " ");
            let head = format!(
                "HTTP/1.1 503 Upstream Unavailable\r\n{HBONE_ERROR_HEADER}: {reason}\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = downstream.write_all(head.as_bytes()).await;
            return Ok(());
        }
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\n{CONNECTION_ID_HEADER}: {}\r\n\r\n",
        registration.id()
    );
    downstream.write_all(head.as_bytes()).await?;
    if !early.is_empty() {
        upstream.write_all(&early).await?;
    }
    splice(downstream, upstream, registration.backlog()).await
}

/// Copies both ways until both directions end. Pingora's bytes are read as soon as they come
/// (up to [`QUEUE_LIMIT`] queued), so its writes complete at once; `backlog` follows the queue.
async fn splice(
    downstream: UnixStream,
    upstream: HboneStream,
    backlog: &Backlog,
) -> std::io::Result<()> {
    let (from_pingora, to_pingora) = downstream.into_split();
    let (from_upstream, to_upstream) = tokio::io::split(upstream);
    let request = queue_through(from_pingora, to_upstream, backlog);
    let response = async move {
        let mut from_upstream = from_upstream;
        let mut to_pingora = to_pingora;
        tokio::io::copy(&mut from_upstream, &mut to_pingora).await?;
        to_pingora.shutdown().await
    };
    tokio::try_join!(request, response).map(|_| ())
}

/// Reads `from` into a queue of at most [`QUEUE_LIMIT`] bytes while writing the queue to
/// `to`; shuts `to` down after `from` ends and the queue is written.
async fn queue_through(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    backlog: &Backlog,
) -> std::io::Result<()> {
    const READ_SIZE: usize = 64 << 10;
    let mut queue = BytesMut::new();
    let mut ended = false;
    loop {
        if ended && queue.is_empty() {
            return to.shutdown().await;
        }
        if queue.capacity() - queue.len() < READ_SIZE {
            queue.reserve(READ_SIZE);
        }
        std::future::poll_fn(|cx| {
            let mut progressed = false;
            let may_read = !ended && queue.len() < QUEUE_LIMIT;
            if may_read
                && let Poll::Ready(read) = poll_read_buf(Pin::new(&mut from), cx, &mut queue)
            {
                ended = read? == 0;
                progressed = true;
            }
            if !queue.is_empty()
                && let Poll::Ready(written) = Pin::new(&mut to).poll_write(cx, &queue)
            {
                match written? {
                    0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                    n => queue.advance(n),
                }
                progressed = true;
            }
            match progressed {
                true => Poll::Ready(Ok::<_, std::io::Error>(())),
                false => Poll::Pending,
            }
        })
        .await?;
        backlog.set_queued(queue.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pingora_connect_head() {
        let head = b"CONNECT 127.0.2.10:9080 HTTP/1.1\r\nhost: 127.0.2.10:9080\r\n\
x-mesh-hbone-addr: 127.0.2.10:15008\r\n\
x-mesh-hbone-identity: spiffe://cluster.local/ns/default/sa/bookinfo-reviews\r\n\r\nGET";
        let (target, len) = parse_connect(head).expect("valid").expect("complete");
        assert_eq!(target.authority, "127.0.2.10:9080".parse().expect("addr"));
        assert_eq!(target.hbone_addr, "127.0.2.10:15008".parse().expect("addr"));
        assert_eq!(target.identity.service_account, "bookinfo-reviews");
        assert_eq!(&head[len..], b"GET");
    }

    #[test]
    fn partial_and_bad_heads() {
        assert_eq!(
            parse_connect(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n"),
            Ok(None)
        );
        assert!(matches!(
            parse_connect(b"GET / HTTP/1.1\r\n\r\n"),
            Err(EgressRequestError::Malformed(_))
        ));
        assert_eq!(
            parse_connect(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n"),
            Err(EgressRequestError::Header(HBONE_ADDR_HEADER))
        );
    }

    #[test]
    fn proxy_headers_round_trip() {
        let target = EgressTarget::new(
            "127.0.2.10:9080".parse().expect("addr"),
            "127.0.2.10:15008".parse().expect("addr"),
            Identity::new("cluster.local", "default", "reviews"),
        );
        let mut head = format!("CONNECT {} HTTP/1.1\r\n", target.authority);
        for (k, v) in target.proxy_headers() {
            head.push_str(&format!("{k}: {}\r\n", String::from_utf8(v).expect("utf8")));
        }
        head.push_str("\r\n");
        let (parsed, _) = parse_connect(head.as_bytes())
            .expect("valid")
            .expect("complete");
        assert_eq!(parsed, target);
    }
}
