//! Byte splicing that ends a connection nobody has used for a while (an idle tunnel), as
//! Envoy's TCP proxy `idle_timeout` does (1 h by default).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

/// How a splice ended.
#[derive(Debug)]
pub enum Spliced {
    /// Both directions ended: bytes copied from `a` to `b`, and from `b` to `a`.
    Done(u64, u64),
    /// Nothing moved either way for the idle timeout; both sides are dropped.
    Idle,
    Failed(io::Error),
}

/// Bytes read at most per read. A direction holds a buffer only while its reader has bytes to
/// give, so an idle connection holds none; the buffer is allocated uninitialised (no zeroing),
/// which keeps getting a new one for each burst cheap.
const BUFFER: usize = 16 << 10;

/// Copies both ways between `a` and `b` (as `tokio::io::copy_bidirectional`, each side shut
/// down once the other has ended) and gives up once no byte has moved in either direction
/// for `idle`.
pub async fn splice_until_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = OneWay::default();
    let mut b_to_a = OneWay::default();
    let mut last_moved = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    std::future::poll_fn(|cx| {
        let moved_before = (a_to_b.total, b_to_a.total);
        let forward = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b));
        let backward = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a));
        match (forward, backward) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => {
                return Poll::Ready(Spliced::Failed(e));
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => {
                return Poll::Ready(Spliced::Done(a_to_b.total, b_to_a.total));
            }
            _ => {}
        }
        if (a_to_b.total, b_to_a.total) != moved_before {
            last_moved = Instant::now();
        }
        // The timer is moved only when it fires, not on every byte.
        while timer.as_mut().poll(cx).is_ready() {
            let due = last_moved + idle;
            if due <= Instant::now() {
                return Poll::Ready(Spliced::Idle);
            }
            timer.as_mut().reset(due.into());
        }
        Poll::Pending
    })
    .await
}

/// One direction of a splice.
#[derive(Default)]
struct OneWay {
    /// Bytes read and not yet written; present only while the reader has bytes to give.
    buf: Option<BytesMut>,
    read_done: bool,
    unflushed: bool,
    finished: bool,
    total: u64,
}

impl OneWay {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        loop {
            let unwritten = self.buf.as_ref().is_some_and(|buf| !buf.is_empty());
            if !unwritten && !self.read_done {
                let buf = self
                    .buf
                    .get_or_insert_with(|| BytesMut::with_capacity(BUFFER));
                buf.clear();
                buf.reserve(BUFFER);
                match poll_read_buf(reader.as_mut(), cx, buf) {
                    Poll::Pending => {
                        // Nothing to move now: hold no buffer while waiting.
                        self.buf = None;
                        if self.unflushed {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(0)) => {
                        self.read_done = true;
                        self.buf = None;
                    }
                    Poll::Ready(read) => {
                        read?;
                    }
                }
            }
            while let Some(buf) = self.buf.as_mut().filter(|buf| !buf.is_empty()) {
                let n = ready!(writer.as_mut().poll_write(cx, buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                buf.advance(n);
                self.total += n as u64;
                self.unflushed = true;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.finished = true;
                return Poll::Ready(Ok(()));
            }
        }
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
    async fn a_direction_waiting_for_bytes_holds_no_buffer() {
        let (mut client, mut from) = tokio::io::duplex(1024);
        let mut to = tokio::io::sink();
        let mut one_way = OneWay::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        client.write_all(b"hello").await.expect("write");
        let polled = one_way.poll_copy(&mut cx, Pin::new(&mut from), Pin::new(&mut to));
        assert!(polled.is_pending(), "waits for more");
        assert_eq!(one_way.total, 5);
        assert!(one_way.buf.is_none(), "no buffer held while waiting");
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
