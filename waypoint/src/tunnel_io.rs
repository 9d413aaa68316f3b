//! A CONNECT tunnel presented to Pingora as a downstream connection.
//!
//! Pingora's `ServerApp::process_new` takes any `IO`; this adapter wraps the byte stream of one
//! HBONE CONNECT stream and carries what the hooks need (the caller's SPIFFE identity, the
//! CONNECT authority) in the connection digest's proxy `user_data`. The tunnel cannot peek, so it
//! sniffs the HTTP/2 preface itself and replays the sniffed bytes, which lets Pingora choose h2c.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use mesh_hbone::Identity;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_http::ResponseHeader;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the waypoint knows about the tunnel a request arrived on.
#[derive(Debug)]
pub struct TunnelInfo {
    /// Identity of the HBONE peer (the caller's ztunnel sends with the caller's identity).
    pub peer_identity: Identity,
    /// The same identity as policies name principals, without `spiffe://`.
    pub principal: String,
    /// The same identity as a SPIFFE URI, as metrics and `x-forwarded-client-cert` write it.
    pub peer_uri: String,
    /// TCP peer of the HBONE connection.
    pub peer_addr: SocketAddr,
    /// Where the HBONE connection was accepted (the waypoint's address).
    pub local_addr: SocketAddr,
    /// The CONNECT `:authority`: the original destination the caller addressed.
    pub authority: String,
    /// The client address from the `forwarded: for=` header, when the caller sent one.
    pub forwarded_for: Option<SocketAddr>,
    /// Whether a request's head has been received and the request is not finished yet.
    in_request: AtomicBool,
    /// Request heads received so far.
    heads: AtomicU64,
    /// A request head refused before the proxy's hooks saw a request, if one was.
    refused: OnceLock<RefusedHead>,
}

/// A request head answered before the proxy's hooks had a request: by the tunnel (431, over
/// the wire bound), or by Pingora (400, a head it could not read). Pingora closes the
/// connection after either, so a tunnel has at most one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedHead {
    pub status: u16,
    /// Why, for the access log.
    pub detail: String,
}

impl TunnelInfo {
    pub fn new(
        peer_identity: Identity,
        peer_addr: SocketAddr,
        local_addr: SocketAddr,
        authority: String,
        forwarded_for: Option<SocketAddr>,
    ) -> Self {
        TunnelInfo {
            principal: peer_identity.without_scheme(),
            peer_uri: peer_identity.to_string(),
            peer_identity,
            peer_addr,
            local_addr,
            authority,
            forwarded_for,
            in_request: AtomicBool::new(false),
            heads: AtomicU64::new(0),
            refused: OnceLock::new(),
        }
    }

    /// The proxy has a request's head: the request-headers timeout stops.
    pub fn head_received(&self) {
        self.heads.fetch_add(1, Ordering::AcqRel);
        self.in_request.store(true, Ordering::Release);
    }

    /// The request is finished: the next bytes start the next head (and its timeout).
    pub fn request_done(&self) {
        self.in_request.store(false, Ordering::Release);
    }

    /// Where the caller is: the heads received so far, and whether a request is in flight.
    fn head_phase(&self) -> HeadPhase {
        HeadPhase {
            heads: self.heads.load(Ordering::Acquire),
            in_request: self.in_request.load(Ordering::Acquire),
        }
    }

    /// The request head refused before the proxy's hooks saw a request, if one was (such a
    /// request is reported once the tunnel closes).
    pub fn refused_head(&self) -> Option<&RefusedHead> {
        self.refused.get()
    }

    fn refuse_head(&self, status: u16, detail: String) {
        let _ = self.refused.set(RefusedHead { status, detail });
    }

    /// The address of the original client: `forwarded for=` when given, else the tunnel peer.
    pub fn client_addr(&self) -> SocketAddr {
        self.forwarded_for.unwrap_or(self.peer_addr)
    }
}

/// Reads the tunnel info back from a Pingora connection digest (shared by every request of
/// the tunnel: cloning it is a reference count).
pub fn tunnel_info(digest: Option<&pingora_core::protocols::Digest>) -> Option<&Arc<TunnelInfo>> {
    digest?
        .proxy_digest
        .as_ref()?
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<TunnelInfo>>()
}

static NEXT_ID: AtomicI32 = AtomicI32::new(1);

/// A tunnel byte stream that Pingora can serve HTTP on.
pub struct TunnelIo<S> {
    inner: S,
    sniffed: BytesMut,
    /// Whether the caller opened with the HTTP/2 preface (then its reads are never gated or
    /// timed here).
    http2: bool,
    info: Arc<TunnelInfo>,
    head_guard: HeadGuard,
    /// Bytes of [`HEAD_TOO_LARGE`] written, once the caller's head went over its bound.
    refusal_written: Option<usize>,
    id: UniqueIDType,
    proxy_digest: Arc<ProxyDigest>,
    socket_digest: Arc<SocketDigest>,
    /// When the waypoint drains, an HTTP/1.1 caller between requests is closed (read ends)
    /// rather than kept alive, so the drain need not wait for it.
    drain: Option<Box<Drain>>,
}

/// An HTTP/1.1 caller's part in the waypoint's drain.
struct Drain {
    /// Resolves when the drain begins.
    begun: Pin<Box<WaitForCancellationFutureOwned>>,
    /// How long a caller found between requests may still send one.
    grace: Duration,
    /// Armed when the caller is first found between requests during the drain.
    closes: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drain {
    /// Whether a caller between requests is to be closed now; registers `cx` to be woken
    /// when it is.
    fn closes_idle_caller(&mut self, cx: &mut Context<'_>) -> bool {
        if self.begun.as_mut().poll(cx).is_pending() {
            return false;
        }
        let grace = self.grace;
        let closes = self
            .closes
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(grace)));
        closes.as_mut().poll(cx).is_ready()
    }
}

/// Where an HTTP/1.1 caller is between its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeadPhase {
    heads: u64,
    in_request: bool,
}

/// What an HTTP/1.1 caller may spend on one request head: how long once its first bytes
/// arrived, and how many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadBounds {
    /// The whole head must follow its first bytes within this (slowloris).
    pub timeout: Duration,
    /// Bytes of one head, request line and line ends included; past them the caller is
    /// answered 431 at once, without reading the rest.
    pub max_bytes: usize,
}

/// The request-head guard of an HTTP/1.1 caller: once the first bytes of a request arrive,
/// its whole head must follow within the timeout, however slowly each byte comes, and within
/// the byte bound, however fast. Between requests the keep-alive timeout applies instead
/// (Pingora's, per read). The head is over once the proxy has it ([`TunnelInfo::head_received`]).
struct HeadGuard {
    bounds: HeadBounds,
    /// The head after `heads` heads, once its first bytes were read.
    current: Option<HeadInProgress>,
    /// Wakes a read waiting on the rest of a head at its deadline; armed only when a head
    /// is incomplete and the caller is silent (a head that comes whole needs no timer).
    clock: Option<Pin<Box<tokio::time::Sleep>>>,
}

struct HeadInProgress {
    heads: u64,
    deadline: Instant,
    bytes: usize,
}

/// What the guard says of the head under way.
#[derive(Debug, PartialEq, Eq)]
enum HeadCheck {
    /// Read on, at most this many bytes (`None`: no head under way, no bound).
    Read(Option<usize>),
    Late,
    TooLarge,
}

impl HeadGuard {
    fn new(bounds: HeadBounds) -> Self {
        HeadGuard {
            bounds,
            current: None,
            clock: None,
        }
    }

    /// Whether the head under way may go on, and how many more bytes it may take. One byte
    /// past the bound is let through, so that a head that needs it is known to be over.
    fn check(&mut self, phase: HeadPhase) -> HeadCheck {
        if phase.in_request {
            self.current = None;
            return HeadCheck::Read(None);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|h| h.heads != phase.heads)
        {
            // That head arrived; this is the next one's phase.
            self.current = None;
        }
        let Some(head) = self.current.as_ref() else {
            return HeadCheck::Read(Some(self.bounds.max_bytes + 1));
        };
        if head.bytes > self.bounds.max_bytes {
            return HeadCheck::TooLarge;
        }
        if Instant::now() >= head.deadline {
            return HeadCheck::Late;
        }
        HeadCheck::Read(Some(self.bounds.max_bytes + 1 - head.bytes))
    }

    /// Counts `n` bytes just read outside a request: they belong to the next head, whose
    /// clock starts with the first of them.
    fn on_read(&mut self, phase: HeadPhase, n: usize) {
        if phase.in_request || n == 0 {
            return;
        }
        let timeout = self.bounds.timeout;
        let head = self.current.get_or_insert_with(|| HeadInProgress {
            heads: phase.heads,
            deadline: Instant::now() + timeout,
            bytes: 0,
        });
        head.bytes += n;
    }

    /// A read is waiting: when a head is under way, be woken at its deadline. Whether the
    /// deadline has passed already.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(head) = &self.current else {
            return false;
        };
        let deadline = head.deadline.into();
        let clock =
            (self.clock).get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if clock.deadline() != deadline {
            clock.as_mut().reset(deadline);
        }
        clock.as_mut().poll(cx).is_ready()
    }
}

/// What a caller whose head is over [`HeadBounds::max_bytes`] is told before its tunnel is
/// closed (the rest of the head is never read).
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
content-type: text/plain\r\ncontent-length: 27\r\nconnection: close\r\n\r\n\
request headers too large\r\n";

impl<S> TunnelIo<S> {
    /// `head`: what an HTTP/1.1 caller may spend on each request head.
    pub fn new(inner: S, info: TunnelInfo, head: HeadBounds) -> Self {
        let socket_digest = SocketDigest::from_raw_fd(-1);
        let _ = socket_digest.peer_addr.set(Some(info.client_addr().into()));
        let _ = socket_digest.local_addr.set(Some(info.local_addr.into()));
        let connected = ResponseHeader::build(200, None).expect("200 is a valid status");
        let info = Arc::new(info);
        let proxy_digest = ProxyDigest::new(Box::new(connected), Some(Box::new(info.clone())));
        TunnelIo {
            inner,
            sniffed: BytesMut::new(),
            http2: false,
            info,
            head_guard: HeadGuard::new(head),
            refusal_written: None,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            proxy_digest: Arc::new(proxy_digest),
            socket_digest: Arc::new(socket_digest),
            drain: None,
        }
    }

    /// What the waypoint knows about the tunnel (shared with every request on it).
    pub fn info(&self) -> &Arc<TunnelInfo> {
        &self.info
    }

    /// Ends an HTTP/1.1 caller's keep-alive connection once `drain` is cancelled and the
    /// caller has stayed between requests for `grace`: no request is cut, a caller already
    /// sending its next request is served (and told `connection: close`, as Pingora answers
    /// during a shutdown), and no idle connection holds the drain for longer than `grace`.
    pub fn closing_when_drained(mut self, drain: CancellationToken, grace: Duration) -> Self {
        self.drain = Some(Box::new(Drain {
            begun: Box::pin(drain.cancelled_owned()),
            grace,
            closes: None,
        }));
        self
    }

    /// Whether the caller is between requests (none under way, no byte of the next) and the
    /// drain's grace for it is over; registers for the drain and the grace otherwise.
    fn drained_while_idle(&mut self, phase: HeadPhase, cx: &mut Context<'_>) -> bool {
        let idle = !phase.in_request && self.head_guard.current.is_none();
        let drain = self.drain.as_mut();
        idle && drain.is_some_and(|drain| drain.closes_idle_caller(cx))
    }
}

impl<S: AsyncRead + Unpin> TunnelIo<S> {
    /// Reads until the buffered prefix either holds `want` bytes, stops matching the HTTP/2
    /// preface, or the stream ends. Bytes stay buffered for the next reads.
    async fn sniff(&mut self, want: usize) -> io::Result<()> {
        while self.sniffed.len() < want && H2_PREFACE.starts_with(&self.sniffed) {
            let mut chunk = [0u8; 64];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            self.sniffed.extend_from_slice(&chunk[..n]);
        }
        self.http2 = self.sniffed.starts_with(H2_PREFACE);
        Ok(())
    }
}

impl<S> fmt::Debug for TunnelIo<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelIo").field("id", &self.id).finish()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TunnelIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.http2 {
            return this.read_bytes(cx, buf);
        }
        let phase = this.info.head_phase();
        let most = match this.head_guard.check(phase) {
            HeadCheck::Read(most) => most,
            HeadCheck::Late => {
                let timeout = this.head_guard.bounds.timeout;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("request headers not received within {timeout:?}"),
                )));
            }
            HeadCheck::TooLarge => return this.poll_refuse_head(cx),
        };
        let read = match most {
            Some(most) if most < buf.remaining() => {
                // Only while a head has grown close to its bound: a read never takes more
                // than the bound allows, so the bytes after a head that fits are not counted.
                let mut limited = ReadBuf::new(buf.initialize_unfilled_to(most));
                let read = this.read_bytes(cx, &mut limited);
                let n = limited.filled().len();
                buf.advance(n);
                read.map_ok(|()| n)
            }
            _ => {
                let before = buf.filled().len();
                let read = this.read_bytes(cx, buf);
                read.map_ok(|()| buf.filled().len() - before)
            }
        };
        let n = match read {
            Poll::Ready(n) => n?,
            Poll::Pending if this.head_guard.poll_deadline(cx) => {
                // Late already: read again to be told.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Nothing came, and the waypoint drains: end of the caller's requests.
            Poll::Pending if this.drained_while_idle(phase, cx) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        };
        this.head_guard.on_read(phase, n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> TunnelIo<S> {
    /// Answers 431 straight into the tunnel, then fails the read: Pingora closes the
    /// connection without reading the rest of the head.
    fn poll_refuse_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let written = self.refusal_written.get_or_insert(0);
        while *written < HEAD_TOO_LARGE.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &HEAD_TOO_LARGE[*written..])
            )?;
            if n == 0 {
                break;
            }
            *written += n;
        }
        std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        let max = self.head_guard.bounds.max_bytes;
        self.info
            .refuse_head(431, format!("request head over {max} bytes"));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request head over {max} bytes"),
        )))
    }
}

impl<S: AsyncRead + Unpin> TunnelIo<S> {
    /// The sniffed bytes first, then the tunnel's.
    fn read_bytes(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.sniffed.is_empty() {
            let n = self.sniffed.len().min(buf.remaining());
            buf.put_slice(&self.sniffed[..n]);
            self.sniffed.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TunnelIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // An HTTP/1.1 answer with no request in flight is Pingora's own, to a head it could
        // not read (it then closes the connection): noted, for the request to be reported.
        if !self.http2
            && let Some(status) = status_of(buf)
            && !self.info.head_phase().in_request
            && self.info.refused.get().is_none()
        {
            let detail = "request head the proxy could not read".to_string();
            self.info.refuse_head(status, detail);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: AsyncWrite + Unpin + Send> Shutdown for TunnelIo<S> {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl<S> UniqueID for TunnelIo<S> {
    fn id(&self) -> UniqueIDType {
        self.id
    }
}

/// The status of an HTTP/1.x response whose head starts `bytes`.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    let code = std::str::from_utf8(code).ok()?.parse().ok()?;
    (100..600).contains(&code).then_some(code)
}

/// The tunnel's TLS belongs to the HBONE layer; the inner protocol is cleartext (h1 or h2c).
impl<S> Ssl for TunnelIo<S> {}

impl<S> GetTimingDigest for TunnelIo<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl<S> GetProxyDigest for TunnelIo<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        Some(self.proxy_digest.clone())
    }
}

impl<S> GetSocketDigest for TunnelIo<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket_digest.clone())
    }
}

#[async_trait]
impl<S: AsyncRead + Unpin + Send> Peek for TunnelIo<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.sniff(buf.len()).await?;
        let n = self.sniffed.len().min(buf.len());
        buf[..n].copy_from_slice(&self.sniffed[..n]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_of_a_response_head() {
        assert_eq!(status_of(b"HTTP/1.1 400 Bad Request\r\n"), Some(400));
        assert_eq!(status_of(b"HTTP/1.0 431 "), Some(431));
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
        assert_eq!(status_of(b"HTTP/1.1 abc"), None);
        assert_eq!(status_of(b"HTTP/1.1 999 "), None);
        assert_eq!(status_of(b"0\r\n\r\n"), None);
    }

    const BOUNDS: HeadBounds = HeadBounds {
        timeout: Duration::from_secs(10),
        max_bytes: 1 << 10,
    };

    fn info() -> TunnelInfo {
        TunnelInfo::new(
            Identity::new("cluster.local", "default", "sleep"),
            "127.0.1.12:40000".parse().expect("addr"),
            "127.0.2.20:15008".parse().expect("addr"),
            "127.0.100.12:9080".into(),
            None,
        )
    }

    #[tokio::test]
    async fn peek_detects_h2_preface_and_replays_it() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(H2_PREFACE).await.expect("write");
        client.write_all(b"rest").await.expect("write");
        let mut io = TunnelIo::new(server, info(), BOUNDS);
        let mut peeked = [0u8; 24];
        assert!(io.try_peek(&mut peeked).await.expect("peek"));
        assert_eq!(&peeked[..], H2_PREFACE);
        let mut all = vec![0u8; 28];
        io.read_exact(&mut all).await.expect("read");
        assert_eq!(&all[..24], H2_PREFACE);
        assert_eq!(&all[24..], b"rest");
    }

    #[tokio::test]
    async fn peek_stops_at_first_byte_of_http1_without_waiting_for_more() {
        let (mut client, server) = tokio::io::duplex(1024);
        // A short HTTP/1.1 request: fewer bytes than the preface; the peek must not block.
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut io = TunnelIo::new(server, info(), BOUNDS);
        let mut peeked = [0u8; 24];
        assert!(io.try_peek(&mut peeked).await.expect("peek"));
        assert_ne!(&peeked[..], H2_PREFACE);
        let mut line = vec![0u8; 18];
        io.read_exact(&mut line).await.expect("read");
        assert_eq!(&line, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// Draining ends an idle caller's reads (EOF) after the grace, never a head under way,
    /// and a caller that sends within the grace is read.
    #[tokio::test]
    async fn a_drain_closes_callers_between_requests_only() {
        const GRACE: Duration = Duration::from_millis(200);
        let drain = CancellationToken::new();
        let draining =
            |io| TunnelIo::new(io, info(), BOUNDS).closing_when_drained(drain.clone(), GRACE);
        let (_idle_client, idle) = tokio::io::duplex(1024);
        let mut idle = draining(idle);
        let (mut busy_client, busy) = tokio::io::duplex(1024);
        let mut busy = draining(busy);
        let (mut late_client, late) = tokio::io::duplex(1024);
        let mut late = draining(late);
        let late_read = tokio::spawn(async move {
            let mut chunk = [0u8; 64];
            late.read(&mut chunk).await
        });
        busy_client.write_all(b"GET / HT").await.expect("write");
        let mut chunk = [0u8; 64];
        assert_eq!(busy.read(&mut chunk).await.expect("read"), 8, "half a head");
        let waiting = tokio::spawn(async move {
            let mut chunk = [0u8; 64];
            idle.read(&mut chunk).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "an idle caller is kept until the drain"
        );
        let began = Instant::now();
        drain.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        late_client.write_all(b"GET /").await.expect("write");
        assert_eq!(
            late_read.await.expect("join").expect("read"),
            5,
            "a request sent within the grace is read"
        );
        let ended = waiting.await.expect("join").expect("read");
        assert_eq!(ended, 0, "drained: end of stream");
        assert!(began.elapsed() >= GRACE, "not before the grace is over");
        // The caller with a head under way is read on.
        let rest = busy.read(&mut chunk);
        busy_client
            .write_all(b"TP/1.1\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(rest.await.expect("read"), 10);
    }

    #[tokio::test]
    async fn a_head_over_its_bound_is_answered_431_without_reading_the_rest() {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let head = format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {}", "a".repeat(4000));
        client.write_all(head.as_bytes()).await.expect("write");
        let mut io = TunnelIo::new(server, info(), BOUNDS);
        let mut read = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let error = loop {
            match io.read(&mut chunk).await {
                Ok(n) => read.extend_from_slice(&chunk[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert_eq!(
            read.len(),
            BOUNDS.max_bytes + 1,
            "one byte past the bound, no more"
        );
        let mut answer = vec![0u8; HEAD_TOO_LARGE.len()];
        client.read_exact(&mut answer).await.expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 431 "));
    }

    #[tokio::test]
    async fn the_bound_counts_each_head_and_never_the_body_after_it() {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let head = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3000\r\n\r\n";
        client.write_all(head).await.expect("write");
        client.write_all(&[b'b'; 3000]).await.expect("write");
        let mut io = TunnelIo::new(server, info(), BOUNDS);
        let mut read = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let n = io.read(&mut chunk).await.expect("head");
        assert_eq!(
            n,
            BOUNDS.max_bytes + 1,
            "a read in a head takes no more than its bound"
        );
        read.extend_from_slice(&chunk[..n]);
        // The proxy parsed the head: the body is read without a bound.
        io.info.head_received();
        while read.len() < head.len() + 3000 {
            let n = io.read(&mut chunk).await.expect("body");
            read.extend_from_slice(&chunk[..n]);
        }
        io.info.request_done();
        // The next head starts its own count.
        client.write_all(&[b'c'; 1000]).await.expect("write");
        let n = io.read(&mut chunk).await.expect("next head");
        assert_eq!(n, 1000);
    }

    #[test]
    fn digest_carries_tunnel_info_and_client_address() {
        let mut tunnel = info();
        tunnel.forwarded_for = Some("127.0.1.12:5555".parse().expect("addr"));
        let (_, server) = tokio::io::duplex(16);
        let io = TunnelIo::new(server, tunnel, BOUNDS);
        let digest = pingora_core::protocols::Digest {
            ssl_digest: None,
            timing_digest: Vec::new(),
            proxy_digest: io.get_proxy_digest(),
            socket_digest: io.get_socket_digest(),
        };
        let found = tunnel_info(Some(&digest)).expect("tunnel info");
        assert_eq!(found.authority, "127.0.100.12:9080");
        assert_eq!(found.peer_identity.service_account, "sleep");
        assert_eq!(found.principal, "cluster.local/ns/default/sa/sleep");
        let peer = digest.socket_digest.as_ref().and_then(|s| s.peer_addr());
        assert_eq!(
            peer.map(|a| a.to_string()),
            Some("127.0.1.12:5555".to_string())
        );
    }
}
