//! The waypoint on its own (see `common`): routing, filters, local replies shaped for HTTP and
//! gRPC callers, and failed upstreams — each through real HBONE, Pingora and HTTP/2.

mod common;

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use common::{Client, Harness, Protocols, manifest, manifest_with_port, route_to_reviews};
use mesh_config::fixtures::policy;
use serde_json::json;

const SLEEP: &str = "sleep";

fn allow_only_productpage() -> serde_json::Value {
    policy(
        "default",
        "only-productpage",
        json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/productpage"]}}]}]
        }),
    )
}

/// Waits until the request metric with `labels` reaches `at_least` (logging runs after the
/// response is sent).
async fn wait_metric(h: &Harness, labels: &[(&str, &str)], at_least: f64) -> f64 {
    h.wait_metric("istio_requests_total", labels, at_least)
        .await
}

#[tokio::test]
async fn routes_applies_filters_and_reports_the_caller_upstream() -> anyhow::Result<()> {
    let rules = json!([{
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-route", "value": "r1"}]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-served", "value": "waypoint"}]}}
        ],
        "backendRefs": [{"name": "reviews", "port": 9080}]
    }]);
    let h = Harness::start(61, &manifest(61, &[route_to_reviews(rules)])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    for _ in 0..3 {
        let reply = client.get("/reviews/1").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(matches!(reply.header("x-backend"), Some("v1" | "v2")));
        assert_eq!(reply.header("x-echo-x-route"), Some("r1"));
        assert_eq!(reply.header("x-served"), Some("waypoint"));
        let xfcc = reply
            .header("x-echo-x-forwarded-client-cert")
            .unwrap_or_default();
        assert_eq!(
            xfcc,
            "By=spiffe://cluster.local/ns/default/sa/waypoint-0;URI=spiffe://cluster.local/ns/default/sa/sleep"
        );
    }
    // Istio's labels, the app and version ones from the pods' labels.
    let labels = [
        ("reporter", "waypoint"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("source_workload", "sleep"),
        ("source_app", "sleep"),
        ("source_version", "unknown"),
        ("source_cluster", "Kubernetes"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_app", "reviews"),
        ("destination_cluster", "Kubernetes"),
        ("grpc_response_status", ""),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(wait_metric(&h, &labels, 3.0).await, 3.0);
    let versions =
        ["v1", "v2"].map(|v| h.metric("istio_requests_total", &[("destination_version", v)]));
    assert_eq!(versions.iter().sum::<f64>(), 3.0, "{versions:?}");
    // Body sizes: a 1000-byte upload answered by the echo of it.
    let upload = http::Request::post("http://reviews.default:9080/echo")
        .header(http::header::HOST, "reviews.default:9080")
        .body(
            Full::new(Bytes::from(vec![b'u'; 1000]))
                .map_err(|never| match never {})
                .boxed(),
        )?;
    let echoed = client.start(upload).await?;
    assert_eq!(echoed.status(), 200);
    echoed.into_body().collect().await?;
    let post = [("response_code", "200"), ("source_workload", "sleep")];
    let sent = h.wait_metric("istio_request_bytes", &post, 1000.0).await;
    assert_eq!(sent, 1000.0, "request bodies: three GETs and the upload");
    assert!(h.metric("istio_response_bytes", &post) >= 1000.0);
    istio_metrics_have_istios_labels_and_buckets(&h.registry);
    Ok(())
}

/// Istio's standard request metrics, label by label as its "Istio Standard Metrics" page lists
/// them, and the duration buckets Istio's proxies use, so dashboards read them unchanged.
fn istio_metrics_have_istios_labels_and_buckets(registry: &prometheus::Registry) {
    const ISTIO_LABELS: [&str; 25] = [
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "source_canonical_service",
        "source_canonical_revision",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "destination_cluster",
        "destination_canonical_service",
        "destination_canonical_revision",
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    ];
    let want: std::collections::BTreeSet<&str> = ISTIO_LABELS.into_iter().collect();
    let families = registry.gather();
    for name in [
        "istio_requests_total",
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let family = (families.iter())
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{name} is exported"));
        for metric in family.get_metric() {
            let have: std::collections::BTreeSet<&str> =
                metric.get_label().iter().map(|l| l.name()).collect();
            assert_eq!(have, want, "{name}'s labels");
        }
    }
    let duration = (families.iter())
        .find(|f| f.name() == "istio_request_duration_milliseconds")
        .expect("exported");
    let bounds: Vec<f64> = duration.get_metric()[0]
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| b.upper_bound())
        .collect();
    let istio = [
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ];
    assert_eq!(bounds, istio, "Istio's duration buckets");
}

#[tokio::test]
async fn denials_are_shaped_for_the_caller_and_keep_the_connection() -> anyhow::Result<()> {
    let h = Harness::start(62, &manifest(62, &[allow_only_productpage()])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut http = h.http1(SLEEP).await?;
    for _ in 0..2 {
        let denied = http.get("/reviews/1").await?;
        assert_eq!(denied.status, 403);
        assert!(denied.body.starts_with("RBAC: access denied"), "{denied:?}");
        assert_eq!(denied.header("content-type"), Some("text/plain"));
    }
    let mut grpc = h.h2c(SLEEP).await?;
    let denied = grpc.grpc("/reviews.Reviews/Get").await?;
    assert_eq!(denied.status, 200, "gRPC callers get HTTP 200");
    assert_eq!(denied.header("grpc-status"), Some("7"), "PERMISSION_DENIED");
    assert!(
        denied
            .header("grpc-message")
            .unwrap_or_default()
            .starts_with("RBAC: access denied"),
        "{denied:?}"
    );
    let allowed = h.http1("productpage").await?.get("/reviews/1").await?;
    assert_eq!(allowed.status, 200);
    // Counted against the Service the callers addressed, though no backend was chosen.
    let denied = [
        ("response_flags", "DENY"),
        ("response_code", "403"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("destination_workload", "unknown"),
    ];
    assert_eq!(wait_metric(&h, &denied[..2], 2.0).await, 2.0);
    assert_eq!(wait_metric(&h, &denied, 2.0).await, 2.0);
    let grpc_denied = [
        ("response_flags", "DENY"),
        ("response_code", "200"),
        denied[2],
    ];
    assert_eq!(wait_metric(&h, &grpc_denied, 1.0).await, 1.0);
    Ok(())
}

#[tokio::test]
async fn no_matching_route_is_404_or_unimplemented() -> anyhow::Result<()> {
    let rules = json!([{
        "matches": [{"path": {"type": "PathPrefix", "value": "/only"}}],
        "backendRefs": [{"name": "reviews", "port": 9080}]
    }]);
    let h = Harness::start(63, &manifest(63, &[route_to_reviews(rules)])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut http = h.http1(SLEEP).await?;
    assert_eq!(http.get("/only/x").await?.status, 200);
    let missed = http.get("/other").await?;
    assert_eq!(
        (missed.status, missed.body.as_str()),
        (404, "no route matched\n")
    );
    let unimplemented = h.h2c(SLEEP).await?.grpc("/reviews.Reviews/Get").await?;
    assert_eq!(unimplemented.header("grpc-status"), Some("12"));
    assert_eq!(wait_metric(&h, &[("response_flags", "NR")], 2.0).await, 2.0);
    Ok(())
}

#[tokio::test]
async fn a_failed_upstream_is_503_uf_for_http_and_unavailable_for_grpc() -> anyhow::Result<()> {
    // No backend runs: every HBONE dial to an endpoint is refused. (Pingora closes the
    // downstream connection after an upstream failure whatever `fail_to_proxy` says, so each
    // try uses its own connection.)
    let h = Harness::start(64, &manifest(64, &[])).await?;
    for _ in 0..2 {
        let failed = h.http1(SLEEP).await?.get("/reviews/1").await?;
        assert_eq!(failed.status, 503, "{failed:?}");
        assert!(
            failed.body.starts_with("upstream connect error"),
            "{failed:?}"
        );
    }
    let unavailable = h.h2c(SLEEP).await?.grpc("/reviews.Reviews/Get").await?;
    assert_eq!(unavailable.status, 200);
    assert_eq!(unavailable.header("grpc-status"), Some("14"), "UNAVAILABLE");
    let flagged = wait_metric(
        &h,
        &[("response_flags", "UF"), ("response_code", "503")],
        2.0,
    )
    .await;
    assert_eq!(flagged, 2.0, "HTTP failures flagged UF");
    Ok(())
}

#[tokio::test]
async fn grpc_reaches_the_backend_with_trailers() -> anyhow::Result<()> {
    let h = Harness::start(65, &manifest_with_port(65, "grpc", &[])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut grpc = h.h2c(SLEEP).await?;
    for _ in 0..3 {
        let ok = grpc.grpc("/reviews.Reviews/Get").await?;
        assert_eq!(ok.status, 200);
        let trailers = ok.trailers.as_ref().expect("trailers from the backend");
        assert_eq!(
            trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
            Some("0")
        );
        assert_eq!(ok.header("x-echo-content-type"), Some("application/grpc"));
    }
    Ok(())
}

/// Sends raw bytes through a tunnel; the answer's status line.
async fn raw_status(h: &Harness, request: &[u8]) -> anyhow::Result<String> {
    let text = raw_exchange(h, request, |text| text.contains("\r\n")).await?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Sends raw bytes through a tunnel; the whole answer (head and body).
async fn raw_response(h: &Harness, request: &[u8]) -> anyhow::Result<String> {
    raw_exchange(h, request, |text| {
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok());
        length.is_some_and(|n| body.len() >= n)
    })
    .await
}

/// Writes `request` on a fresh tunnel and reads until `complete` says the answer is whole.
async fn raw_exchange(
    h: &Harness,
    request: &[u8],
    complete: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tunnel = h.tunnel(SLEEP, "1.10", &h.reviews_vip()).await?;
    tunnel.write_all(request).await?;
    let mut text = String::new();
    let mut buf = vec![0u8; 4096];
    while !complete(&text) {
        let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "the waypoint closed the tunnel after {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(text)
}

#[tokio::test]
async fn http11_without_host_is_refused_with_400() -> anyhow::Result<()> {
    let h = Harness::start(66, &manifest(66, &[])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let ok = raw_status(&h, b"GET /r HTTP/1.1\r\nhost: reviews:9080\r\n\r\n").await?;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let no_host = raw_status(&h, b"GET /r HTTP/1.1\r\n\r\n").await?;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    let http10 = raw_status(&h, b"GET /r HTTP/1.0\r\n\r\n").await?;
    assert!(
        http10.starts_with("HTTP/1.1 200") || http10.starts_with("HTTP/1.0 200"),
        "{http10}"
    );
    assert_eq!(
        wait_metric(&h, &[("response_flags", "DPE")], 1.0).await,
        1.0
    );
    // An absolute-form target: its authority must be the `Host` (Pingora refuses one that
    // differs, stricter than RFC 9112 §3.2.2's replacing it), and a `Host` it must have; the
    // backend is sent origin-form with the normalized path.
    let absolute =
        b"GET http://reviews.default:9080/a/../r HTTP/1.1\r\nhost: reviews.default:9080\r\n\r\n";
    let answer = raw_response(&h, absolute).await?.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-echo-host: reviews.default:9080\r\n"),
        "{answer}"
    );
    assert!(answer.contains("x-seen-path: /r\r\n"), "{answer}");
    let elsewhere = b"GET http://reviews.default:9080/r HTTP/1.1\r\nhost: elsewhere:1\r\n\r\n";
    let elsewhere = raw_status(&h, elsewhere).await?;
    assert!(elsewhere.starts_with("HTTP/1.1 400"), "{elsewhere}");
    let hostless = raw_status(&h, b"GET http://reviews.default:9080/r HTTP/1.1\r\n\r\n").await?;
    assert!(hostless.starts_with("HTTP/1.1 400"), "{hostless}");
    // Heads Pingora refuses itself (that Host, a bad header name) are counted as the
    // waypoint's own refusals are.
    let bad_name = b"GET /r HTTP/1.1\r\nhost: reviews:9080\r\nbad name: x\r\n\r\n";
    let bad_name = raw_status(&h, bad_name).await?;
    assert!(bad_name.starts_with("HTTP/1.1 400"), "{bad_name}");
    let refused = [("response_code", "400"), ("response_flags", "DPE")];
    assert_eq!(wait_metric(&h, &refused, 4.0).await, 4.0);
    // Control characters never reach the backend raw: Pingora percent-encodes them.
    let control = raw_response(&h, b"GET /a\x01b HTTP/1.1\r\nhost: reviews:9080\r\n\r\n").await?;
    assert!(control.ends_with(" GET /a%01b"), "{control:?}");
    Ok(())
}

/// h2c upstreams multiplex: 40 concurrent calls from one caller share the pooled upstream
/// connections (Pingora's default of one stream per HTTP/2 connection opened one per call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_h2c_upstream_connections() -> anyhow::Result<()> {
    let h = Harness::start(60, &manifest_with_port(60, "grpc", &[])).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let Client::Http2(sender) = h.h2c(SLEEP).await? else {
        unreachable!("h2c() gives an HTTP/2 client")
    };
    // Each upstream connection is one tunnel into a backend, kept in the pool when idle.
    let connections = || v1.open_tunnels() + v2.open_tunnels();
    // One connection to each backend first: a burst that finds none opens one per request
    // (Pingora does not wait for a connection being made).
    for _ in 0..50 {
        if v1.open_tunnels() > 0 && v2.open_tunnels() > 0 {
            break;
        }
        Client::Http2(sender.clone()).get("/warm").await?;
    }
    let before = connections();
    assert_eq!(
        before, 2,
        "one pooled connection per backend after sequential calls"
    );
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut client = Client::Http2(sender.clone());
        calls.spawn(async move { client.get("/slow").await });
    }
    for reply in calls.join_all().await {
        let reply = reply?;
        let protocol = reply.header("x-backend-protocol");
        assert_eq!((reply.status, protocol), (200, Some("HTTP/2.0")));
    }
    let opened = connections() - before;
    assert!(
        opened <= 4,
        "40 concurrent h2c calls opened {opened} more upstream connections"
    );
    Ok(())
}

/// A backend that closes each keep-alive connection at its second request, unanswered: a GET
/// on such a reused connection goes again on a new one (no GET fails), and a POST, which
/// reached the app, is never sent twice (it fails with 503 instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_backend_closes_fail_no_get_and_repeat_no_post() -> anyhow::Result<()> {
    let h = Harness::start(58, &manifest(58, &[])).await?;
    let closing = Protocols::Http1DroppingReused;
    let v1 = h.backend_speaking("v1", closing).await?;
    let v2 = h.backend_speaking("v2", closing).await?;
    let mut client = h.http1(SLEEP).await?;
    for i in 0..300u64 {
        let reply = client
            .get(&format!("/get/{i}"))
            .await
            .with_context(|| format!("GET {i}"))?;
        assert_eq!(reply.status, 200, "GET {i}: {reply:?}");
        // Spread the requests over the connections' lifetimes.
        tokio::time::sleep(Duration::from_millis(i % 7 * 5)).await;
    }
    let mut failed = 0;
    for i in 0..100u64 {
        let path = format!("/post/{i}");
        let request = http::Request::post(format!("http://reviews.default:9080{path}"))
            .header(http::header::HOST, "reviews.default:9080")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))?;
        let reply = client
            .send(request)
            .await
            .with_context(|| format!("POST {i}"))?;
        assert!(matches!(reply.status, 200 | 503), "POST {i}: {reply:?}");
        failed += usize::from(reply.status == 503);
        if reply.header("connection") == Some("close") {
            // Answered before the body was read (the app did not read it, or the waypoint
            // failed first): the waypoint says so and closes, as Envoy does.
            client = h.http1(SLEEP).await?;
        }
        assert!(
            v1.times_seen(&path) + v2.times_seen(&path) <= 1,
            "POST {i} reached the app twice"
        );
        tokio::time::sleep(Duration::from_millis(i % 7 * 5)).await;
    }
    assert!(failed > 0, "no POST went on a reused connection");
    assert!(failed < 100, "every POST failed");
    Ok(())
}

/// HTTPRoute `timeouts`: `request` bounds the whole request, `backendRequest` each attempt;
/// past either the caller gets 504 `UT` (Envoy's "upstream request timeout"), and a request
/// that finishes in time is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_answer_504_when_the_backend_is_too_slow() -> anyhow::Result<()> {
    let rules = json!([
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/request"}}],
            "timeouts": {"request": "400ms"},
            "backendRefs": [{"name": "reviews", "port": 9080}]
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/backend"}}],
            "timeouts": {"request": "10s", "backendRequest": "300ms"},
            "backendRefs": [{"name": "reviews", "port": 9080}]
        }
    ]);
    let h = Harness::start(57, &manifest(57, &[route_to_reviews(rules)])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    for (path, limit) in [("/request/stall", 400), ("/backend/stall", 300)] {
        let mut client = h.http1(SLEEP).await?;
        let started = std::time::Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(5), client.get(path))
            .await
            .with_context(|| format!("{path}: no answer in 5 s"))??;
        let took = started.elapsed();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (504, "upstream request timeout\n"),
            "{path}"
        );
        assert!(
            took >= Duration::from_millis(limit) && took < Duration::from_millis(limit + 1500),
            "{path} answered after {took:?}"
        );
        // The connection stays usable, and a request that finishes in time is served.
        let slow = client.get(&path.replace("stall", "slow")).await?;
        assert_eq!(slow.status, 200, "a 200 ms answer within {limit} ms");
    }
    assert_eq!(wait_metric(&h, &[("response_flags", "UT")], 2.0).await, 2.0);
    Ok(())
}

#[tokio::test]
async fn the_service_port_decides_the_backend_protocol() -> anyhow::Result<()> {
    // Port `http`: an h2c caller in front of an HTTP/1.1-only app is spoken for in HTTP/1.1.
    let h = Harness::start(67, &manifest(67, &[])).await?;
    let _v1 = h.backend_speaking("v1", Protocols::Http1Only).await?;
    let _v2 = h.backend_speaking("v2", Protocols::Http1Only).await?;
    let mut h2c = h.h2c(SLEEP).await?;
    for _ in 0..3 {
        let reply = h2c.get("/reviews/1").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("x-backend-protocol"), Some("HTTP/1.1"));
    }
    // A port name that declares no protocol: as the caller speaks.
    let h = Harness::start(68, &manifest_with_port(68, "web", &[])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let over_h2 = h.h2c(SLEEP).await?.get("/reviews/1").await?;
    assert_eq!(over_h2.header("x-backend-protocol"), Some("HTTP/2.0"));
    let over_h1 = h.http1(SLEEP).await?.get("/reviews/1").await?;
    assert_eq!(over_h1.header("x-backend-protocol"), Some("HTTP/1.1"));
    Ok(())
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() -> anyhow::Result<()> {
    let h = Harness::start(73, &manifest(73, &[])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let head = |extra: &str| format!("GET /r HTTP/1.1\r\nhost: reviews:9080\r\n{extra}\r\n");
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    // `host` plus 99 more is Envoy's limit of 100; one more is over it.
    let at_limit = raw_status(&h, head(&many(99)).as_bytes()).await?;
    assert!(at_limit.starts_with("HTTP/1.1 200"), "{at_limit}");
    let over_count = raw_status(&h, head(&many(100)).as_bytes()).await?;
    assert!(over_count.starts_with("HTTP/1.1 431"), "{over_count}");
    let big = format!("x-big: {}\r\n", "a".repeat(61 << 10));
    let over_size = raw_status(&h, head(&big).as_bytes()).await?;
    assert!(over_size.starts_with("HTTP/1.1 431"), "{over_size}");
    // The same over HTTP/2.
    let mut request = http::Request::get("http://reviews.default:9080/r")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    for i in 0..120 {
        request
            .headers_mut()
            .insert(http::HeaderName::try_from(format!("x-h{i}"))?, "v".parse()?);
    }
    assert_eq!(h.h2c(SLEEP).await?.send(request).await?.status, 431);
    assert_eq!(
        wait_metric(
            &h,
            &[("response_code", "431"), ("response_flags", "DPE")],
            3.0
        )
        .await,
        3.0
    );
    Ok(())
}

#[tokio::test]
async fn a_head_far_over_the_limits_is_answered_431_before_it_ends() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(79, &manifest(79, &[])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    // 200 KiB of headers and no end to the head: refused once it passes the bound on a whole
    // head (60 KiB of headers, 4 bytes per line, 16 KiB of request line), not read to the
    // end nor left to the head timeout (10 s).
    let mut tunnel = h.tunnel(SLEEP, "1.10", &h.reviews_vip()).await?;
    let lines: String = (0..50)
        .map(|i| format!("x-h{i}: {}\r\n", "a".repeat(4 << 10)))
        .collect();
    let started = std::time::Instant::now();
    let head = format!("GET /r HTTP/1.1\r\nhost: reviews:9080\r\n{lines}");
    tunnel.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut answer))
        .await
        .context("the endless head was not refused")??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Counted as any refused request, against the Service the tunnel addressed.
    let refused = [
        ("response_code", "431"),
        ("response_flags", "DPE"),
        ("destination_service_name", "reviews"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/sleep",
        ),
    ];
    assert_eq!(wait_metric(&h, &refused, 1.0).await, 1.0);
    // A small head followed at once by a large body is read as before.
    let body = "b".repeat(300 << 10);
    let post = format!(
        "POST /r HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let status = raw_status(&h, post.as_bytes()).await?;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    Ok(())
}

#[tokio::test]
async fn a_silent_backend_ends_the_request_with_504_ut_after_the_stream_idle_timeout()
-> anyhow::Result<()> {
    let timeouts = waypoint::Timeouts {
        stream_idle: Duration::from_millis(500),
        ..waypoint::Timeouts::default()
    };
    let h = Harness::start_with(74, &manifest(74, &[]), timeouts).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let started = std::time::Instant::now();
    let (stalled, ok) = tokio::join!(async { h.http1(SLEEP).await?.get("/stall").await }, async {
        h.http1(SLEEP).await?.get("/ok").await
    });
    let stalled = stalled?;
    assert_eq!(stalled.status, 504, "{stalled:?}");
    assert!(
        stalled.body.starts_with("upstream request timeout"),
        "{stalled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(ok?.status, 200, "others are served meanwhile");
    assert_eq!(wait_metric(&h, &[("response_flags", "UT")], 1.0).await, 1.0);
    Ok(())
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_closes_the_connection_but_idle_keep_alive_does_not()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeouts = waypoint::Timeouts {
        request_headers: Duration::from_millis(800),
        ..waypoint::Timeouts::default()
    };
    let deny_denied = policy(
        "default",
        "deny-denied",
        json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
            "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/denied"]}}]}]
        }),
    );
    let h = Harness::start_with(75, &manifest(75, &[deny_denied]), timeouts).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;

    // Slowloris: a byte every 100 ms, never finishing the head.
    let slow = h.tunnel(SLEEP, "1.10", &h.reviews_vip()).await?;
    let (mut from_waypoint, mut to_waypoint) = tokio::io::split(slow);
    let started = std::time::Instant::now();
    to_waypoint
        .write_all(b"GET /r HTTP/1.1\r\nhost: reviews:9080\r\nx-slow: ")
        .await?;
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if to_waypoint.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    // The waypoint ends the tunnel: the caller reads its end.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), from_waypoint.read_to_end(&mut rest))
        .await
        .context("the slow head was never cut off")??;
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(3),
        "the slow head was cut off after {closed_after:?}"
    );

    // A caller that broke the protocol (431 here) has its connection closed after the answer.
    let mut broken = h.tunnel(SLEEP, "1.10", &h.reviews_vip()).await?;
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let refused = format!("GET /r HTTP/1.1\r\nhost: reviews:9080\r\n{many}\r\n");
    broken.write_all(refused.as_bytes()).await?;
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), broken.read_to_end(&mut text))
        .await
        .context("the connection of a 431 stayed open")??;
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    // A keep-alive connection idle longer than the head timeout between requests is fine,
    // also after a request the waypoint answered itself (no read happens during those).
    let mut idle = h.tunnel(SLEEP, "1.10", &h.reviews_vip()).await?;
    idle.write_all(b"GET /denied HTTP/1.1\r\nhost: reviews:9080\r\n\r\n")
        .await?;
    let mut text = String::new();
    let mut buf = vec![0u8; 4096];
    while !(text.contains("\r\n\r\nRBAC: access denied") && text.ends_with('\n')) {
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed after {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let request = b"GET /r HTTP/1.1\r\nhost: reviews:9080\r\n\r\n";
    for _ in 0..2 {
        idle.write_all(request).await?;
        let mut text = String::new();
        let mut buf = vec![0u8; 4096];
        // The whole response: its body ends with the request line the backend echoes.
        while !text.ends_with("GET /r") {
            let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await??;
            anyhow::ensure!(n > 0, "closed after {text:?}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    Ok(())
}

/// Istio's `Telemetry` switches a request metric off for the waypoint (the others stay).
#[tokio::test]
async fn a_telemetry_resource_switches_a_request_metric_off() -> anyhow::Result<()> {
    let telemetry = serde_json::json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "quiet", "namespace": "default"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
                 "metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT"}, "disabled": true}]}]}});
    let h = Harness::start(118, &manifest(118, &[telemetry])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    for _ in 0..2 {
        assert_eq!(client.get("/reviews/1").await?.status, 200);
    }
    let ok = [("response_code", "200")];
    let timed = h
        .wait_metric("istio_request_duration_milliseconds", &ok, 1e-9)
        .await;
    assert!(timed > 0.0, "durations are still recorded");
    assert_eq!(
        h.metric("istio_requests_total", &ok),
        0.0,
        "the count is off"
    );
    Ok(())
}
