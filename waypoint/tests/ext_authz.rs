//! CUSTOM AuthorizationPolicies end to end: real authorizers (Envoy's HTTP check, and the gRPC
//! `Authorization/Check` served with tonic) in pods of the mesh, reached over HBONE by the real
//! waypoint; allow with header changes, deny with the authorizer's answer, and failures closed
//! or open.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, TRUST_DOMAIN, ip, manifest};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_config::fixtures::{self, policy};
use mesh_hbone::{Identity, LocalCa};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waypoint::ext_authz::grpc::{
    CheckRequest, CheckResponse, CoreHeaderValue, DeniedHttpResponse, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse, RpcStatus,
};

const BLOCK: u8 = 116;
const BODY_BLOCK: u8 = 123;
const TRACE_BLOCK: u8 = 124;
const SLEEP: &str = "sleep";

type Body =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The HTTP authorizer: allows `x-user: alice` (passing `x-authz-*` headers on, one of them
/// the `traceparent` the check came with), denies the rest with 403, its own body and a
/// header; `/slow` paths answer after 2 s.
async fn http_authorizer(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if request.uri().path().ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if request.uri().path().starts_with("/check/body/") {
        // Decides on the body the check carries: `alice` in it allows.
        let partial = (request.headers().get("x-envoy-auth-partial-body"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("absent")
            .to_string();
        let body = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        let status = if text.contains("alice") { 200 } else { 403 };
        let response = Response::builder()
            .status(status)
            .header("x-authz-body", format!("{text}|{partial}"))
            .body(full(""));
        return Ok(response.expect("response"));
    }
    let user = request
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok());
    let seen_path = request.uri().to_string();
    let traceparent = traceparent(request.headers());
    let response = match user {
        Some("alice") => Response::builder()
            .header("x-authz-traceparent", traceparent)
            .header("x-authz-user", "alice")
            .header("x-authz-path", seen_path)
            .header("x-not-passed", "1")
            .header("x-authz-seen", "yes")
            .body(full("")),
        _ => Response::builder()
            .status(403)
            .header("x-reason", "not alice")
            .header("content-type", "text/plain")
            .body(full("denied by the test authorizer\n")),
    };
    Ok(response.expect("response"))
}

/// The `traceparent` among `headers`, or `none`.
fn traceparent(headers: &http::HeaderMap) -> String {
    let value = headers.get("traceparent").and_then(|v| v.to_str().ok());
    value.unwrap_or("none").to_string()
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(CoreHeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: 0,
    }
}

/// The gRPC authorizer's decision: `x-user: alice` is allowed (with a header up and one
/// down), anyone else is denied with 401 and a body.
#[derive(Clone)]
struct GrpcAuthorizer {
    checks: Arc<AtomicUsize>,
}

impl tonic::server::UnaryService<CheckRequest> for GrpcAuthorizer {
    type Response = CheckResponse;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<tonic::Response<CheckResponse>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let traceparent = traceparent(&request.metadata().clone().into_headers());
        let http = (request.into_inner().attributes)
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let user = http.headers.get("x-user").cloned().unwrap_or_default();
        if !http.raw_body.is_empty() || !http.body.is_empty() {
            // Decides on the body: bytes (`packAsBytes`) or text, `alice` first allows.
            let body = match http.raw_body.is_empty() {
                true => http.body.clone(),
                false => String::from_utf8_lossy(&http.raw_body).into_owned(),
            };
            let partial = http
                .headers
                .get("x-envoy-auth-partial-body")
                .cloned()
                .unwrap_or_default();
            let seen = format!(
                "{body}|{partial}|{}",
                if http.raw_body.is_empty() {
                    "text"
                } else {
                    "bytes"
                }
            );
            let status = if body.starts_with("alice") { 0 } else { 7 };
            let response = CheckResponse {
                status: Some(RpcStatus {
                    code: status,
                    message: String::new(),
                }),
                http_response: Some(HttpResponse::Ok(OkHttpResponse {
                    headers: vec![header("x-grpc-body", &seen)],
                    headers_to_remove: Vec::new(),
                    response_headers_to_add: Vec::new(),
                })),
            };
            return Box::pin(async move { Ok(tonic::Response::new(response)) });
        }
        let response = match user.as_str() {
            "alice" => CheckResponse {
                status: Some(RpcStatus::default()),
                http_response: Some(HttpResponse::Ok(OkHttpResponse {
                    headers: vec![
                        header("x-grpc-user", &format!("{user} {}", http.path)),
                        header("x-grpc-traceparent", &traceparent),
                    ],
                    headers_to_remove: vec!["x-user".into()],
                    response_headers_to_add: vec![header("x-grpc-seen", "yes")],
                })),
            },
            _ => CheckResponse {
                status: Some(RpcStatus {
                    code: 7,
                    message: "not alice".into(),
                }),
                http_response: Some(HttpResponse::Denied(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![header("www-authenticate", "Test")],
                    body: "the gRPC authorizer says no".into(),
                })),
            },
        };
        Box::pin(async move { Ok(tonic::Response::new(response)) })
    }
}

/// Serves `authz` pod `127.<block>.2.40` over HBONE: HTTP/1.1 checks, and gRPC (h2c) checks.
/// `tunnels` counts the HBONE tunnels the waypoint opens to it.
async fn authorizer_pod_in(
    block: u8,
    ca: Arc<LocalCa>,
    checks: Arc<AtomicUsize>,
    tunnels: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = SocketAddr::new(ip(block, "2.40"), mesh_core::ports::HBONE);
    let listener = TcpListener::bind(addr).await?;
    let tls = mesh_hbone::server_config(ca, Identity::new(TRUST_DOMAIN, "default", "authz"))?;
    let handler = move |connect: mesh_hbone::InboundConnect| {
        let checks = checks.clone();
        tunnels.fetch_add(1, Ordering::SeqCst);
        async move {
            let Ok(stream) = connect.accept(http::HeaderMap::new()) else {
                return;
            };
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let checks = checks.clone();
                async move {
                    if request.uri().path() == waypoint::ext_authz::grpc::CHECK_PATH {
                        let codec =
                            tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default();
                        let mut grpc = tonic::server::Grpc::new(codec);
                        let response = grpc.unary(GrpcAuthorizer { checks }, request).await;
                        return Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()));
                    }
                    checks.fetch_add(1, Ordering::SeqCst);
                    http_authorizer(request).await
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

/// The authorizer's Service (`authz`, HTTP on 8000, gRPC on 9000), a pod nothing listens on
/// (`down`), the mesh config naming providers for both and for `down`, and CUSTOM policies
/// sending `/http/*`, `/grpc/*`, `/closed/*` and `/open/*` to them; a DENY policy on
/// `/http/forbidden`.
fn objects_in(block: u8) -> Vec<Value> {
    let at = |rest: &str| ip(block, rest).to_string();
    let mut authz = fixtures::service("default", "authz", &at("100.40"), json!({"app": "authz"}));
    authz["spec"]["ports"] = json!([
        {"name": "http", "port": 8000, "targetPort": 8000},
        {"name": "grpc", "port": 9000, "targetPort": 9000}]);
    let mut down = fixtures::service("default", "down", &at("100.41"), json!({"app": "down"}));
    down["spec"]["ports"] = json!([{"name": "http", "port": 8000, "targetPort": 8000}]);
    let mesh = r#"
extensionProviders:
- name: http-authz
  envoyExtAuthzHttp:
    service: authz.default.svc.cluster.local
    port: 8000
    pathPrefix: /check
    timeout: 500ms
    includeRequestHeadersInCheck: [x-user]
    headersToUpstreamOnAllow: [x-authz-*]
    headersToDownstreamOnAllow: [x-authz-seen]
- name: grpc-authz
  envoyExtAuthzGrpc:
    service: default/authz.default.svc.cluster.local
    port: "9000"
- name: http-body
  envoyExtAuthzHttp:
    service: authz.default.svc.cluster.local
    port: 8000
    pathPrefix: /check
    includeRequestBodyInCheck: {maxRequestBytes: 16}
    headersToUpstreamOnAllow: [x-authz-*]
- name: grpc-body
  envoyExtAuthzGrpc:
    service: authz.default.svc.cluster.local
    port: 9000
    includeRequestBodyInCheck: {maxRequestBytes: 8, allowPartialMessage: true, packAsBytes: true}
- name: down-closed
  envoyExtAuthzHttp: {service: down.default.svc.cluster.local, port: 8000, statusOnError: "503"}
- name: down-open
  envoyExtAuthzHttp: {service: down.default.svc.cluster.local, port: 8000, failOpen: true}
"#;
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"}, "data": {"mesh": mesh}});
    let gateway =
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]);
    let custom = |name: &str, paths: &[&str]| {
        policy(
            "default",
            name,
            json!({"targetRefs": gateway, "action": "CUSTOM",
            "provider": {"name": name}, "rules": [{"to": [{"operation": {"paths": paths}}]}]}),
        )
    };
    vec![
        authz,
        fixtures::pod("default", "authz", &at("2.40"), json!({"app": "authz"})),
        down,
        fixtures::pod("default", "down", &at("2.41"), json!({"app": "down"})),
        config_map,
        custom("http-authz", &["/http/*"]),
        custom("grpc-authz", &["/grpc/*"]),
        custom("down-closed", &["/closed/*"]),
        custom("http-body", &["/body/*"]),
        custom("grpc-body", &["/grpcbody/*"]),
        custom("down-open", &["/open/*"]),
        policy(
            "default",
            "deny-forbidden",
            json!({"targetRefs": gateway, "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/http/forbidden"]}}]}]}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policies_ask_their_authorizer() -> anyhow::Result<()> {
    let h = Harness::start(BLOCK, &manifest(BLOCK, &objects_in(BLOCK))).await?;
    let checks = Arc::new(AtomicUsize::new(0));
    let tunnels = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    authorizer_pod_in(
        BLOCK,
        h.ca.clone(),
        checks.clone(),
        tunnels.clone(),
        shutdown,
    )
    .await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut caller = h.http1(SLEEP).await?;
    let get = |path: &str, user: Option<&str>| {
        let mut request = Request::get(format!("http://reviews.default:9080{path}"))
            .header(http::header::HOST, "reviews.default:9080");
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        request.body(Full::new(Bytes::new())).expect("request")
    };

    // Not matched by a CUSTOM rule: no check.
    assert_eq!(caller.send(get("/plain", None)).await?.status, 200);
    assert_eq!(checks.load(Ordering::SeqCst), 0);

    // HTTP: allowed, the listed answer headers go up (and down), the others do not.
    let allowed = caller.send(get("/http/a?q=1", Some("alice"))).await?;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-echo-x-authz-user"), Some("alice"));
    assert_eq!(
        allowed.header("x-echo-x-authz-path"),
        Some("/check/http/a?q=1")
    );
    assert_eq!(allowed.header("x-echo-x-not-passed"), None);
    assert_eq!(allowed.header("x-authz-seen"), Some("yes"));
    // Denied: the authorizer's status, body and headers.
    let denied = caller.send(get("/http/a", Some("mallory"))).await?;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "denied by the test authorizer\n");
    assert_eq!(denied.header("x-reason"), Some("not alice"));
    assert_eq!(checks.load(Ordering::SeqCst), 2);
    // Checks share the waypoint's pooled connections: ten more open no tunnel.
    let opened = tunnels.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(
            caller.send(get("/http/a", Some("alice"))).await?.status,
            200
        );
    }
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        opened,
        "checks reuse a pooled connection"
    );
    assert_eq!(checks.load(Ordering::SeqCst), 12);
    // A DENY policy refuses first: the authorizer is not asked.
    let forbidden = caller.send(get("/http/forbidden", Some("alice"))).await?;
    assert_eq!(
        (forbidden.status, forbidden.body.as_str()),
        (403, "RBAC: access denied\n")
    );
    assert_eq!(checks.load(Ordering::SeqCst), 12);
    // An authorizer slower than the provider's timeout fails the check: closed, 403.
    let started = std::time::Instant::now();
    let slow = caller.send(get("/http/slow", Some("alice"))).await?;
    assert_eq!(slow.status, 403, "{slow:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));

    // gRPC (Envoy's Authorization/Check): allowed with its header changes, denied with its
    // status and body.
    let allowed = caller.send(get("/grpc/b", Some("alice"))).await?;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-echo-x-grpc-user"), Some("alice /grpc/b"));
    assert_eq!(allowed.header("x-echo-x-user"), None, "headers_to_remove");
    assert_eq!(allowed.header("x-grpc-seen"), Some("yes"));
    let denied = caller.send(get("/grpc/b", None)).await?;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (401, "the gRPC authorizer says no")
    );
    assert_eq!(denied.header("www-authenticate"), Some("Test"));

    // An authorizer that cannot be reached: closed (statusOnError 503), or open.
    let closed = caller.send(get("/closed/c", Some("alice"))).await?;
    assert_eq!(closed.status, 503, "{closed:?}");
    let open = caller.send(get("/open/c", None)).await?;
    assert_eq!(open.status, 200, "{open:?}");

    // Denials are counted as Envoy flags them.
    let flagged = h
        .wait_metric("istio_requests_total", &[("response_flags", "UAEX")], 4.0)
        .await;
    assert_eq!(flagged, 4.0, "http deny, slow, grpc deny, closed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_carry_the_body_when_the_provider_includes_it() -> anyhow::Result<()> {
    let h = Harness::start(BODY_BLOCK, &manifest(BODY_BLOCK, &objects_in(BODY_BLOCK))).await?;
    let checks = Arc::new(AtomicUsize::new(0));
    let tunnels = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    authorizer_pod_in(BODY_BLOCK, h.ca.clone(), checks.clone(), tunnels, shutdown).await?;
    let _v1 = h.backend("v1").await?;
    let mut caller = h.http1(SLEEP).await?;
    let post = |path: &str, body: &'static str| {
        Request::post(format!("http://reviews.default:9080{path}"))
            .header(http::header::HOST, "reviews.default:9080")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request")
    };

    // HTTP: the whole body (within 16 bytes) goes to the authorizer, and on to the backend.
    let allowed = caller.send(post("/body/echo", "user=alice")).await?;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        allowed.header("x-echo-x-authz-body"),
        Some("user=alice|false")
    );
    assert_eq!(
        allowed.body, "user=alice",
        "the backend got the body read for the check"
    );
    let denied = caller.send(post("/body/echo", "user=bob")).await?;
    assert_eq!(denied.status, 403);
    assert_eq!(checks.load(Ordering::SeqCst), 2);
    // Longer than maxRequestBytes, partial messages not allowed: 413, and no check.
    let too_long = caller
        .send(post("/body/echo", "user=alice&and=a-lot-more"))
        .await?;
    assert_eq!(too_long.status, 413, "{too_long:?}");
    assert_eq!(checks.load(Ordering::SeqCst), 2);

    // gRPC, partial allowed, as bytes: the first 8 bytes checked, the whole body sent on.
    let mut caller = h.http1(SLEEP).await?;
    let partial = caller
        .send(post("/grpcbody/echo", "alice-and-more-bytes"))
        .await?;
    assert_eq!(partial.status, 200, "{partial:?}");
    assert_eq!(
        partial.header("x-echo-x-grpc-body"),
        Some("alice-an|true|bytes")
    );
    assert_eq!(partial.body, "alice-and-more-bytes");
    let short = caller.send(post("/grpcbody/echo", "alice")).await?;
    assert_eq!(
        short.header("x-echo-x-grpc-body"),
        Some("alice|false|bytes")
    );
    let refused = caller
        .send(post("/grpcbody/echo", "mallory-says-hi"))
        .await?;
    assert_eq!(refused.status, 403, "{refused:?}");
    Ok(())
}

/// With tracing on, a check goes on in the request's trace: the authorizer is called with the
/// same `traceparent` as the backend (the waypoint's span as the parent, in the caller's
/// trace), over HTTP and over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_go_on_in_the_requests_trace() -> anyhow::Result<()> {
    let mut objects = objects_in(TRACE_BLOCK);
    let config_map = (objects.iter_mut())
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the mesh config");
    let mesh = config_map["data"]["mesh"].as_str().unwrap_or_default();
    // Spans go to a pod nothing listens on: exports fail, requests do not care.
    let with_tracer = format!(
        "{mesh}- name: otel\n  opentelemetry: {{service: down.default.svc.cluster.local, port: 8000}}\n"
    );
    config_map["data"]["mesh"] = Value::String(with_tracer);
    objects.push(
        json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": "istio-system"},
        "spec": {"tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 100}]}}),
    );
    let h = Harness::start(TRACE_BLOCK, &manifest(TRACE_BLOCK, &objects)).await?;
    let (checks, tunnels) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    authorizer_pod_in(TRACE_BLOCK, h.ca.clone(), checks, tunnels, shutdown).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut caller = h.http1(SLEEP).await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let get = |path: &str| {
        Request::get(format!("http://reviews.default:9080{path}"))
            .header(http::header::HOST, "reviews.default:9080")
            .header("x-user", "alice")
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    for (path, seen_by_authorizer) in [
        ("/http/a", "x-echo-x-authz-traceparent"),
        ("/grpc/a", "x-echo-x-grpc-traceparent"),
    ] {
        let answer = caller.send(get(path)).await?;
        assert_eq!(answer.status, 200, "{answer:?}");
        let backend = answer.header("x-echo-traceparent").unwrap_or_default();
        assert!(backend.starts_with(&format!("00-{trace_id}-")), "{backend}");
        assert!(
            !backend.contains("00f067aa0ba902b7"),
            "the waypoint's span is the parent"
        );
        assert_eq!(answer.header(seen_by_authorizer), Some(backend), "{path}");
    }
    Ok(())
}
