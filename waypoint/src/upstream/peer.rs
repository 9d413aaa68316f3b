//! The Pingora peer for one upstream request.

use std::time::Duration;

use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;

use super::egress::EgressTarget;

/// How long the CONNECT exchange with the egress (which includes the HBONE dial) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle pooled upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Pool group of upstream connections that speak HTTP/2 (ALPN is not part of Pingora's pool
/// key; `group_key` is).
const H2_POOL: u64 = 2;

/// The protocol spoken to the backend inside the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// h2c, for gRPC trailers and streaming.
    Http2,
}

/// A CONNECT-proxy peer through the egress at `egress_socket` to `target`. The target travels
/// in the proxy headers, which are part of Pingora's pool key, so connections to different
/// endpoints or identities never mix.
pub fn http_peer(
    egress_socket: &str,
    target: &EgressTarget,
    protocol: UpstreamProtocol,
) -> HttpPeer {
    let mut peer = HttpPeer::new_proxy(
        egress_socket,
        target.authority.ip(),
        target.authority.port(),
        false,
        "",
        target.proxy_headers(),
    );
    if protocol == UpstreamProtocol::Http2 {
        // Through a CONNECT-proxy peer, h2c needs exactly ALPN::H2 (H2H1 falls back to 1.1).
        peer.options.alpn = ALPN::H2;
        peer.group_key = H2_POOL;
    }
    peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.idle_timeout = Some(IDLE_TIMEOUT);
    peer
}
