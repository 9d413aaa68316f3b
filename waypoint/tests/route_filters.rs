//! HTTPRoute filters at the waypoint, through real HBONE and Pingora to real backends:
//! redirects, URL rewrites, CORS, and filters on a backendRef applied only when it serves.

mod common;

use bytes::Bytes;
use common::{Harness, Reply, manifest, route_to_reviews};
use http_body_util::Full;
use serde_json::json;

const SLEEP: &str = "sleep";

fn backend(version: &str) -> serde_json::Value {
    json!({"name": format!("reviews-{version}"), "port": 9080})
}

/// Services `reviews-v1` and `reviews-v2` (one pod each) besides the manifest's `reviews`.
fn versions(block: u8) -> Vec<serde_json::Value> {
    ["v1", "v2"]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut svc = mesh_config::fixtures::service(
                "default",
                &format!("reviews-{v}"),
                &common::ip(block, &format!("100.{}", 20 + i)).to_string(),
                json!({"app": "reviews", "version": v}),
            );
            svc["spec"]["ports"] = json!([{"name": "http", "port": 9080, "targetPort": 9080}]);
            svc
        })
        .collect()
}

async fn send(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://reviews.default:9080{path}"))
        .header(http::header::HOST, "reviews.default:9080");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    h.http1(SLEEP)
        .await?
        .send(request.body(Full::new(Bytes::new()))?)
        .await
}

/// Redirects answer at the waypoint (nothing reaches a backend): scheme, host, port and path
/// as the filter says, the rest kept, the addressed Service port kept unless the scheme's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_answered_by_the_waypoint() -> anyhow::Result<()> {
    let block = 99;
    let prefix = |value: &str| json!({"path": {"type": "PathPrefix", "value": value}});
    let route = route_to_reviews(json!([
        {"matches": [prefix("/original-prefix")], "filters": [{"type": "RequestRedirect",
            "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"}}}]},
        {"matches": [prefix("/scheme")], "filters": [{"type": "RequestRedirect",
            "requestRedirect": {"scheme": "https", "statusCode": 301}}]},
        {"matches": [prefix("/host-and-port")], "filters": [{"type": "RequestRedirect",
            "requestRedirect": {"hostname": "example.org", "port": 8083, "statusCode": 308,
                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/full"}}}]},
        {"matches": [prefix("/backend-level")], "backendRefs": [{"name": "reviews", "port": 9080,
            "filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 303,
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/redirected"}}}]}]},
        {"backendRefs": [{"name": "reviews", "port": 9080}]}
    ]));
    let h = Harness::start(block, &manifest(block, &[route])).await?;
    let v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let cases = [
        (
            "/original-prefix/lemon?x=1",
            302,
            "http://reviews.default:9080/replacement-prefix/lemon?x=1",
        ),
        ("/scheme/a", 301, "https://reviews.default/scheme/a"),
        ("/host-and-port/a", 308, "http://example.org:8083/full"),
        (
            "/backend-level/a",
            303,
            "http://reviews.default:9080/redirected/a",
        ),
    ];
    for (path, status, location) in cases {
        let reply = send(&h, "GET", path, &[]).await?;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        assert_eq!(reply.header("location"), Some(location), "{path}");
        assert_eq!(reply.header("x-backend"), None, "{path} reached a backend");
        assert!(reply.body.is_empty(), "{path}: {:?}", reply.body);
    }
    // Unredirected traffic still flows, and nothing redirected reached an app.
    assert_eq!(send(&h, "GET", "/other", &[]).await?.status, 200);
    assert_eq!(
        v1.times_seen("/scheme/a") + v1.times_seen("/original-prefix/lemon"),
        0
    );
    Ok(())
}

/// URLRewrite: the backend sees the new path (query kept, no `//`) and host; header
/// modifiers of the rule and of the chosen backendRef both apply, the backend's only to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_backend_filters_reach_the_backend() -> anyhow::Result<()> {
    let block = 100;
    let prefix = |value: &str| json!({"path": {"type": "PathPrefix", "value": value}});
    let with_header = |version: &str| {
        let mut b = backend(version);
        b["filters"] = json!([{"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-chosen", "value": version}]}},
            {"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "x-chosen-by-route", "value": version}]}}]);
        b
    };
    let route = route_to_reviews(json!([
        {"matches": [prefix("/prefix/one")], "filters": [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/one"}}}],
         "backendRefs": [backend("v1")]},
        {"matches": [prefix("/strip-prefix")], "filters": [{"type": "URLRewrite", "urlRewrite": {
            "hostname": "one.example.org",
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
         "backendRefs": [backend("v1")]},
        {"matches": [{"path": {"type": "Exact", "value": "/full/one/two"}}], "filters": [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/one"}}},
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-rule", "value": "full"}]}}],
         "backendRefs": [backend("v1")]},
        {"matches": [prefix("/split")], "backendRefs": [with_header("v1"), with_header("v2")]}
    ]));
    let mut extra = versions(block);
    extra.push(route);
    let h = Harness::start(block, &manifest(block, &extra)).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let cases = [
        (
            "/prefix/one/two?q=1",
            "/one/two?q=1",
            "reviews.default:9080",
        ),
        ("/strip-prefix/three", "/three", "one.example.org"),
        ("/strip-prefix", "/", "one.example.org"),
        ("/full/one/two?q", "/one?q", "reviews.default:9080"),
    ];
    for (path, seen, host) in cases {
        let reply = send(&h, "GET", path, &[]).await?;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.header("x-seen-path"), Some(seen), "{path}");
        assert_eq!(reply.header("x-echo-host"), Some(host), "{path}");
    }
    // An h2c caller (the authority in the URI, no Host header) is rewritten alike.
    let request = http::Request::get("http://reviews.default:9080/prefix/one/two?q=2")
        .body(Full::new(Bytes::new()))?;
    let h2c = h.h2c(SLEEP).await?.send(request).await?;
    assert_eq!(h2c.header("x-seen-path"), Some("/one/two?q=2"), "{h2c:?}");
    assert_eq!(h2c.header("x-backend"), Some("v1"));
    let full = send(&h, "GET", "/full/one/two", &[]).await?;
    assert_eq!(full.header("x-echo-x-rule"), Some("full"));
    // Each backendRef's own filters, only when it serves: 40 requests, both served.
    let mut served = std::collections::BTreeSet::new();
    for i in 0..40 {
        let reply = send(&h, "GET", &format!("/split/{i}"), &[]).await?;
        let backend = reply.header("x-backend").unwrap_or("?").to_owned();
        assert_eq!(
            reply.header("x-echo-x-chosen"),
            Some(backend.as_str()),
            "request {i}"
        );
        assert_eq!(
            reply.header("x-chosen-by-route"),
            Some(backend.as_str()),
            "request {i}"
        );
        served.insert(backend);
    }
    assert_eq!(served.len(), 2, "{served:?}");
    Ok(())
}

/// CORS: the waypoint answers preflights itself (with or without an allowed origin), and
/// actual responses to an allowed origin gain the CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_responses_marked() -> anyhow::Result<()> {
    let block = 101;
    let route = route_to_reviews(json!([{
        "filters": [{"type": "CORS", "cors": {
            "allowOrigins": ["https://www.foo.com", "https://*.bar.com"],
            "allowMethods": ["GET", "OPTIONS"],
            "allowHeaders": ["x-header-1", "x-header-2"],
            "exposeHeaders": ["x-header-3"],
            "allowCredentials": true,
            "maxAge": 3600}}],
        "backendRefs": [{"name": "reviews", "port": 9080}]
    }]));
    let h = Harness::start(block, &manifest(block, &[route])).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let preflight = |origin| {
        vec![
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-header-1"),
        ]
    };
    let allowed = send(
        &h,
        "OPTIONS",
        "/cors",
        &preflight("https://xpto.www.bar.com"),
    )
    .await?;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://xpto.www.bar.com")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, OPTIONS")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("x-header-1, x-header-2")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("3600"));
    assert_eq!(
        allowed.header("x-backend"),
        None,
        "a preflight is the waypoint's to answer"
    );
    let refused = send(&h, "OPTIONS", "/cors", &preflight("https://foobar.com")).await?;
    assert_eq!(refused.status, 200);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert_eq!(v1.times_seen("/cors") + v2.times_seen("/cors"), 0);
    let actual = send(&h, "GET", "/cors", &[("origin", "https://www.foo.com")]).await?;
    assert_eq!(actual.status, 200);
    assert!(actual.header("x-backend").is_some());
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(
        actual.header("access-control-expose-headers"),
        Some("x-header-3")
    );
    let stranger = send(&h, "GET", "/cors", &[("origin", "https://foobar.com")]).await?;
    assert_eq!(stranger.status, 200);
    assert_eq!(stranger.header("access-control-allow-origin"), None);
    Ok(())
}

/// RequestMirror: the mirror gets a copy (host marked `-shadow`, body whole) while the caller's
/// answer comes from the route's backend alone; a share is mirrored at about its rate; a
/// mirror that is down costs the caller nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_get_copies_and_never_change_the_answer() -> anyhow::Result<()> {
    let block = 102;
    let prefix = |value: &str| json!({"path": {"type": "PathPrefix", "value": value}});
    let mirror = |to: &str, share: serde_json::Value| {
        let mut m = json!({"backendRef": {"name": to, "port": 9080}});
        if let (Some(m), Some(share)) = (m.as_object_mut(), share.as_object()) {
            m.extend(share.clone());
        }
        json!({"type": "RequestMirror", "requestMirror": m})
    };
    let mut dead = mesh_config::fixtures::service(
        "default",
        "dead",
        &common::ip(block, "100.30").to_string(),
        json!({"app": "dead"}),
    );
    dead["spec"]["ports"] = json!([{"name": "http", "port": 9080, "targetPort": 9080}]);
    let dead_pod = mesh_config::fixtures::pod(
        "default",
        "dead-0",
        &common::ip(block, "2.30").to_string(),
        json!({"app": "dead"}),
    );
    let route = route_to_reviews(json!([
        {"matches": [prefix("/mirror")], "filters": [mirror("reviews-v2", json!({}))],
         "backendRefs": [backend("v1")]},
        {"matches": [prefix("/percent-mirror")],
         "filters": [mirror("reviews-v2", json!({"fraction": {"numerator": 1, "denominator": 4}}))],
         "backendRefs": [backend("v1")]},
        {"matches": [prefix("/to-the-dead")], "filters": [mirror("dead", json!({}))],
         "backendRefs": [backend("v1")]}
    ]));
    let mut extra = versions(block);
    extra.extend([dead, dead_pod, route]);
    let h = Harness::start(block, &manifest(block, &extra)).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    // A POST of 300 KiB: the caller's answer is v1's, and v2 got the same body.
    let body = Bytes::from(vec![b'm'; 300 << 10]);
    let request = http::Request::post("http://reviews.default:9080/mirror/count-body")
        .header(http::header::HOST, "reviews.default:9080")
        .body(Full::new(body))?;
    let reply = h.http1(SLEEP).await?.send(request).await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "v1 Some(307200)")
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let copy = loop {
        let copies = v2.requests();
        if let Some(copy) = copies.into_iter().find(|s| s.path == "/mirror/count-body") {
            break copy;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no copy reached v2");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(copy.host, "reviews.default-shadow:9080");
    assert_eq!(copy.body_len, Some(300 << 10), "the copy's body is whole");
    assert_eq!(
        v1.requests()
            .iter()
            .filter(|s| s.path == "/mirror/count-body")
            .count(),
        1
    );
    // A quarter of 200 requests, within four standard deviations (σ ≈ 6.1).
    for i in 0..200 {
        let reply = send(&h, "GET", &format!("/percent-mirror/{i}"), &[]).await?;
        assert_eq!(reply.header("x-backend"), Some("v1"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let copies = (v2.requests().iter())
        .filter(|s| s.path.starts_with("/percent-mirror/"))
        .count();
    assert!(
        (26..=74).contains(&copies),
        "{copies} of 200 mirrored at 1/4"
    );
    // A mirror that cannot be reached: every caller still answered, at once.
    let started = std::time::Instant::now();
    for i in 0..20 {
        let reply = send(&h, "GET", &format!("/to-the-dead/{i}"), &[]).await?;
        assert_eq!(reply.status, 200);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Every copy is counted by how it ended.
    let metric = "mesh_upstream_mirrors_total";
    let answered = [
        (
            "destination_service",
            "reviews-v2.default.svc.cluster.local",
        ),
        ("outcome", "answered"),
    ];
    // Each copy v2's app saw is counted as answered, once every copy has settled.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let seen = (v2.requests().iter())
            .filter(|s| s.path.starts_with("/mirror/") || s.path.starts_with("/percent-mirror/"))
            .count() as f64;
        let counted = h.metric(metric, &answered);
        if counted == seen && seen >= 1.0 + copies as f64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{counted} counted, {seen} seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let failed = [
        ("destination_service", "dead.default.svc.cluster.local"),
        ("outcome", "failed"),
    ];
    assert_eq!(h.wait_metric(metric, &failed, 20.0).await, 20.0);
    Ok(())
}

/// GAMMA consumer routes: a route in the caller's namespace whose parent is the Service in
/// another namespace applies to that namespace's callers only, in place of the producer
/// routes; everyone else gets the producer routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_routes_apply_to_their_namespace_only() -> anyhow::Result<()> {
    let block = 103;
    let marked = |value: &str| {
        json!([{"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "set": [{"name": "x-route", "value": value}]}}],
            "backendRefs": [{"name": "reviews", "namespace": "default", "port": 9080}]}])
    };
    let parent = json!([{"group": "", "kind": "Service", "name": "reviews",
                         "namespace": "default", "port": 9080}]);
    let producer = mesh_config::fixtures::http_route(
        "default",
        "producer",
        parent.clone(),
        marked("producer"),
    );
    let consumer =
        mesh_config::fixtures::http_route("shop", "consumer", parent, marked("consumer"));
    let h = Harness::start(block, &manifest(block, &[producer, consumer])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    for (caller, route) in [
        ("sleep", "producer"),
        ("shop/client", "consumer"),
        ("bank/client", "producer"),
    ] {
        let reply = h.http1(caller).await?.get("/x").await?;
        assert_eq!(reply.status, 200, "{caller}: {reply:?}");
        assert_eq!(reply.header("x-route"), Some(route), "{caller}");
    }
    Ok(())
}
