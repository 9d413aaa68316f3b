//! The protocol the waypoint speaks to a backend inside its tunnel.

use mesh_config::ServicePort;

/// The protocol spoken to the backend inside the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
