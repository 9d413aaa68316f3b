//! Tracing end to end: the real waypoint, configured as Istio configures tracing (an
//! `opentelemetry` provider in the mesh config, Telemetry's `tracing`), makes a span per
//! request, sends the request on naming that span as its parent (W3C, and B3 in the caller's
//! form), and exports sampled spans over OTLP, gRPC and HTTP, through the mesh to a collector
//! pod that decodes what it receives with OpenTelemetry's own protobuf types.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, TRUST_DOMAIN, ip, manifest};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_config::fixtures::{self, policy};
use mesh_hbone::{Identity, LocalCa};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BLOCK: u8 = 121;
const SLEEP: &str = "sleep";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    /// `grpc` or `http`.
    transport: &'static str,
    /// The `x-tenant` metadata or header the export carried.
    tenant: Option<String>,
    service_name: Option<String>,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
    error: bool,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        (self.attributes.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn record(
    spans: &Spans,
    transport: &'static str,
    tenant: Option<String>,
    request: ExportTraceServiceRequest,
) {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match value
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(AnyValue::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut out = spans.lock().expect("spans");
    for resource_spans in request.resource_spans {
        let service_name = (resource_spans.resource.iter())
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value));
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    transport,
                    tenant: tenant.clone(),
                    service_name: service_name.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: (span.attributes.iter())
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    // STATUS_CODE_ERROR is 2.
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                });
            }
        }
    }
}

#[derive(Clone)]
struct GrpcSink(Spans);

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = (request.metadata().get("x-tenant"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        record(&self.0, "grpc", tenant, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

type Body =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The collector pod `127.<BLOCK>.2.50`, over HBONE: OTLP/gRPC (`TraceService/Export`, tonic)
/// and OTLP/HTTP (protobuf POSTed to `/v1/traces`).
async fn collector_pod(
    ca: Arc<LocalCa>,
    spans: Spans,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = SocketAddr::new(ip(BLOCK, "2.50"), mesh_core::ports::HBONE);
    let listener = TcpListener::bind(addr).await?;
    let tls = mesh_hbone::server_config(ca, Identity::new(TRUST_DOMAIN, "default", "otel"))?;
    let handler = move |connect: mesh_hbone::InboundConnect| {
        let spans = spans.clone();
        async move {
            let Ok(stream) = connect.accept(http::HeaderMap::new()) else {
                return;
            };
            let grpc = TraceServiceServer::new(GrpcSink(spans.clone()));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let spans = spans.clone();
                let mut grpc = grpc.clone();
                async move {
                    if request.uri().path().ends_with("TraceService/Export") {
                        let response = tower::Service::call(&mut grpc, request).await?;
                        return Ok::<_, Infallible>(
                            response.map(|b| -> Body { b.map_err(Into::into).boxed_unsync() }),
                        );
                    }
                    let tenant = (request.headers().get("x-tenant"))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let path = request.uri().path().to_string();
                    let body = request
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes();
                    let status = match (path.as_str(), ExportTraceServiceRequest::decode(body)) {
                        ("/v1/traces", Ok(decoded)) => {
                            record(&spans, "http", tenant, decoded);
                            200
                        }
                        _ => 400,
                    };
                    let answer = ExportTraceServiceResponse {
                        partial_success: None,
                    };
                    let body = Full::new(Bytes::from(answer.encode_to_vec()))
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    let response = http::Response::builder()
                        .status(status)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .expect("response");
                    Ok(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    };
    tokio::spawn(mesh_hbone::Server::new(tls).serve(listener, handler, shutdown));
    Ok(())
}

const MESH_CONFIG: &str = r#"
extensionProviders:
- name: otel
  opentelemetry:
    service: otel.default.svc.cluster.local
    port: 4317
    grpc: {initialMetadata: [{name: x-tenant, value: team-a}]}
- name: otel-http
  opentelemetry:
    service: otel.default.svc.cluster.local
    port: 4318
    http: {path: /v1/traces, headers: [{name: x-tenant, value: team-b}]}
"#;

/// The collector's Service and pod, the mesh config, a DENY policy on `/forbidden`, and a
/// root-namespace Telemetry with `tracing` (none when `None`).
fn objects(tracing: Option<Value>) -> Vec<Value> {
    let at = |rest: &str| ip(BLOCK, rest).to_string();
    let mut otel = fixtures::service("default", "otel", &at("100.50"), json!({"app": "otel"}));
    otel["spec"]["ports"] = json!([
        {"name": "grpc", "port": 4317, "targetPort": 4317},
        {"name": "http", "port": 4318, "targetPort": 4318}]);
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"}, "data": {"mesh": MESH_CONFIG}});
    let gateway =
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]);
    let mut objects = vec![
        otel,
        fixtures::pod("default", "otel", &at("2.50"), json!({"app": "otel"})),
        config_map,
        policy(
            "default",
            "deny-forbidden",
            json!({"targetRefs": gateway, "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/forbidden"]}}]}]}),
        ),
    ];
    if let Some(tracing) = tracing {
        objects.push(
            json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "mesh-default", "namespace": "istio-system"},
            "spec": {"tracing": [tracing]}}),
        );
    }
    objects
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(format!("http://reviews.default:9080{path}"))
        .header(http::header::HOST, "reviews.default:9080")
        .header("x-request-id", "req-1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

/// `traceparent`'s parts: trace id, span id, flags.
fn traceparent(value: Option<&str>) -> (String, String, String) {
    let value = value.expect("a traceparent");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!((parts.len(), parts[0]), (4, "00"), "{value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Waits until `count` spans have arrived (10 s at most).
async fn spans_after(spans: &Spans, count: usize) -> Vec<Received> {
    for _ in 0..200 {
        let received = spans.lock().expect("spans").clone();
        if received.len() >= count {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = spans.lock().expect("spans").clone();
    panic!(
        "{} spans arrived, not {count}: {received:#?}",
        received.len()
    );
}

fn compile(objects: &[Value]) -> mesh_config::Snapshot {
    mesh_config::compile(vec![("test.yaml".into(), manifest(BLOCK, objects))]).expect("compiles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_traced_and_spans_exported_over_otlp() -> anyhow::Result<()> {
    let grpc_tracing = json!({"providers": [{"name": "otel"}], "randomSamplingPercentage": 0,
        "customTags": {"team": {"literal": {"value": "payments"}},
                       "tenant": {"header": {"name": "x-tenant-id", "defaultValue": "none"}}}});
    let timeouts = waypoint::Timeouts {
        span_export_delay: Duration::from_millis(100),
        ..waypoint::Timeouts::default()
    };
    let h = Harness::start_with(
        BLOCK,
        &manifest(BLOCK, &objects(Some(grpc_tracing))),
        timeouts,
    )
    .await?;
    let spans: Spans = Default::default();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    collector_pod(h.ca.clone(), spans.clone(), shutdown).await?;
    let _v1 = h.backend("v1").await?;
    let mut caller = h.http1(SLEEP).await?;

    // No context and 0% sampling: a new trace, not sampled, still propagated.
    let unsampled = caller.send(get("/a", &[])).await?;
    assert_eq!(unsampled.status, 200);
    let (trace, _, flags) = traceparent(unsampled.header("x-echo-traceparent"));
    assert_ne!(trace, TRACE);
    assert_eq!(flags, "00");

    // The caller's sampled W3C context: the waypoint's span is its child, and the request
    // goes on naming that span; tracestate goes on untouched.
    let incoming = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let sampled = caller
        .send(get(
            "/b?q=1",
            &[
                ("traceparent", &incoming),
                ("tracestate", "vendor=x"),
                ("x-tenant-id", "acme"),
            ],
        ))
        .await?;
    assert_eq!(sampled.status, 200);
    let (trace, waypoint_span, flags) = traceparent(sampled.header("x-echo-traceparent"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(waypoint_span, CALLER_SPAN);
    assert_eq!(sampled.header("x-echo-tracestate"), Some("vendor=x"));

    let received = spans_after(&spans, 1).await;
    assert_eq!(received.len(), 1, "the unsampled request exports nothing");
    let span = &received[0];
    assert_eq!(
        (span.transport, span.tenant.as_deref()),
        ("grpc", Some("team-a"))
    );
    assert_eq!(span.service_name.as_deref(), Some("waypoint.default"));
    assert_eq!(span.name, "reviews.default.svc.cluster.local:9080/*");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.trace_id, TRACE);
    assert_eq!(span.parent_span_id, CALLER_SPAN);
    assert_eq!(span.span_id, waypoint_span);
    assert!(!span.error);
    for (key, value) in [
        ("http.method", "GET"),
        ("http.url", "http://reviews.default:9080/b"),
        ("http.status_code", "200"),
        ("http.protocol", "HTTP/1.1"),
        ("response_flags", "-"),
        ("guid:x-request-id", "req-1"),
        (
            "upstream_cluster",
            "inbound-vip|9080|http|reviews.default.svc.cluster.local",
        ),
        ("istio.canonical_service", "waypoint"),
        ("istio.namespace", "default"),
        ("team", "payments"),
        ("tenant", "acme"),
    ] {
        assert_eq!(span.attribute(key), Some(value), "{key} in {span:#?}");
    }
    assert_eq!(
        span.attribute("peer.address"),
        Some(ip(BLOCK, "1.10").to_string().as_str())
    );
    assert!(
        span.attribute("upstream_address")
            .is_some_and(|a| a.ends_with(":9080"))
    );

    // B3 (multi-header, sampled): read as the parent, written back in the same form.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3 = caller
        .send(get(
            "/c",
            &[
                ("x-b3-traceid", b3_trace),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ],
        ))
        .await?;
    assert_eq!(b3.status, 200);
    let (trace, b3_span, _) = traceparent(b3.header("x-echo-traceparent"));
    assert_eq!(trace, b3_trace);
    assert_eq!(b3.header("x-echo-x-b3-traceid"), Some(b3_trace));
    assert_eq!(b3.header("x-echo-x-b3-spanid"), Some(b3_span.as_str()));
    assert_eq!(
        b3.header("x-echo-x-b3-parentspanid"),
        Some("e457b5a2e4d86bd1")
    );
    assert_eq!(b3.header("x-echo-x-b3-sampled"), Some("1"));

    // A refused request is traced too: its span says 403, and nothing went upstream.
    let forbidden = caller
        .send(get("/forbidden", &[("traceparent", &incoming)]))
        .await?;
    assert_eq!(forbidden.status, 403);
    let received = spans_after(&spans, 3).await;
    let b3_exported = received
        .iter()
        .find(|s| s.span_id == b3_span)
        .expect("the B3 span");
    assert_eq!(b3_exported.parent_span_id, "e457b5a2e4d86bd1");
    let refused = (received.iter())
        .find(|s| s.attribute("http.status_code") == Some("403"))
        .expect("the refused request's span");
    assert_eq!(refused.attribute("upstream_address"), None);
    assert_eq!(refused.trace_id, TRACE);

    // A server error is an error span: the backend fails with 503.
    let failed = caller
        .send(get("/fail-all/503/x", &[("traceparent", &incoming)]))
        .await?;
    assert_eq!(failed.status, 503, "{failed:?}");
    let received = spans_after(&spans, 4).await;
    assert!(
        received
            .iter()
            .any(|s| s.error && s.attribute("error") == Some("true"))
    );

    // The provider changes to OTLP/HTTP at 100%: the waypoint's next spans go there.
    let http_tracing =
        json!({"providers": [{"name": "otel-http"}], "randomSamplingPercentage": 100});
    h.store.replace(compile(&objects(Some(http_tracing))));
    let sampled_by_percentage = caller.send(get("/d", &[])).await?;
    let (trace, _, flags) = traceparent(sampled_by_percentage.header("x-echo-traceparent"));
    assert_eq!(flags, "01");
    let received = spans_after(&spans, 5).await;
    let over_http = received.last().expect("a span");
    assert_eq!(
        (over_http.transport, over_http.tenant.as_deref()),
        ("http", Some("team-b"))
    );
    assert_eq!(
        (
            over_http.trace_id.as_str(),
            over_http.parent_span_id.as_str()
        ),
        (trace.as_str(), "")
    );

    // Span reporting off: sampled and propagated, never exported.
    let silent = json!({"providers": [{"name": "otel-http"}], "randomSamplingPercentage": 100,
                        "disableSpanReporting": true});
    h.store.replace(compile(&objects(Some(silent))));
    let unreported = caller.send(get("/e", &[])).await?;
    assert_eq!(traceparent(unreported.header("x-echo-traceparent")).2, "01");

    // No tracing configured: trace headers pass through as the caller sent them.
    h.store.replace(compile(&objects(None)));
    let untouched = caller
        .send(get("/f", &[("traceparent", &incoming), ("b3", "0")]))
        .await?;
    assert_eq!(
        untouched.header("x-echo-traceparent"),
        Some(incoming.as_str())
    );
    assert_eq!(untouched.header("x-echo-b3"), Some("0"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        spans.lock().expect("spans").len(),
        5,
        "nothing more was exported"
    );
    Ok(())
}
