//! Byte splicing that ends a connection nobody has used for a while (an idle tunnel), as
//! Envoy's TCP proxy `idle_timeout` does (1 h by default).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a splice ended.
#[derive(Debug)]
pub enum Spliced {
    /// Both directions ended: bytes copied from `a` to `b`, and from `b` to `a`.
    Done(u64, u64),
    /// Nothing moved either way for the idle timeout; both sides are dropped.
    Idle,
    Failed(io::Error),
}

/// Copies both ways between `a` and `b` (as `tokio::io::copy_bidirectional`) and gives up
/// once no byte has moved in either direction for `idle`.
pub async fn splice_until_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut watched = Watched {
        inner: a,
        started,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut watched, b);
    tokio::pin!(copy);
    let check_every = (idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            copied = &mut copy => return match copied {
                Ok((from_a, from_b)) => Spliced::Done(from_a, from_b),
                Err(e) => Spliced::Failed(e),
            },
            () = tokio::time::sleep(check_every) => {
                let since_start = Duration::from_millis(last.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(since_start) >= idle {
                    return Spliced::Idle;
                }
            }
        }
    }
}

/// `inner`, recording when bytes last moved through it (ms since `started`).
struct Watched<'a, T: ?Sized> {
    inner: &'a mut T,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<T: ?Sized> Watched<'_, T> {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut *self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.inner).poll_write(cx, data))?;
        if n > 0 {
            self.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_while_used_and_gives_up_when_idle() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let splice = tokio::spawn(async move {
            splice_until_idle(&mut a, &mut b, Duration::from_millis(200)).await
        });
        // Traffic more often than the idle timeout keeps it open.
        for _ in 0..5 {
            client.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.expect("read");
            server.write_all(b"pong").await.expect("write");
            client.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"pong");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ended = tokio::time::timeout(Duration::from_secs(2), splice)
            .await
            .expect("ended when idle")
            .expect("task");
        assert!(matches!(ended, Spliced::Idle), "{ended:?}");
    }

    #[tokio::test]
    async fn a_finished_exchange_reports_its_byte_counts() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let splice = tokio::spawn(async move {
            splice_until_idle(&mut a, &mut b, Duration::from_secs(60)).await
        });
        client.write_all(b"hello").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        server.write_all(b"bye!!!").await.expect("write");
        server.shutdown().await.expect("shutdown");
        drop(server);
        let ended = splice.await.expect("task");
        assert!(matches!(ended, Spliced::Done(5, 6)), "{ended:?}");
    }
}
