//! Ports with a fixed meaning in an Istio ambient mesh.

/// Admin interface (config dump), bound to localhost.
pub const ADMIN: u16 = 15000;
/// Outbound capture inside a pod's network namespace.
pub const OUTBOUND_CAPTURE: u16 = 15001;
/// Inbound plaintext (no HBONE) capture.
pub const INBOUND_PLAINTEXT: u16 = 15006;
/// HBONE: HTTP/2 CONNECT over mutual TLS, served by every ztunnel and waypoint.
pub const HBONE: u16 = 15008;
/// Prometheus `/metrics`.
pub const METRICS: u16 = 15020;
/// Readiness, `/healthz/ready`.
pub const READINESS: u16 = 15021;
/// SOCKS5 entry for a pod's clients (loopback mode only).
pub const SOCKS5: u16 = 15080;

/// The proxy's own data-plane ports: never a final destination, so traffic cannot loop through
/// the proxy.
pub const PROXY_PORTS: [u16; 4] = [OUTBOUND_CAPTURE, INBOUND_PLAINTEXT, HBONE, SOCKS5];
