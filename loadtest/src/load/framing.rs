//! HTTP/1.x response framing for the fast client (pure): where the head ends, how the body is
//! delimited (RFC 9112 §6.3), and a chunked-body decoder that counts data bytes without
//! keeping them. Parsing itself is httparse's (the parser hyper uses).

/// Header fields a response head may carry.
pub const MAX_HEADERS: usize = 128;
/// Header fields tried first: enough for typical responses, and cheap to set up per parse.
const USUAL_HEADERS: usize = 24;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// 1xx, 204 and 304 responses carry none.
    Empty,
    Exactly(u64),
    Chunked,
    /// No length: the body ends when the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub code: u16,
    /// Bytes the status line and header fields took, blank line included.
    pub len: usize,
    pub body: BodyLength,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
}

impl Head {
    /// A 1xx response other than 101: the real response follows on the same connection.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    #[error("conflicting Content-Length values {0} and {1}")]
    ConflictingLengths(u64, u64),
    #[error("unexpected 101 Switching Protocols")]
    SwitchingProtocols,
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
}

/// Parses the head at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, FramingError> {
    match parse_head_with::<USUAL_HEADERS>(buf) {
        Err(FramingError::Head(httparse::Error::TooManyHeaders)) => {
            parse_head_with::<MAX_HEADERS>(buf)
        }
        other => other,
    }
}

fn parse_head_with<const FIELDS: usize>(buf: &[u8]) -> Result<Option<Head>, FramingError> {
    let mut fields = [httparse::EMPTY_HEADER; FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf).map_err(FramingError::Head)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    // A complete parse always has a status code.
    let code = response.code.unwrap_or_default();
    if code == 101 {
        return Err(FramingError::SwitchingProtocols);
    }
    let mut length = None;
    let mut transfer_coding: Option<&[u8]> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for field in response.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = parse_content_length(field.value)?;
            if let Some(first) = length.filter(|first| *first != value) {
                return Err(FramingError::ConflictingLengths(first, value));
            }
            length = Some(value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coding = tokens(field.value).last().or(transfer_coding);
        } else if field.name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body = if (100..200).contains(&code) || code == 204 || code == 304 {
        BodyLength::Empty
    } else if let Some(coding) = transfer_coding {
        // Transfer-Encoding wins over Content-Length; only a final "chunked" delimits.
        if coding.eq_ignore_ascii_case(b"chunked") {
            BodyLength::Chunked
        } else {
            BodyLength::UntilClose
        }
    } else {
        length.map_or(BodyLength::UntilClose, BodyLength::Exactly)
    };
    let http10 = response.version == Some(0);
    let keep_alive = !close && (!http10 || keep_alive_token) && body != BodyLength::UntilClose;
    Ok(Some(Head {
        code,
        len,
        body,
        keep_alive,
    }))
}

fn parse_content_length(value: &[u8]) -> Result<u64, FramingError> {
    let invalid = || FramingError::ContentLength(String::from_utf8_lossy(value).into_owned());
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return Err(invalid());
    }
    digits.iter().try_fold(0u64, |length, byte| {
        let digit = byte
            .checked_sub(b'0')
            .filter(|d| *d <= 9)
            .ok_or_else(invalid)?;
        length
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(digit)))
            .ok_or_else(invalid)
    })
}

/// The non-empty comma-separated tokens of a header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// What one [`ChunkedBody::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input used (framing included).
    pub consumed: usize,
    /// Body data bytes among them.
    pub data: u64,
}

/// Decodes a chunked body incrementally, counting its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedBody {
    state: ChunkState,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedBody {
    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Uses what it can of `input`, stopping when it needs more bytes or the body has ended.
    /// Unused bytes (an incomplete size or trailer line) must be fed again with more after them.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, FramingError> {
        let mut at = 0;
        let mut data = 0u64;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return Err(FramingError::Chunk("invalid chunk size line")),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    data += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(FramingError::Chunk("chunk data not followed by CRLF"));
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    at += end + 2;
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => break,
            }
        }
        Ok(Progress { consumed: at, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes())
            .expect("valid head")
            .expect("complete head")
    }

    #[test]
    fn content_length_and_keep_alive() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nX: y\r\n\r\nbody";
        let h = head(text);
        assert_eq!(h.code, 200);
        assert_eq!(h.len, text.len() - 4);
        assert_eq!(h.body, BodyLength::Exactly(1024));
        assert!(h.keep_alive);
    }

    fn with_fields(count: usize) -> String {
        let mut text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n".to_owned();
        for i in 1..count {
            text.push_str(&format!("x-field-{i}: {i}\r\n"));
        }
        text + "\r\n"
    }

    #[test]
    fn many_header_fields() {
        assert_eq!(head(&with_fields(MAX_HEADERS)).body, BodyLength::Exactly(3));
        assert_eq!(
            parse_head(with_fields(MAX_HEADERS + 1).as_bytes()),
            Err(FramingError::Head(httparse::Error::TooManyHeaders))
        );
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(parse_head(b""), Ok(None));
    }

    #[test]
    fn connection_close_and_http10() {
        let h =
            head("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked to keep alive");
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn body_length_rules() {
        let cases = [
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                BodyLength::Empty,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", BodyLength::Empty),
            ("HTTP/1.1 100 Continue\r\n\r\n", BodyLength::Empty),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
                BodyLength::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                BodyLength::UntilClose,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", BodyLength::UntilClose),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
                BodyLength::Exactly(7),
            ),
        ];
        for (text, body) in cases {
            assert_eq!(head(text).body, body, "{text:?}");
        }
        assert!(
            !head("HTTP/1.1 200 OK\r\n\r\n").keep_alive,
            "read-to-close cannot be reused"
        );
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
    }

    #[test]
    fn bad_heads_are_errors() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"),
            Err(FramingError::ContentLength(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(FramingError::ContentLength(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"),
            Err(FramingError::ContentLength(_))
        ));
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615 \r\n\r\n").body,
            BodyLength::Exactly(u64::MAX)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(FramingError::ConflictingLengths(1, 2))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(FramingError::SwitchingProtocols)
        );
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(FramingError::Head(_))
        ));
    }

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";

    #[test]
    fn chunked_body_in_one_piece() {
        let mut body = ChunkedBody::default();
        let progress = body.feed(CHUNKED).expect("valid");
        assert_eq!(
            progress,
            Progress {
                consumed: CHUNKED.len(),
                data: 31
            }
        );
        assert!(body.is_done());
    }

    #[test]
    fn chunked_body_byte_by_byte_and_at_every_split() {
        for split in 0..=CHUNKED.len() {
            // Feed like a reader does: unused bytes stay and are fed again with the next read.
            let mut body = ChunkedBody::default();
            let mut pending: Vec<u8> = Vec::new();
            let mut data = 0;
            for piece in [&CHUNKED[..split], &CHUNKED[split..]] {
                for byte in piece {
                    pending.push(*byte);
                    let progress = body.feed(&pending).expect("valid");
                    pending.drain(..progress.consumed);
                    data += progress.data;
                }
            }
            assert!(body.is_done(), "split at {split}");
            assert_eq!(data, 31, "split at {split}");
            assert!(pending.is_empty(), "split at {split}");
        }
    }

    #[test]
    fn chunked_body_stops_at_its_end() {
        let mut input = CHUNKED.to_vec();
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut body = ChunkedBody::default();
        assert_eq!(body.feed(&input).expect("valid").consumed, CHUNKED.len());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        assert!(ChunkedBody::default().feed(b"zz\r\n").is_err());
        assert!(ChunkedBody::default().feed(b"2\r\nabX\r\n").is_err());
    }
}
