//! HTTP/2 settings for HBONE, and the PING keepalive both sides run.
//!
//! Flow control is sized so that no stream can starve the others of its connection: a stream
//! whose reader has stopped (an app that does not read its response) holds at most its own
//! window, and the connection window covers every stream's window at once
//! (`streams × stream window ≤ connection window`). Istio's ztunnel uses 4 MiB streams in a
//! 16 MiB connection with up to 100 streams, so four stalled streams stop every other tunnel
//! sharing the connection; here they cannot. The connection window is also what one peer can
//! make us buffer per connection (16 MiB, as Istio's).
//!
//! - As a client (the pool), we give each stream a window (512 KiB by default,
//!   [`CLIENT_STREAM_WINDOW`]; at most [`MAX_CLIENT_STREAM_WINDOW`]) and open at most
//!   [`client_max_streams`] of them on a connection (32 by default); more tunnels open more
//!   connections. Fewer, larger windows move more per stream; more, smaller ones share a
//!   connection's buffers between more tunnels (what an idle tunnel costs).
//! - As a server, we accept as many streams as Istio's ztunnel opens on one connection
//!   ([`SERVER_MAX_CONCURRENT_STREAMS`], 100) and give each [`SERVER_STREAM_WINDOW`].

use std::time::Duration;

/// Connection flow-control window, both sides.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Default per-stream window of the streams we open (what each response may have in flight).
pub const CLIENT_STREAM_WINDOW: u32 = 512 << 10;
/// The largest per-stream window a pool may choose.
pub const MAX_CLIENT_STREAM_WINDOW: u32 = 1 << 20;
/// Per-stream window of the streams peers open to us (what each upload may have in flight).
pub const SERVER_STREAM_WINDOW: u32 = 160 << 10;
/// Largest frame we accept.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// Header list limit a client accepts (response headers).
pub const CLIENT_MAX_HEADER_LIST: u32 = 16 << 10;
/// Header list limit a server accepts (CONNECT request headers).
pub const SERVER_MAX_HEADER_LIST: u32 = 64 << 10;
/// Streams a server lets one client open at once (Istio's ztunnel opens up to 100).
pub const SERVER_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client opens on one connection at most, whatever its window.
pub const CLIENT_MAX_STREAMS_PER_CONNECTION: usize = 100;

const _: () = assert!(
    SERVER_MAX_CONCURRENT_STREAMS as u64 * SERVER_STREAM_WINDOW as u64 <= CONNECTION_WINDOW as u64
);

/// The window a pool's streams get for a wanted `stream_window`.
pub fn client_stream_window(stream_window: u32) -> u32 {
    stream_window.clamp(1, MAX_CLIENT_STREAM_WINDOW)
}

/// How many streams of `stream_window` fit in one connection's window (at most
/// [`CLIENT_MAX_STREAMS_PER_CONNECTION`]): the most a pool opens on a connection.
pub fn client_max_streams(stream_window: u32) -> usize {
    let fit = CONNECTION_WINDOW / client_stream_window(stream_window);
    usize::try_from(fit).map_or(CLIENT_MAX_STREAMS_PER_CONNECTION, |fit| {
        fit.clamp(1, CLIENT_MAX_STREAMS_PER_CONNECTION)
    })
}
/// PING interval and how long to wait for its PONG.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(SERVER_STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(SERVER_MAX_HEADER_LIST)
        .max_concurrent_streams(SERVER_MAX_CONCURRENT_STREAMS);
    builder
}

/// Streams get [`client_stream_window`]`(stream_window)`.
pub(crate) fn client_builder(stream_window: u32) -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(client_stream_window(stream_window))
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(CLIENT_MAX_HEADER_LIST)
        .enable_push(false);
    builder
}

/// Why a keepalive gave up on its connection.
pub(crate) enum KeepaliveFailure {
    /// No PONG within the timeout.
    Timeout,
    /// The PING could not be sent or the connection failed meanwhile.
    Error(h2::Error),
}

impl std::fmt::Display for KeepaliveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepaliveFailure::Timeout => f.write_str("no PONG in time"),
            KeepaliveFailure::Error(e) => write!(f, "PING failed: {e}"),
        }
    }
}

/// Sends a PING every `interval` and returns when one is not answered within `timeout`.
/// Never returns when there is no ping handle (it was taken already).
pub(crate) async fn keepalive(
    ping_pong: Option<h2::PingPong>,
    interval: Duration,
    timeout: Duration,
) -> KeepaliveFailure {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return KeepaliveFailure::Error(e),
            Err(_) => return KeepaliveFailure::Timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_opens_only_as_many_streams_as_fit_in_the_connection_window() {
        assert_eq!(client_max_streams(CLIENT_STREAM_WINDOW), 32);
        assert_eq!(client_max_streams(256 << 10), 64);
        assert_eq!(
            client_max_streams(4 << 20),
            16,
            "windows are capped at 1 MiB"
        );
        assert_eq!(client_max_streams(1), CLIENT_MAX_STREAMS_PER_CONNECTION);
        for window in [1, 4096, 160 << 10, 512 << 10, 1 << 20, u32::MAX] {
            let streams = client_max_streams(window) as u64;
            assert!(
                streams * u64::from(client_stream_window(window)) <= u64::from(CONNECTION_WINDOW)
            );
        }
    }
}
