//! Response bodies of the echo server: a fixed-size payload streamed from one shared static
//! buffer, the request body streamed back, or a small in-memory body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Bytes per frame of a sized payload.
pub const CHUNK: usize = 64 * 1024;

/// The shared payload: printable ASCII, so a body can be eyeballed with curl.
static PAYLOAD: [u8; CHUNK] = payload();

const fn payload() -> [u8; CHUNK] {
    let mut buffer = [0u8; CHUNK];
    let mut i = 0;
    while i < CHUNK {
        buffer[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    buffer
}

/// Exactly `remaining` bytes, sent as `Bytes::from_static` slices of [`PAYLOAD`].
#[derive(Debug)]
pub struct SizedBody {
    remaining: u64,
}

impl SizedBody {
    pub fn new(size: u64) -> Self {
        Self { remaining: size }
    }
}

impl Body for SizedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PAYLOAD[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Every body the echo server sends.
#[derive(Debug)]
pub enum EchoBody {
    Sized(SizedBody),
    Echo(Incoming),
    Full(Full<Bytes>),
    /// A gRPC response: messages and the trailers with its status.
    Grpc(tonic::body::Body),
}

/// Why a response body ended early: the request's body failed, or a gRPC service did.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl EchoBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Sized(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::Echo(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::Full(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Self::Grpc(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Sized(body) => body.is_end_stream(),
            Self::Echo(body) => body.is_end_stream(),
            Self::Full(body) => body.is_end_stream(),
            Self::Grpc(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Sized(body) => body.size_hint(),
            Self::Echo(body) => body.size_hint(),
            Self::Full(body) => body.size_hint(),
            Self::Grpc(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn sized_body_streams_exact_bytes_in_static_chunks() {
        let size = 3 * CHUNK as u64 + 17;
        let mut body = SizedBody::new(size);
        assert_eq!(body.size_hint().exact(), Some(size));
        let mut total = 0u64;
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data frame");
            assert!(data.len() <= CHUNK);
            assert_eq!(
                data.as_ptr(),
                PAYLOAD.as_ptr(),
                "no copy: slices of the static buffer"
            );
            total += data.len() as u64;
            frames += 1;
        }
        assert_eq!(total, size);
        assert_eq!(frames, 4);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn zero_size_is_empty() {
        let body = SizedBody::new(0);
        assert!(body.is_end_stream());
        let collected = body.collect().await.expect("collect").to_bytes();
        assert!(collected.is_empty());
    }
}
