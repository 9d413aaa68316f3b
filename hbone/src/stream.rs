//! One CONNECT tunnel as a byte stream: raw bytes in DATA frames both ways.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::identity::Identity;

/// How long a dropped tunnel keeps draining the peer's data after its END_STREAM, so the data
/// written before the drop is delivered instead of being discarded by a reset.
const LINGER: Duration = Duration::from_secs(10);
/// Largest capacity requested for one write.
const MAX_WRITE: usize = 1 << 20;

struct Halves {
    send: SendStream<Bytes>,
    recv: RecvStream,
}

/// One CONNECT tunnel: `AsyncRead + AsyncWrite + Unpin + Send + Sync`.
///
/// - `poll_shutdown` sends an empty DATA frame with END_STREAM (half-close; reads still work).
/// - The peer's END_STREAM, or RST_STREAM NO_ERROR/CANCEL, reads as EOF; other resets are errors.
/// - Flow-control capacity is released as data is read; writes wait for capacity.
/// - Dropping without shutdown sends a clean END_STREAM (not a reset).
pub struct HboneStream {
    halves: Option<Halves>,
    unread: Bytes,
    read_done: bool,
    write_done: bool,
    peer_identity: Identity,
    peer_addr: SocketAddr,
    _lease: Option<Box<dyn Send + Sync>>,
}

const _: () = {
    const fn assert_traits<T: AsyncRead + AsyncWrite + Unpin + Send + Sync>() {}
    assert_traits::<HboneStream>();
};

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("peer_identity", &self.peer_identity)
            .field("peer_addr", &self.peer_addr)
            .field("read_done", &self.read_done)
            .field("write_done", &self.write_done)
            .finish_non_exhaustive()
    }
}

impl HboneStream {
    /// `lease` is dropped with the stream (the pool uses it to count streams per connection).
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        peer_identity: Identity,
        peer_addr: SocketAddr,
        lease: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        HboneStream {
            halves: Some(Halves { send, recv }),
            unread: Bytes::new(),
            read_done: false,
            write_done: false,
            peer_identity,
            peer_addr,
            _lease: lease,
        }
    }

    /// The SPIFFE identity of the other end (verified during the TLS handshake).
    pub fn peer_identity(&self) -> &Identity {
        &self.peer_identity
    }

    /// The TCP address of the other end of the HBONE connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Ends the tunnel abruptly with RST_STREAM(`reason`) in both directions.
    pub fn abort(mut self, reason: Reason) {
        self.read_done = true;
        self.write_done = true;
        self.halves_mut().send.send_reset(reason);
    }

    fn halves_mut(&mut self) -> &mut Halves {
        self.halves.as_mut().expect("halves are present until drop")
    }

    fn take_unread(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        // Errors only mean the stream is gone; there is nothing left to account for then.
        let _ = self.halves_mut().recv.flow_control().release_capacity(n);
    }

    fn write_error(&mut self, cx: &mut Context<'_>) -> io::Error {
        match self.halves_mut().send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) if reason == Reason::NO_ERROR || reason == Reason::CANCEL => {
                io::Error::new(io::ErrorKind::BrokenPipe, "peer closed the HBONE stream")
            }
            Poll::Ready(Ok(reason)) => io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("HBONE stream reset: {reason}"),
            ),
            Poll::Ready(Err(e)) => h2_to_io(e),
            Poll::Pending => io::Error::new(io::ErrorKind::BrokenPipe, "HBONE stream closed"),
        }
    }
}

/// Whether a read error is the peer ending the stream cleanly.
pub(crate) fn is_clean_end(error: &h2::Error) -> bool {
    error.is_reset() && matches!(error.reason(), Some(Reason::NO_ERROR | Reason::CANCEL))
}

pub(crate) fn h2_to_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error.into_io().expect("is_io was checked");
    }
    let kind = match error.reason() {
        Some(Reason::REFUSED_STREAM) => io::ErrorKind::ConnectionRefused,
        Some(_) => io::ErrorKind::ConnectionReset,
        None => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

impl AsyncRead for HboneStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.unread.is_empty() {
                this.take_unread(buf);
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.halves_mut().recv.poll_data(cx)) {
                Some(Ok(data)) => this.unread = data,
                Some(Err(e)) => {
                    this.read_done = true;
                    return Poll::Ready(if is_clean_end(&e) {
                        Ok(())
                    } else {
                        Err(h2_to_io(e))
                    });
                }
                None => this.read_done = true,
            }
        }
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after HBONE stream shutdown",
            )));
        }
        loop {
            let send = &mut this.halves_mut().send;
            let capacity = send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                if send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .is_err()
                {
                    return Poll::Ready(Err(this.write_error(cx)));
                }
                return Poll::Ready(Ok(n));
            }
            send.reserve_capacity(buf.len().min(MAX_WRITE));
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => return Poll::Ready(Err(this.write_error(cx))),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes queued frames; nothing is held back here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Ok(()));
        }
        this.write_done = true;
        match this.halves_mut().send.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => {
                // Already closed by the peer: a clean end is not an error for a shutdown.
                let error = this.write_error(cx);
                match error.kind() {
                    io::ErrorKind::BrokenPipe => Poll::Ready(Ok(())),
                    _ => Poll::Ready(Err(error)),
                }
            }
        }
    }
}

impl Drop for HboneStream {
    fn drop(&mut self) {
        let Some(mut halves) = self.halves.take() else {
            return;
        };
        if !self.write_done {
            let _ = halves.send.send_data(Bytes::new(), true);
        }
        let _ = halves
            .recv
            .flow_control()
            .release_capacity(self.unread.len());
        if self.read_done || halves.recv.is_end_stream() {
            return;
        }
        // Keep the stream open until the peer ends it (or LINGER passes): dropping both halves
        // now would make h2 reset it with CANCEL and discard DATA still queued for sending.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(halves));
        }
    }
}

async fn linger(halves: Halves) {
    let Halves { send, mut recv } = halves;
    let drain = async {
        while let Some(Ok(data)) = recv.data().await {
            let _ = recv.flow_control().release_capacity(data.len());
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    drop(send);
}
