//! HTTP/2 settings as Istio's ztunnel uses them, and the PING keepalive both sides run.

use std::time::Duration;

/// Per-stream flow-control window.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// Connection flow-control window.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest frame we accept.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// Header list limit a client accepts (response headers).
pub const CLIENT_MAX_HEADER_LIST: u32 = 16 << 10;
/// Header list limit a server accepts (CONNECT request headers).
pub const SERVER_MAX_HEADER_LIST: u32 = 64 << 10;
/// Streams a server lets one client open at once.
pub const SERVER_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Streams a client opens on one connection at most.
pub const CLIENT_MAX_STREAMS_PER_CONNECTION: usize = 100;
/// PING interval and how long to wait for its PONG.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(SERVER_MAX_HEADER_LIST)
        .max_concurrent_streams(SERVER_MAX_CONCURRENT_STREAMS);
    builder
}

pub(crate) fn client_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
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
