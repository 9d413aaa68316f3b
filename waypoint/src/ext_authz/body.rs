//! `includeRequestBodyInCheck`: the request's body read before the check, up to the
//! provider's `maxRequestBytes`. A longer body is answered 413 (before any check, as Envoy
//! does, whatever `failOpen` says), or with `allowPartialMessage` checked by its first
//! `maxRequestBytes`, marked `x-envoy-auth-partial-body: true`. What was read goes on to the
//! upstream first, then the rest as it comes: the body is held once, never twice.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mesh_config::ext_authz::BodyInCheck;
use mesh_core::ResponseFlag;
use pingora_proxy::Session;

use crate::reply::LocalReply;

/// Envoy's header telling an authorizer whether the body it got is only the start.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// The body a check carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckBody {
    pub bytes: Bytes,
    /// Only the body's first `maxRequestBytes`.
    pub partial: bool,
    pub pack_as_bytes: bool,
}

impl CheckBody {
    pub fn partial_text(&self) -> &'static str {
        if self.partial { "true" } else { "false" }
    }
}

/// What reading for a check gave: the chunks read (to be sent on), and the check's body.
pub struct ReadForCheck {
    pub read: Vec<Bytes>,
    pub body: CheckBody,
}

/// Reads `session`'s body for a check, until its end or past `limit.max_bytes`; each read
/// waits at most `idle`.
pub async fn read(
    session: &mut Session,
    limit: BodyInCheck,
    idle: Duration,
) -> Result<ReadForCheck, LocalReply> {
    let max = limit.max_bytes as usize;
    let mut read = Vec::new();
    let mut size = 0;
    let mut ended = session.is_body_empty() || session.is_body_done();
    while !ended && size <= max {
        let chunk = tokio::time::timeout(idle, session.read_request_body()).await;
        match chunk {
            Ok(Ok(Some(chunk))) => {
                size += chunk.len();
                read.push(chunk);
            }
            Ok(Ok(None)) => ended = true,
            Ok(Err(e)) => {
                let why = format!("the request body could not be read for the check: {e}");
                return Err(LocalReply::new(
                    400,
                    ResponseFlag::DownstreamProtocolError,
                    why,
                ));
            }
            Err(_) => {
                let why = "the request body stalled while read for the check";
                return Err(LocalReply::new(408, ResponseFlag::StreamIdleTimeout, why));
            }
        }
    }
    // Not ended, it is over `max`: refused, or cut and partial.
    let body = cut(&read, max, limit)?;
    Ok(ReadForCheck { read, body })
}

/// The check's body from `chunks` (a body of more than `max` bytes is cut to `max` when
/// partial messages are allowed, else refused with 413).
fn cut(chunks: &[Bytes], max: usize, limit: BodyInCheck) -> Result<CheckBody, LocalReply> {
    let size: usize = chunks.iter().map(Bytes::len).sum();
    if size > max && !limit.allow_partial {
        let why = format!("the request body is over the {max} bytes its ext_authz check holds");
        return Err(LocalReply::new(413, ResponseFlag::None, why));
    }
    let mut bytes = BytesMut::with_capacity(size.min(max));
    for chunk in chunks {
        let room = max - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(CheckBody {
        bytes: bytes.freeze(),
        partial: size > max,
        pack_as_bytes: limit.pack_as_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max_bytes: u32, allow_partial: bool) -> BodyInCheck {
        BodyInCheck {
            max_bytes,
            allow_partial,
            pack_as_bytes: false,
        }
    }

    #[test]
    fn bodies_are_held_whole_cut_or_refused() {
        let chunks = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let whole = cut(&chunks, 64, limit(64, false)).expect("fits");
        assert_eq!(
            (&whole.bytes[..], whole.partial),
            (&b"hello world"[..], false)
        );
        let start = cut(&chunks, 8, limit(8, true)).expect("partial allowed");
        assert_eq!((&start.bytes[..], start.partial), (&b"hello wo"[..], true));
        let refused = cut(&chunks, 8, limit(8, false)).expect_err("too long");
        assert_eq!(refused.status, 413);
        assert_eq!(cut(&[], 8, limit(8, false)).expect("empty").bytes.len(), 0);
    }
}
