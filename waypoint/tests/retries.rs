//! Retries at the waypoint, against backends that misbehave on purpose (`common::Fault`):
//! what goes again and what never does, where a retry goes, bodies replayed, try timeouts,
//! and the retry budget — through real HBONE, Pingora and HTTP/2.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use common::{Backend, Client, Harness, Reply, manifest, manifest_with_port, route_to_reviews};
use http_body_util::Full;
use serde_json::json;

const SLEEP: &str = "sleep";
const RETRIES: &str = "mesh_upstream_retries_total";
const EXHAUSTED: &str = "mesh_upstream_retry_budget_exhausted_total";

fn post(path: &str, body: impl Into<Bytes>) -> anyhow::Result<http::Request<Full<Bytes>>> {
    Ok(
        http::Request::post(format!("http://reviews.default:9080{path}"))
            .header(http::header::HOST, "reviews.default:9080")
            .body(Full::new(body.into()))?,
    )
}

/// How many times `path` reached either backend.
fn seen(backends: &[&Backend], path: &str) -> usize {
    backends.iter().map(|b| b.times_seen(path)).sum()
}

fn rule(prefix: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut rule = json!({
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "backendRefs": [{"name": "reviews", "port": 9080}]
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        rule[key] = value.clone();
    }
    rule
}

/// A 503 reaches the caller unless the route lists it (never retried by default, as Istio
/// ≥ 1.24); listed, it goes again to the other endpoint, body and all, up to 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_only_when_the_route_lists_it() -> anyhow::Result<()> {
    let listed = json!({"retry": {"codes": [503], "attempts": 2, "backoff": "10ms"}});
    let rules = json!([rule("/listed", listed), rule("/", json!({}))]);
    let h = Harness::start(88, &manifest(88, &[route_to_reviews(rules)])).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let both = [&v1, &v2];
    let mut client = h.http1(SLEEP).await?;

    let mut failed = 0;
    for i in 0..40 {
        let path = format!("/plain/fail-v1/503/{i}");
        let reply = client.get(&path).await?;
        assert!(matches!(reply.status, 200 | 503), "{path}: {reply:?}");
        failed += usize::from(reply.status == 503);
        assert_eq!(seen(&both, &path), 1, "{path} was retried");
    }
    assert!(failed > 0 && failed < 40, "{failed} of 40 went to v1");
    assert_eq!(h.metric(RETRIES, &[]), 0.0);

    let mut to_v1 = 0;
    for i in 0..40 {
        let path = format!("/listed/fail-v1/503/{i}");
        let reply = client.get(&path).await?;
        assert_eq!((reply.status, reply.header("x-backend")), (200, Some("v2")));
        to_v1 += v1.times_seen(&path);
    }
    assert!(to_v1 > 0, "no first try went to v1");
    let reason = [("reason", "retriable-status-codes")];
    assert_eq!(
        h.wait_metric(RETRIES, &reason, to_v1 as f64).await,
        to_v1 as f64
    );

    for i in 0..10 {
        let body = format!("payload {i}");
        let reply = client
            .send(post(
                &format!("/listed/fail-v1/503/{i}/echo"),
                body.clone(),
            )?)
            .await?;
        assert_eq!(
            (reply.status, reply.body),
            (200, body),
            "the body was replayed"
        );
    }

    // Both endpoints failing: a small body is tried three times, a body over 64 KiB once.
    let small = "/listed/fail-all/503/small";
    let reply = client.send(post(small, "x")?).await?;
    assert_eq!((reply.status, seen(&both, small)), (503, 3));
    let large = "/listed/fail-all/503/large";
    let reply = client.send(post(large, vec![b'x'; 100 << 10])?).await?;
    assert_eq!(
        (reply.status, seen(&both, large)),
        (503, 1),
        "not replayable"
    );
    Ok(())
}

/// An endpoint that is down (its node refuses the connection) costs no request, whatever its
/// method: nothing was sent, so it goes to another endpoint. A backend that resets a request
/// it was sent fails it, and a POST is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_costs_nothing_and_a_reset_post_is_not_repeated() -> anyhow::Result<()> {
    let h = Harness::start(89, &manifest(89, &[])).await?;
    let v1 = h.backend("v1").await?;
    // reviews-v2 is not started: its HBONE address refuses connections.
    let mut client = h.http1(SLEEP).await?;
    for i in 0..20 {
        let reply = client.get(&format!("/get/{i}")).await?;
        assert_eq!((reply.status, reply.header("x-backend")), (200, Some("v1")));
        let reply = client.send(post(&format!("/post/{i}"), "x")?).await?;
        assert_eq!((reply.status, reply.header("x-backend")), (200, Some("v1")));
    }
    let refused = h.metric(RETRIES, &[("reason", "connect-failure")]);
    assert!(refused >= 1.0, "no first try went to the down endpoint");

    for i in 0..10 {
        let path = format!("/post/fail-all/reset/{i}");
        let reply = client.send(post(&path, "x")?).await?;
        assert_eq!(reply.status, 503, "{path}: {reply:?}");
        assert_eq!(v1.times_seen(&path), 1, "{path} reached the app twice");
        if reply.header("connection") == Some("close") {
            client = h.http1(SLEEP).await?;
        }
    }
    let flags = h.metric("istio_requests_total", &[("response_flags", "UC")]);
    assert!(flags >= 10.0, "resets answered 503 UC ({flags})");
    Ok(())
}

/// gRPC over HTTP/2 upstreams: a trailers-only `UNAVAILABLE` goes again (Istio's default), a
/// stream the app resets does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_is_retried_and_a_reset_stream_is_not() -> anyhow::Result<()> {
    let h = Harness::start(90, &manifest_with_port(90, "grpc", &[])).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let both = [&v1, &v2];
    let mut client = h.h2c(SLEEP).await?;
    for i in 0..20 {
        let path = format!("/pkg.Svc/fail-v1/unavailable/{i}");
        let reply = client.grpc(&path).await?;
        let status = grpc_status(&reply);
        assert_eq!(
            (reply.status, status.as_deref()),
            (200, Some("0")),
            "{path}"
        );
        assert_eq!(reply.header("x-backend"), Some("v2"));
    }
    let unavailable = h.metric(RETRIES, &[("reason", "unavailable")]);
    assert!(unavailable >= 1.0, "no first try went to v1");

    let path = "/pkg.Svc/fail-all/reset/1";
    let reply = client.grpc(path).await?;
    assert_eq!(seen(&both, path), 1, "a reset stream was retried");
    assert_eq!(grpc_status(&reply).as_deref(), Some("14"), "{reply:?}");
    Ok(())
}

fn grpc_status(reply: &Reply) -> Option<String> {
    let trailers = reply.trailers.as_ref().unwrap_or(&reply.headers);
    Some(trailers.get("grpc-status")?.to_str().ok()?.to_owned())
}

/// `timeouts.backendRequest` bounds each try; with 504 among the route's codes, a try that
/// times out goes again to the other endpoint, and `timeouts.request` still bounds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_that_times_out_goes_again_within_the_request_timeout() -> anyhow::Result<()> {
    let timed = json!({
        "timeouts": {"request": "2s", "backendRequest": "300ms"},
        "retry": {"codes": [504], "attempts": 2, "backoff": "10ms"}
    });
    let rules = json!([rule("/timed", timed)]);
    let h = Harness::start(91, &manifest(91, &[route_to_reviews(rules)])).await?;
    let v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    let mut waited = 0;
    for i in 0..10 {
        let path = format!("/timed/fail-v1/stall/{i}");
        let started = Instant::now();
        let reply = client.get(&path).await?;
        assert_eq!((reply.status, reply.header("x-backend")), (200, Some("v2")));
        if v1.times_seen(&path) > 0 {
            waited += 1;
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
    }
    assert!(waited > 0, "no first try went to v1");
    // Every endpoint stalls: three tries of 300 ms, then 504.
    let started = Instant::now();
    let reply = client.get("/timed/fail-all/stall/x").await?;
    let took = started.elapsed();
    assert_eq!(reply.status, 504);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    Ok(())
}

/// With every endpoint failing, retries in flight stay within the budget (20% of requests
/// in flight, at least 3): 30 concurrent requests allowed 10 retries each make far fewer
/// than 300, every one counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_everything_fails() -> anyhow::Result<()> {
    let many = json!({"retry": {"codes": [503], "attempts": 10, "backoff": "10ms"}});
    let rules = json!([rule("/budget", many)]);
    let h = Harness::start(92, &manifest(92, &[route_to_reviews(rules)])).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let client = h.h2c(SLEEP).await?;
    let Client::Http2(sender) = client else {
        anyhow::bail!("an h2c client")
    };
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let mut client = Client::Http2(sender.clone());
        calls.spawn(async move {
            let path = format!("/budget/fail-all/503/{i}/slow");
            let reply = client.get(&path).await.context(path.clone())?;
            anyhow::Ok((path, reply.status))
        });
    }
    let mut hits = 0;
    for call in calls.join_all().await {
        let (path, status) = call?;
        assert_eq!(status, 503, "{path}");
        hits += seen(&[&v1, &v2], &path);
    }
    let retries = h.wait_metric(RETRIES, &[], (hits - 30) as f64).await;
    assert_eq!(retries, (hits - 30) as f64, "every retry is counted");
    assert!(retries < 60.0, "{retries} retries for 30 requests");
    assert!(h.metric(EXHAUSTED, &[]) >= 1.0, "the budget never ran out");
    Ok(())
}
