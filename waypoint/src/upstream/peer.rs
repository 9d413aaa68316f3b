//! The Pingora peer for one upstream request.

use std::time::Duration;

use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;

use mesh_config::ServicePort;

use super::egress::EgressTarget;

/// How long the CONNECT exchange with the egress (which includes the HBONE dial) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle pooled upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How many idle upstream connections the waypoint keeps, across all endpoints. Pingora's
/// default (128) is below the concurrency a waypoint serves: every burst wider than the pool
/// closed the difference and reopened it on the next (965 upstream streams for 2,000
/// requests from 200 callers; about 210 with this pool). Idle ones still go after [`IDLE_TIMEOUT`].
pub const KEEPALIVE_POOL_SIZE: usize = 4096;

/// Concurrent requests on one upstream HTTP/2 connection (Pingora's default is 1: a connection
/// per concurrent request). Each connection is one HBONE tunnel, whose flow-control window its
/// streams share, so this stays well below the backend's usual limit (100).
const H2_STREAMS_PER_CONNECTION: usize = 32;

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

impl UpstreamProtocol {
    /// What a Service port declares its backends speak: `appProtocol` when it names an HTTP
    /// protocol, else Istio's port-name convention (`<protocol>[-<suffix>]`). `None` when the
    /// port declares no HTTP protocol: then the backend is spoken to as the caller speaks.
    pub fn declared_by(port: &ServicePort) -> Option<Self> {
        let by_name = port
            .name
            .as_deref()
            .map(|n| n.split('-').next().unwrap_or(n));
        let by_app = port.app_protocol.as_deref();
        by_app
            .and_then(Self::from_protocol)
            .or_else(|| by_name.and_then(Self::from_protocol))
    }

    fn from_protocol(protocol: &str) -> Option<Self> {
        match protocol.to_ascii_lowercase().as_str() {
            "http" | "grpc-web" | "kubernetes.io/http" => Some(Self::Http1),
            "http2" | "grpc" | "h2c" | "kubernetes.io/h2c" => Some(Self::Http2),
            _ => None,
        }
    }
}

/// A CONNECT-proxy peer through the egress at `egress_socket` to `target`. The target travels
/// in the proxy headers, which are part of Pingora's pool key, so connections to different
/// endpoints or identities never mix.
pub fn http_peer(
    egress_socket: &str,
    target: &EgressTarget,
    protocol: UpstreamProtocol,
    stream_idle_timeout: Duration,
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
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        peer.group_key = H2_POOL;
    }
    peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.idle_timeout = Some(IDLE_TIMEOUT);
    // A backend that goes silent mid-request (stopped, wedged) ends the request with 504 UT
    // after this long without a byte either way, instead of holding the caller forever.
    peer.options.read_timeout = Some(stream_idle_timeout);
    peer.options.write_timeout = Some(stream_idle_timeout);
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::TargetPort;

    fn port(name: Option<&str>, app_protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            port: 80,
            target_port: TargetPort::Number(8080),
            app_protocol: app_protocol.map(str::to_string),
        }
    }

    #[test]
    fn services_declare_the_backend_protocol() {
        use UpstreamProtocol::{Http1, Http2};
        let declared = |name, app| UpstreamProtocol::declared_by(&port(name, app));
        assert_eq!(declared(Some("http"), None), Some(Http1));
        assert_eq!(declared(Some("http-web"), None), Some(Http1));
        assert_eq!(declared(Some("grpc"), None), Some(Http2));
        assert_eq!(declared(Some("grpc-api"), None), Some(Http2));
        assert_eq!(declared(Some("http2"), None), Some(Http2));
        assert_eq!(declared(Some("grpc-web"), None), Some(Http2), "prefix grpc");
        assert_eq!(declared(None, Some("grpc-web")), Some(Http1));
        assert_eq!(
            declared(Some("http"), Some("kubernetes.io/h2c")),
            Some(Http2)
        );
        assert_eq!(
            declared(Some("grpc"), Some("HTTP")),
            Some(Http1),
            "appProtocol wins"
        );
        assert_eq!(
            declared(Some("http"), Some("mysql")),
            Some(Http1),
            "then the name"
        );
        assert_eq!(declared(Some("web"), None), None);
        assert_eq!(declared(Some("tcp"), None), None);
        assert_eq!(declared(None, None), None);
    }
}
