//! The caller's request body on its way up, for one try after another: read from Pingora's
//! session into the current try's channel (a few chunks at a time, as fast as the upstream
//! takes them), with what was read so far kept for a retry to send again. What was read before
//! (for an ext_authz check that carries the body) goes first.

use std::task::Poll;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use pingora_proxy::Session;
use tokio::sync::mpsc;

use super::client::UpstreamBody;
use super::forward::Failure;

/// Request body chunks in flight between the caller and the upstream connection.
const BODY_CHANNEL: usize = 4;

/// Request body chunks a mirrored copy may fall behind the request before it is cut off.
const MIRROR_CHANNEL: usize = 8;

type BodyFrame = Result<Frame<Bytes>, std::io::Error>;

/// The caller's request body on its way up: read from the session into the current try's
/// channel, with what was read so far kept (up to [`REPLAY_LIMIT`]) for a retry to send again.
pub(super) struct Upload {
    pub(super) had_body: bool,
    tx: Option<mpsc::Sender<Option<Bytes>>>,
    permit: Option<mpsc::OwnedPermit<Option<Bytes>>>,
    replay: Replay,
    /// Read from the caller before the first try, not sent yet.
    pending: Vec<Bytes>,
    /// Mirrored copies still keeping up.
    mirrors: Vec<mpsc::Sender<Option<Bytes>>>,
}

/// Request body bytes kept for a retry (Pingora's and Envoy's default); a larger body is
/// not retried.
pub const REPLAY_LIMIT: usize = 64 << 10;

/// The body read so far, while it is no more than [`REPLAY_LIMIT`].
#[derive(Debug, Default)]
struct Replay {
    chunks: Vec<Bytes>,
    size: usize,
    overflowed: bool,
}

impl Replay {
    fn record(&mut self, chunk: &Bytes) {
        if self.overflowed {
            return;
        }
        self.size += chunk.len();
        if self.size > REPLAY_LIMIT {
            self.overflowed = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(chunk.clone());
        }
    }
}

impl Upload {
    /// `declared_length`: the request's Content-Length; a body declared larger than
    /// [`REPLAY_LIMIT`] is never kept, so it is never retried, however much of it was read
    /// when a try failed. `read`: the body's start, already read from the caller.
    pub(super) fn new(had_body: bool, declared_length: Option<u64>, read: Vec<Bytes>) -> Self {
        let too_large = declared_length.is_some_and(|n| n > REPLAY_LIMIT as u64);
        Upload {
            had_body,
            tx: None,
            permit: None,
            replay: Replay {
                overflowed: too_large,
                ..Replay::default()
            },
            pending: read,
            mirrors: Vec::new(),
        }
    }

    /// The body of a mirrored copy, taken before the request's body is read: each chunk as
    /// the request reads it. A copy more than [`MIRROR_CHANNEL`] chunks behind is cut off (its
    /// body ends in an error), so a mirror never slows the request nor makes it buffer more.
    pub(super) fn mirror_body(&mut self, session: &mut Session) -> UpstreamBody {
        if !self.had_body {
            return Empty::new().map_err(|never| match never {}).boxed();
        }
        let read = frames(self.pending.clone());
        if session.is_body_done() {
            return StreamBody::new(read).boxed();
        }
        let (tx, rx) = mpsc::channel(MIRROR_CHANNEL);
        self.mirrors.push(tx);
        StreamBody::new(futures::StreamExt::chain(read, rest_of_body(rx))).boxed()
    }

    /// Hands a chunk (`None`: the end) to the mirrors that keep up, and drops the others.
    fn tee(&mut self, chunk: Option<&Bytes>) {
        self.mirrors
            .retain(|m| m.try_send(chunk.cloned()).is_ok() && chunk.is_some());
    }

    /// Whether a new try could send the whole body again.
    pub(super) fn replayable(&self) -> bool {
        !self.replay.overflowed
    }

    /// Whether body bytes are still to be read from the caller for the current try.
    pub(super) fn sending(&self) -> bool {
        self.tx.is_some()
    }

    /// The body of a new try: what was read so far, then the rest as it is read.
    pub(super) fn body_for_try(&mut self, session: &mut Session) -> UpstreamBody {
        if !self.had_body {
            return Empty::new().map_err(|never| match never {}).boxed();
        }
        self.permit = None;
        // What earlier tries sent, then what was read before any.
        let mut replayed = self.replay.chunks.clone();
        for chunk in std::mem::take(&mut self.pending) {
            self.replay.record(&chunk);
            replayed.push(chunk);
        }
        let replayed = frames(replayed);
        if session.is_body_done() {
            self.tx = None;
            return StreamBody::new(replayed).boxed();
        }
        let (tx, rx) = mpsc::channel(BODY_CHANNEL);
        self.tx = Some(tx);
        StreamBody::new(futures::StreamExt::chain(replayed, rest_of_body(rx))).boxed()
    }

    /// Moves the body one step: waits for room in the try's channel, or reads a chunk into
    /// it. Cancel-safe: a step interrupted loses nothing.
    pub(super) async fn step(&mut self, session: &mut Session) -> Result<(), Failure> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let Some(permit) = self.permit.take() else {
            match tx.clone().reserve_owned().await {
                Ok(permit) => self.permit = Some(permit),
                // The upstream stopped taking the body (it answered, or went away).
                Err(_) => self.tx = None,
            }
            return Ok(());
        };
        match session.read_request_body().await {
            Ok(Some(data)) => {
                self.replay.record(&data);
                self.tee(Some(&data));
                permit.send(Some(data));
                Ok(())
            }
            Ok(None) => {
                self.tee(None);
                permit.send(None);
                self.tx = None;
                Ok(())
            }
            Err(e) => {
                self.abort();
                Err(Failure::Downstream(e))
            }
        }
    }

    /// Ends the current try's body unfinished, so the upstream sees an aborted request.
    pub(super) fn abort(&mut self) {
        self.permit = None;
        self.tx = None;
    }
}

fn frames(chunks: Vec<Bytes>) -> impl futures::Stream<Item = BodyFrame> + Send + Sync + 'static {
    futures::stream::iter(chunks.into_iter().map(|chunk| Ok(Frame::data(chunk))))
}

/// The body as read into a try's channel: a chunk, or `None` for its end. A channel closed
/// before the end (the try was abandoned) ends the body with an error, so no upstream takes
/// a cut request for a whole one.
fn rest_of_body(
    mut rx: mpsc::Receiver<Option<Bytes>>,
) -> impl futures::Stream<Item = BodyFrame> + Send + Sync + 'static {
    let mut ended = false;
    futures::stream::poll_fn(move |cx| {
        if ended {
            return Poll::Ready(None);
        }
        Poll::Ready(match std::task::ready!(rx.poll_recv(cx)) {
            Some(Some(data)) => Some(Ok(Frame::data(data))),
            Some(None) => {
                ended = true;
                None
            }
            None => {
                ended = true;
                Some(Err(std::io::Error::other("request aborted")))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_buffer_keeps_up_to_64_kib_then_gives_up() {
        let mut replay = Replay::default();
        let chunk = Bytes::from(vec![b'x'; 16 << 10]);
        for _ in 0..4 {
            replay.record(&chunk);
        }
        assert!(!replay.overflowed, "exactly 64 KiB still replays");
        assert_eq!((replay.chunks.len(), replay.size), (4, 64 << 10));
        replay.record(&Bytes::from_static(b"y"));
        assert!(replay.overflowed);
        assert!(replay.chunks.is_empty(), "the kept chunks are freed");
    }

    #[test]
    fn a_body_declared_over_64_kib_is_never_replayable() {
        assert!(
            Upload::new(true, None, Vec::new()).replayable(),
            "chunked: while it fits"
        );
        assert!(Upload::new(true, Some(64 << 10), Vec::new()).replayable());
        assert!(!Upload::new(true, Some((64 << 10) + 1), Vec::new()).replayable());
    }

    #[tokio::test]
    async fn a_body_whose_channel_closes_before_its_end_ends_in_an_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Some(Bytes::from_static(b"a"))).await.expect("send");
        tx.send(None).await.expect("send");
        let whole: Vec<_> = futures::StreamExt::collect(rest_of_body(rx)).await;
        assert_eq!(whole.len(), 1);
        assert!(whole[0].is_ok());
        let (tx, rx) = mpsc::channel(4);
        tx.send(Some(Bytes::from_static(b"a"))).await.expect("send");
        drop(tx);
        let cut: Vec<_> = futures::StreamExt::collect(rest_of_body(rx)).await;
        assert_eq!(cut.len(), 2);
        assert!(cut[1].is_err(), "an abandoned body is not a whole one");
    }
}
