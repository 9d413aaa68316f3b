//! An attacker's raw bytes through the mesh: a TCP stream through a pod's SOCKS5 entry, the
//! HTTP/1.1 answers it gets, and the few HTTP/2 frames the h2 attacks are made of.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

/// A plain TCP stream to `host:port` through the SOCKS5 entry at `socks`.
pub async fn tunnel(socks: SocketAddr, host: &str, port: u16) -> anyhow::Result<TcpStream> {
    let stream = Socks5Stream::connect(socks, (host, port))
        .await
        .with_context(|| format!("SOCKS5 {socks} → {host}:{port}"))?;
    Ok(stream.into_inner())
}

/// Writes `bytes` and reads until the peer closes or `wait` passes; returns what was read and
/// whether the peer closed.
pub async fn exchange(
    stream: &mut TcpStream,
    bytes: &[u8],
    wait: Duration,
) -> anyhow::Result<(Vec<u8>, bool)> {
    stream.write_all(bytes).await?;
    read_until_closed(stream, wait).await
}

/// Reads until the peer closes (or resets) or `wait` passes.
pub async fn read_until_closed(
    stream: &mut TcpStream,
    wait: Duration,
) -> anyhow::Result<(Vec<u8>, bool)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Ok((seen, false)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok((seen, true)),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status codes of the HTTP/1.1 responses in `bytes`, in order.
pub fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// HTTP/2 frames, written by hand: the attacks are frames no well-behaved client sends.
pub mod h2 {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("frame fits");
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The connection preface and an empty SETTINGS frame.
    pub fn start() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    /// HPACK for `GET http://<authority>/` from the static table, authority as a literal.
    pub fn get_block(authority: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x01];
        block.push(u8::try_from(authority.len()).expect("short authority"));
        block.extend_from_slice(authority.as_bytes());
        block
    }

    /// A literal header `name: value` (new name, not indexed), HPACK integers in full.
    pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
        literal_with(0x00, name, value)
    }

    /// A literal header `name: value` added to the dynamic table (index 62 afterwards).
    pub fn indexed_literal(name: &str, value: &[u8]) -> Vec<u8> {
        literal_with(0x40, name, value)
    }

    /// A literal header with a new name, after the representation byte `kind` (RFC 7541 §6.2).
    fn literal_with(kind: u8, name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        integer(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value);
        out
    }

    /// HPACK integer (RFC 7541 §5.1) with a `prefix`-bit prefix after `first`'s high bits.
    fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    /// How the server ended the connection, if it did.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Ending {
        GoAway(u32),
        Closed,
        StillOpen,
    }

    /// Reads frames until a GOAWAY, the end of the stream, or `wait`; with `until_reset`, also
    /// until the first RST_STREAM. Counts RST_STREAMs.
    pub async fn read_until_goaway(
        stream: &mut (impl AsyncReadExt + Unpin),
        wait: Duration,
        until_reset: bool,
    ) -> (Ending, u32) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut resets = 0;
        loop {
            let mut head = [0u8; 9];
            match tokio::time::timeout_at(deadline, stream.read_exact(&mut head)).await {
                Err(_) => return (Ending::StillOpen, resets),
                Ok(Err(_)) => return (Ending::Closed, resets),
                Ok(Ok(_)) => {}
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            match tokio::time::timeout_at(deadline, stream.read_exact(&mut payload)).await {
                Err(_) => return (Ending::StillOpen, resets),
                Ok(Err(_)) => return (Ending::Closed, resets),
                Ok(Ok(_)) => {}
            }
            match head[3] {
                GOAWAY if payload.len() >= 8 => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
                    return (Ending::GoAway(code), resets);
                }
                RST_STREAM => {
                    resets += 1;
                    if until_reset {
                        return (Ending::StillOpen, resets);
                    }
                }
                _ => {}
            }
        }
    }
}
