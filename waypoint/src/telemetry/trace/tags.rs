//! What a request's span is named and tagged with (pure): Envoy's tags, so trace views
//! built for Istio's waypoints read the same, Istio's own tags, and a Telemetry's custom tags.

use http::HeaderMap;
use mesh_config::traces::{CustomTag, TracingSettings};
use mesh_config::{Destination, ObjectRef};
use opentelemetry::KeyValue;

use crate::telemetry::RequestLabels;

/// The mesh id Istio tags spans with by default.
const MESH_ID: &str = "cluster.local";

/// The span's name, as Istio names a route's operation: `{host}:{port}/*` (the Service's
/// hostname, or the pod's address), else what the caller's tunnel addressed.
pub fn span_name(destination: Option<&Destination>, tunnel_authority: &str) -> String {
    match destination {
        Some(Destination::Service { service, port }) => format!("{}:{port}/*", service.hostname),
        Some(Destination::Workload { workload, port }) => format!("{}:{port}/*", workload.ip),
        None => format!("{tunnel_authority}/*"),
    }
}

/// What is known of a request when it ends.
pub struct Facts<'a> {
    pub labels: &'a RequestLabels<'a>,
    pub destination: Option<&'a Destination>,
    pub method: &'a str,
    /// `http://{authority}{path}` as the caller asked.
    pub url: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    pub headers: &'a HeaderMap,
    pub peer_address: Option<String>,
    /// The endpoint the request was sent to, if it was.
    pub upstream_address: Option<String>,
    pub request_size: u64,
    pub response_size: u64,
}

/// The span's tags, each value cut to the provider's `max_tag_length`; `env` reads the
/// waypoint's environment (for `environment` custom tags).
pub fn tags(
    facts: &Facts<'_>,
    settings: &TracingSettings,
    waypoint: &ObjectRef,
    env: impl Fn(&str) -> Option<String>,
) -> Vec<KeyValue> {
    let labels = facts.labels;
    let header = |name: &str| {
        (facts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = labels.response_code;
    let mut tags: Vec<(String, String)> = vec![
        ("component".into(), "proxy".into()),
        ("http.method".into(), facts.method.into()),
        ("http.url".into(), facts.url.clone()),
        ("http.protocol".into(), facts.protocol.into()),
        ("http.status_code".into(), code.to_string()),
        (
            "response_flags".into(),
            labels.response_flags.as_str().into(),
        ),
        ("request_size".into(), facts.request_size.to_string()),
        ("response_size".into(), facts.response_size.to_string()),
        ("downstream_cluster".into(), "-".into()),
        (
            "upstream_cluster".into(),
            upstream_cluster(facts.destination),
        ),
    ];
    let optional = [
        ("user_agent", header("user-agent")),
        ("guid:x-request-id", header("x-request-id")),
        ("peer.address", facts.peer_address.clone()),
        ("upstream_address", facts.upstream_address.clone()),
        ("error", is_error(code).then(|| "true".to_string())),
    ];
    tags.extend((optional.into_iter()).filter_map(|(k, v)| Some((k.to_string(), v?))));
    if settings.istio_tags {
        tags.extend([
            ("istio.canonical_service".into(), waypoint.name.clone()),
            ("istio.canonical_revision".into(), "latest".into()),
            ("istio.namespace".into(), waypoint.namespace.clone()),
            ("istio.mesh_id".into(), MESH_ID.into()),
        ]);
    }
    for (name, tag) in &settings.custom_tags {
        let value = match tag {
            CustomTag::Literal(value) => Some(value.clone()),
            CustomTag::Environment { name, default } => env(name).or_else(|| default.clone()),
            CustomTag::Header { name, default } => {
                header(name.as_str()).or_else(|| default.clone())
            }
        };
        if let Some(value) = value {
            tags.push((name.clone(), value));
        }
    }
    let max = settings.provider.max_tag_length;
    (tags.into_iter())
        .map(|(k, v)| KeyValue::new(k, truncate(v, max)))
        .collect()
}

/// Whether the span reports an error: a server error, or no response at all.
pub fn is_error(code: u16) -> bool {
    code == 0 || code >= 500
}

/// The cluster an Istio waypoint names for the destination: `inbound-vip|{port}|http|{host}`
/// for a Service, `-` otherwise.
fn upstream_cluster(destination: Option<&Destination>) -> String {
    match destination {
        Some(Destination::Service { service, port }) => {
            format!("inbound-vip|{port}|http|{}", service.hostname)
        }
        _ => "-".into(),
    }
}

fn truncate(mut value: String, max: usize) -> String {
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_config::traces::{OtlpExport, TracingProvider};
    use mesh_core::ResponseFlag;

    use super::*;

    fn service(namespace: &str, name: &str) -> Arc<mesh_config::Service> {
        mesh_config::fixtures::compiled_service(namespace, name)
    }

    fn settings(max_tag_length: usize, istio_tags: bool) -> TracingSettings {
        let service = service("observability", "otel");
        TracingSettings {
            provider: Arc::new(TracingProvider {
                name: "otel".into(),
                service,
                port: 4317,
                max_tag_length,
                export: OtlpExport::Grpc {
                    timeout: std::time::Duration::from_secs(1),
                    metadata: Vec::new(),
                },
            }),
            sampling_percent: 100.0,
            report_spans: true,
            istio_tags,
            custom_tags: vec![
                ("team".into(), CustomTag::Literal("payments".into())),
                (
                    "pod".into(),
                    CustomTag::Environment {
                        name: "POD_NAME".into(),
                        default: Some("none".into()),
                    },
                ),
                (
                    "tenant".into(),
                    CustomTag::Header {
                        name: http::HeaderName::from_static("x-tenant"),
                        default: None,
                    },
                ),
                (
                    "absent".into(),
                    CustomTag::Header {
                        name: http::HeaderName::from_static("x-absent"),
                        default: None,
                    },
                ),
            ],
        }
    }

    fn value(tags: &[KeyValue], key: &str) -> Option<String> {
        tags.iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    }

    #[test]
    fn spans_carry_envoys_istios_and_custom_tags() {
        let labels = RequestLabels {
            response_code: 503,
            response_flags: ResponseFlag::UpstreamConnectionFailure,
            ..RequestLabels::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().expect("value"));
        headers.insert("x-request-id", "r-1".parse().expect("value"));
        let destination = Destination::Service {
            service: service("default", "web"),
            port: 8080,
        };
        let facts = Facts {
            labels: &labels,
            destination: Some(&destination),
            method: "GET",
            url: format!("http://web:8080/{}", "a".repeat(300)),
            protocol: "HTTP/1.1",
            headers: &headers,
            peer_address: Some("10.0.0.1".into()),
            upstream_address: None,
            request_size: 3,
            response_size: 0,
        };
        let waypoint = ObjectRef::new("default", "wp");
        let tags = tags(&facts, &settings(256, true), &waypoint, |_| None);
        assert_eq!(value(&tags, "http.status_code").as_deref(), Some("503"));
        assert_eq!(value(&tags, "error").as_deref(), Some("true"));
        assert_eq!(value(&tags, "response_flags").as_deref(), Some("UF"));
        assert_eq!(value(&tags, "guid:x-request-id").as_deref(), Some("r-1"));
        assert_eq!(
            value(&tags, "upstream_cluster").as_deref(),
            Some("inbound-vip|8080|http|web.default.svc.cluster.local")
        );
        assert_eq!(value(&tags, "http.url").map(|u| u.len()), Some(256));
        assert_eq!(
            value(&tags, "istio.canonical_service").as_deref(),
            Some("wp")
        );
        assert_eq!(value(&tags, "team").as_deref(), Some("payments"));
        assert_eq!(value(&tags, "pod").as_deref(), Some("none"));
        assert_eq!(value(&tags, "tenant").as_deref(), Some("acme"));
        assert_eq!(value(&tags, "absent"), None);
        assert_eq!(value(&tags, "upstream_address"), None);

        let plain = super::tags(&facts, &settings(8, false), &waypoint, |n| {
            (n == "POD_NAME").then(|| "wp-0".to_string())
        });
        assert_eq!(value(&plain, "istio.namespace"), None);
        assert_eq!(value(&plain, "pod").as_deref(), Some("wp-0"));
        assert_eq!(value(&plain, "http.url").as_deref(), Some("http://w"));
    }

    #[test]
    fn spans_are_named_as_istio_names_route_operations() {
        let destination = Destination::Service {
            service: service("default", "web"),
            port: 80,
        };
        assert_eq!(
            span_name(Some(&destination), "10.96.0.1:80"),
            "web.default.svc.cluster.local:80/*"
        );
        assert_eq!(span_name(None, "10.96.0.1:80"), "10.96.0.1:80/*");
        assert!(!is_error(404) && is_error(0) && is_error(500));
    }
}
