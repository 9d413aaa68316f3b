//! Envoy bootstrap documents for each role, configured fairly (Envoy's benchmarking advice):
//! one worker (set on the command line), circuit breakers out of the way, no request ids, no
//! dynamic stats, stats off, TLS 1.3 only, mutual TLS with SPIFFE identities (pure).

use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use crate::certs::{CertFiles, TRUST_DOMAIN};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const HTTP_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const INTERNAL_LISTENER: &str =
    "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener";
/// Thresholds so high they never trip (Envoy's advice: circuit breakers out of the way).
const UNLIMITED: u64 = 1_000_000_000;

/// ALPN offered on a TLS hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http11,
    H2,
}

impl Alpn {
    fn id(self) -> &'static str {
        match self {
            Alpn::Http11 => "http/1.1",
            Alpn::H2 => "h2",
        }
    }
}

fn socket(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

fn internal_address(listener: &str) -> Value {
    json!({"envoy_internal_address": {"server_listener_name": listener}})
}

fn tls_context(certs: &CertFiles, alpn: Alpn) -> Value {
    json!({
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3"
        },
        "alpn_protocols": [alpn.id()],
        "tls_certificates": [{
            "certificate_chain": {"filename": certs.chain.display().to_string()},
            "private_key": {"filename": certs.key.display().to_string()}
        }],
        "validation_context": {
            "trusted_ca": {"filename": certs.root.display().to_string()},
            "match_typed_subject_alt_names": [{
                "san_type": "URI",
                "matcher": {"prefix": format!("spiffe://{TRUST_DOMAIN}/")}
            }]
        }
    })
}

/// Server side of mutual TLS: the client must present a certificate from the bench root.
pub fn downstream_tls(certs: &CertFiles, alpn: Alpn) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": true,
            "common_tls_context": tls_context(certs, alpn)
        }
    })
}

/// Client side of mutual TLS.
pub fn upstream_tls(certs: &CertFiles, alpn: Alpn) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM_TLS, "common_tls_context": tls_context(certs, alpn)}
    })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": ROUTER, "dynamic_stats": false, "suppress_envoy_headers": true}
    })
}

/// A route sending every request to `cluster`, without a timeout (10 MB responses stream).
fn http_route(cluster: &str) -> Value {
    json!({"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}})
}

/// A route terminating CONNECT: the stream's payload becomes a TCP connection to `cluster`.
fn connect_route(cluster: &str) -> Value {
    json!({
        "match": {"connect_matcher": {}},
        "route": {
            "cluster": cluster,
            "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]
        }
    })
}

/// An HTTP connection manager with one catch-all virtual host holding `route`.
fn http_manager(stat_prefix: &str, route: Value, terminate_connect: bool) -> Value {
    let mut config = json!({
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "generate_request_id": false,
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]
        },
        "http_filters": [router()]
    });
    if terminate_connect {
        let object = config.as_object_mut().expect("json! object");
        object.insert("codec_type".into(), json!("HTTP2"));
        object.insert(
            "http2_protocol_options".into(),
            json!({"allow_connect": true}),
        );
        object.insert(
            "upgrade_configs".into(),
            json!([{"upgrade_type": "CONNECT"}]),
        );
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": config})
}

/// A TCP proxy that tunnels each connection as an HTTP/2 CONNECT to `authority` (HBONE encap).
fn tunnel(stat_prefix: &str, cluster: &str, authority: SocketAddr) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": TCP_PROXY,
            "stat_prefix": stat_prefix,
            "cluster": cluster,
            "tunneling_config": {"hostname": authority.to_string()}
        }
    })
}

/// A listener on `address` (a socket, or `None` for an internal listener named `name`).
fn listener(name: &str, address: Option<SocketAddr>, filter: Value, tls: Option<Value>) -> Value {
    let mut chain = Map::new();
    chain.insert("filters".into(), json!([filter]));
    if let Some(tls) = tls {
        chain.insert("transport_socket".into(), tls);
    }
    let mut object = Map::new();
    object.insert("name".into(), json!(name));
    match address {
        Some(addr) => object.insert("address".into(), socket(addr)),
        None => object.insert("internal_listener".into(), json!({})),
    };
    object.insert("filter_chains".into(), json!([Value::Object(chain)]));
    Value::Object(object)
}

/// Where a cluster sends, and how.
pub struct Upstream {
    pub address: Value,
    pub h2: bool,
    pub tls: Option<Value>,
}

fn cluster(name: &str, upstream: Upstream) -> Value {
    let thresholds = json!({
        "max_connections": UNLIMITED,
        "max_pending_requests": UNLIMITED,
        "max_requests": UNLIMITED,
        "max_retries": UNLIMITED
    });
    let mut object = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "circuit_breakers": {"thresholds": [
            merge(&thresholds, json!({"priority": "DEFAULT"})),
            merge(&thresholds, json!({"priority": "HIGH"}))
        ]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": upstream.address}}]}]
        }
    });
    let map = object.as_object_mut().expect("json! object");
    if upstream.h2 {
        map.insert(
            "typed_extension_protocol_options".into(),
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}}
            }}),
        );
    }
    if let Some(tls) = upstream.tls {
        map.insert("transport_socket".into(), tls);
    }
    object
}

fn merge(base: &Value, extra: Value) -> Value {
    let mut merged = base.clone();
    if let (Some(target), Value::Object(extra)) = (merged.as_object_mut(), extra) {
        target.extend(extra);
    }
    merged
}

fn bootstrap(admin: SocketAddr, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    let internal = listeners
        .iter()
        .any(|l| l.get("internal_listener").is_some());
    let mut document = json!({
        "admin": {"address": socket(admin)},
        "stats_config": {"stats_matcher": {"reject_all": true}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    });
    if internal {
        document.as_object_mut().expect("json! object").insert(
            "bootstrap_extensions".into(),
            json!([{
                "name": "envoy.bootstrap.internal_listener",
                "typed_config": {"@type": INTERNAL_LISTENER}
            }]),
        );
    }
    document
}

fn plain(addr: SocketAddr) -> Upstream {
    Upstream {
        address: socket(addr),
        h2: false,
        tls: None,
    }
}

fn hbone(addr: SocketAddr, certs: &CertFiles) -> Upstream {
    Upstream {
        address: socket(addr),
        h2: true,
        tls: Some(upstream_tls(certs, Alpn::H2)),
    }
}

/// Sidecar-out: plaintext HTTP/1.1 listener, mutual TLS (HTTP/1.1) to `upstream`.
pub fn tls_client_side(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    certs: &CertFiles,
) -> Value {
    let tls = Upstream {
        address: socket(upstream),
        h2: false,
        tls: Some(upstream_tls(certs, Alpn::Http11)),
    };
    bootstrap(
        admin,
        vec![listener(
            "out",
            Some(listen),
            http_manager("out", http_route("tls_in"), false),
            None,
        )],
        vec![cluster("tls_in", tls)],
    )
}

/// Sidecar-in: mutual TLS (HTTP/1.1) listener, plaintext to the backend.
pub fn tls_server_side(
    admin: SocketAddr,
    listen: SocketAddr,
    backend: SocketAddr,
    certs: &CertFiles,
) -> Value {
    let tls = downstream_tls(certs, Alpn::Http11);
    bootstrap(
        admin,
        vec![listener(
            "in",
            Some(listen),
            http_manager("in", http_route("backend"), false),
            Some(tls),
        )],
        vec![cluster("backend", plain(backend))],
    )
}

/// HBONE encap (a ztunnel's outbound side): each TCP connection to `listen` becomes a CONNECT
/// to `authority`, over HTTP/2 + mutual TLS to `next_hop`.
pub fn hbone_encap(
    admin: SocketAddr,
    listen: SocketAddr,
    next_hop: SocketAddr,
    authority: SocketAddr,
    certs: &CertFiles,
) -> Value {
    bootstrap(
        admin,
        vec![listener(
            "encap",
            Some(listen),
            tunnel("encap", "hbone", authority),
            None,
        )],
        vec![cluster("hbone", hbone(next_hop, certs))],
    )
}

/// HBONE decap (a ztunnel's inbound side): mutual TLS + HTTP/2 on `listen`, CONNECT
/// terminated into a TCP connection to the backend.
pub fn hbone_decap(
    admin: SocketAddr,
    listen: SocketAddr,
    backend: SocketAddr,
    certs: &CertFiles,
) -> Value {
    let tls = downstream_tls(certs, Alpn::H2);
    bootstrap(
        admin,
        vec![listener(
            "decap",
            Some(listen),
            http_manager("decap", connect_route("backend"), true),
            Some(tls),
        )],
        vec![cluster("backend", plain(backend))],
    )
}

/// HBONE waypoint: terminate CONNECT on `listen` into the internal listener `l7` (an HTTP
/// router), whose upstream is the internal listener `originate`, which re-originates HBONE
/// (CONNECT to `authority`) over HTTP/2 + mutual TLS to `next_hop`.
pub fn hbone_waypoint(
    admin: SocketAddr,
    listen: SocketAddr,
    next_hop: SocketAddr,
    authority: SocketAddr,
    certs: &CertFiles,
) -> Value {
    let tls = downstream_tls(certs, Alpn::H2);
    let internal = |name: &str| Upstream {
        address: internal_address(name),
        h2: false,
        tls: None,
    };
    bootstrap(
        admin,
        vec![
            listener(
                "hbone_in",
                Some(listen),
                http_manager("hbone_in", connect_route("l7"), true),
                Some(tls),
            ),
            listener(
                "l7",
                None,
                http_manager("l7", http_route("originate"), false),
                None,
            ),
            listener(
                "originate",
                None,
                tunnel("originate", "hbone_out", authority),
                None,
            ),
        ],
        vec![
            cluster("l7", internal("l7")),
            cluster("originate", internal("originate")),
            cluster("hbone_out", hbone(next_hop, certs)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> CertFiles {
        CertFiles {
            root: "/r/root.pem".into(),
            chain: "/r/c.pem".into(),
            key: "/r/k.pem".into(),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn waypoint_chains_three_listeners_through_internal_addresses() {
        let doc = hbone_waypoint(
            addr("127.0.0.1:1"),
            addr("127.0.0.1:15008"),
            addr("127.0.0.2:15008"),
            addr("127.0.0.3:80"),
            &certs(),
        );
        let listeners = doc["static_resources"]["listeners"]
            .as_array()
            .expect("listeners");
        assert_eq!(listeners.len(), 3);
        assert!(doc["bootstrap_extensions"].is_array());
        let hcm = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["http2_protocol_options"]["allow_connect"], true);
        assert_eq!(hcm["generate_request_id"], false);
        let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0];
        assert_eq!(route["route"]["cluster"], "l7");
        assert!(route["match"]["connect_matcher"].is_object());
        let tunnel = &listeners[2]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(tunnel["tunneling_config"]["hostname"], "127.0.0.3:80");
        let clusters = doc["static_resources"]["clusters"]
            .as_array()
            .expect("clusters");
        assert_eq!(
            clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["envoy_internal_address"]["server_listener_name"],
            "originate"
        );
        let out = &clusters[2];
        assert_eq!(
            out["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"][0],
            "h2"
        );
        assert_eq!(
            out["circuit_breakers"]["thresholds"][0]["max_requests"],
            UNLIMITED
        );
    }

    #[test]
    fn plain_roles_have_no_internal_listener_extension() {
        let doc = tls_client_side(
            addr("127.0.0.1:1"),
            addr("127.0.0.1:2"),
            addr("127.0.0.1:3"),
            &certs(),
        );
        assert!(doc.get("bootstrap_extensions").is_none());
        assert_eq!(doc["stats_config"]["stats_matcher"]["reject_all"], true);
        let server = tls_server_side(
            addr("127.0.0.1:1"),
            addr("127.0.0.1:2"),
            addr("127.0.0.1:3"),
            &certs(),
        );
        let tls =
            &server["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"];
        assert_eq!(tls["typed_config"]["require_client_certificate"], true);
        assert_eq!(
            tls["typed_config"]["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"],
            "TLSv1_3"
        );
    }
}
