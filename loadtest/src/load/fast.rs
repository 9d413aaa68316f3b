//! The fast HTTP/1.1 client (fortio's default; `-stdclient` switches to hyper): the request is
//! serialized once and written in one go, the response head is parsed in place by
//! [`framing`](super::framing) and the body is counted, never stored. No per-request
//! allocation, no channel between the caller and the connection.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framing::{BodyLength, ChunkedBody, FramingError, Head, parse_head};

/// Read buffer per connection; also the largest response head accepted.
const BUFFER_SIZE: usize = 64 * 1024;

/// What a response was, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub code: u16,
    /// Status line and header fields as received, blank line included.
    pub header_bytes: u64,
    pub body_bytes: u64,
    /// Whether the connection can carry the next request.
    pub keep_alive: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FastError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("connection closed before the response was complete")]
    Closed,
    #[error("response head larger than {BUFFER_SIZE} bytes")]
    HeadTooLarge,
}

/// One HTTP/1.1 connection, used for one request at a time.
pub struct FastConnection {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Unused received bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Responses completed on this connection.
    served: u64,
    /// Whether any byte of the current response has arrived.
    receiving: bool,
}

impl FastConnection {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            served: 0,
            receiving: false,
        }
    }

    /// Whether `error` means a reused connection had already been closed by the server when
    /// the request went out (nothing of a response arrived): an idempotent request can be
    /// retried on a new connection, as HTTP clients do.
    pub fn was_stale(&self, error: &FastError) -> bool {
        let closed = match error {
            FastError::Closed => true,
            FastError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        };
        closed && self.served > 0 && !self.receiving
    }

    /// Sends `request` (a complete serialized HTTP/1.1 request) and reads its response to the
    /// end, skipping interim (1xx) responses.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Counted, FastError> {
        self.receiving = false;
        self.stream.write_all(request).await?;
        let head = loop {
            let head = self.read_head().await?;
            self.start += head.len;
            if !head.is_interim() {
                break head;
            }
        };
        let body_bytes = match head.body {
            BodyLength::Empty => 0,
            BodyLength::Exactly(length) => self.count_exactly(length).await?,
            BodyLength::Chunked => self.count_chunked().await?,
            BodyLength::UntilClose => self.count_until_close().await?,
        };
        // Bytes nobody asked for yet mean the stream is out of step: do not reuse it.
        let leftover = self.start < self.end;
        self.start = 0;
        self.end = 0;
        self.served += 1;
        Ok(Counted {
            code: head.code,
            header_bytes: head.len as u64,
            body_bytes,
            keep_alive: head.keep_alive && !leftover,
        })
    }

    async fn read_head(&mut self) -> Result<Head, FastError> {
        loop {
            // Nothing buffered (the usual case right after sending): read before parsing.
            if self.start < self.end
                && let Some(head) = parse_head(&self.buf[self.start..self.end])?
            {
                return Ok(head);
            }
            if self.end == self.buf.len() {
                if self.start == 0 {
                    return Err(FastError::HeadTooLarge);
                }
                self.compact();
            }
            self.fill().await?;
        }
    }

    async fn count_exactly(&mut self, length: u64) -> Result<u64, FastError> {
        let buffered = (self.end - self.start) as u64;
        let mut left = length.saturating_sub(buffered);
        self.start += length.min(buffered) as usize;
        while left > 0 {
            self.start = 0;
            self.end = 0;
            self.fill().await?;
            let take = left.min(self.end as u64);
            self.start = take as usize;
            left -= take;
        }
        Ok(length)
    }

    async fn count_chunked(&mut self) -> Result<u64, FastError> {
        let mut body = ChunkedBody::default();
        let mut data = 0;
        loop {
            let progress = body.feed(&self.buf[self.start..self.end])?;
            self.start += progress.consumed;
            data += progress.data;
            if body.is_done() {
                return Ok(data);
            }
            self.compact();
            if self.end == self.buf.len() {
                return Err(FramingError::Chunk("chunk size or trailer line too long").into());
            }
            self.fill().await?;
        }
    }

    async fn count_until_close(&mut self) -> Result<u64, FastError> {
        let mut size = (self.end - self.start) as u64;
        self.start = self.end;
        loop {
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(size);
            }
            size += n as u64;
        }
    }

    /// Moves the unused bytes to the front of the buffer.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Reads more bytes after `end`; the server closing first is [`FastError::Closed`].
    async fn fill(&mut self) -> Result<(), FastError> {
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(FastError::Closed);
        }
        self.receiving = true;
        self.end += n;
        Ok(())
    }
}
