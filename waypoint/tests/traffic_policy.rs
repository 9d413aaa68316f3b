//! A DestinationRule's traffic policy at the waypoint, against real backends: load balancers,
//! outlier detection ejecting a failing endpoint, and connection pool limits — through real
//! HBONE, Pingora and HTTP/2.

mod common;

use std::collections::BTreeMap;

use anyhow::Context;
use common::{Client, Harness, manifest};
use serde_json::{Value, json};

const SLEEP: &str = "sleep";

fn destination_rule(traffic: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"host": "reviews.default.svc.cluster.local", "trafficPolicy": traffic}
    })
}

async fn with_policy(block: u8, traffic: Value) -> anyhow::Result<Harness> {
    Harness::start(block, &manifest(block, &[destination_rule(traffic)])).await
}

/// Which backend served each of `paths`, in order.
async fn served_by(client: &mut Client, paths: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for path in paths {
        let reply = client.get(path).await.with_context(|| path.clone())?;
        anyhow::ensure!(reply.status == 200, "{path}: {reply:?}");
        out.push(reply.header("x-backend").unwrap_or("?").to_owned());
    }
    Ok(out)
}

/// How many of `n` concurrent `/<tag>/<i>/slow` calls (each 200 ms at the backend) on one
/// h2c connection got each status.
async fn concurrent_statuses(
    h: &Harness,
    n: usize,
    tag: &str,
) -> anyhow::Result<BTreeMap<u16, usize>> {
    let Client::Http2(sender) = h.h2c(SLEEP).await? else {
        anyhow::bail!("an h2c client")
    };
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut client = Client::Http2(sender.clone());
        let path = format!("/{tag}/{i}/slow");
        calls.spawn(async move { client.get(&path).await });
    }
    let mut statuses = BTreeMap::new();
    for reply in calls.join_all().await {
        *statuses.entry(reply?.status).or_insert(0) += 1;
    }
    Ok(statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns() -> anyhow::Result<()> {
    let h = with_policy(93, json!({"loadBalancer": {"simple": "ROUND_ROBIN"}})).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    let paths: Vec<String> = (0..20).map(|i| format!("/rr/{i}")).collect();
    let order = served_by(&mut client, &paths).await?;
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {order:?}");
    }
    Ok(())
}

/// A consistent hash on a header: each user stays on one endpoint; users spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_each_user_on_one_endpoint() -> anyhow::Result<()> {
    let lb = json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}});
    let h = with_policy(94, lb).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    let mut homes: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..5 {
        for user in 0..16 {
            let request = http::Request::get("http://reviews.default:9080/hash")
                .header(http::header::HOST, "reviews.default:9080")
                .header("x-user", format!("user-{user}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))?;
            let reply = client.send(request).await?;
            let backend = reply.header("x-backend").unwrap_or("?").to_owned();
            let home = homes
                .entry(format!("user-{user}"))
                .or_insert(backend.clone());
            assert_eq!(*home, backend, "user-{user} moved in round {round}");
        }
    }
    let used: std::collections::BTreeSet<&String> = homes.values().collect();
    assert_eq!(used.len(), 2, "16 users all on one endpoint: {homes:?}");
    Ok(())
}

/// Three 5xx in a row eject v1: after them every request goes to v2, and the ejection is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_moves_traffic_off_a_failing_endpoint() -> anyhow::Result<()> {
    let outlier = json!({"outlierDetection": {
        "consecutive5xxErrors": 3, "baseEjectionTime": "30s", "maxEjectionPercent": 50
    }});
    let h = with_policy(95, outlier).await?;
    let v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    let mut failed = 0;
    let mut last = Vec::new();
    for i in 0..60 {
        let reply = client.get(&format!("/x/fail-v1/500/{i}")).await?;
        failed += usize::from(reply.status == 500);
        if i >= 40 {
            last.push((reply.status, reply.header("x-backend").map(str::to_owned)));
        }
    }
    assert_eq!(
        failed, 3,
        "v1 answered {failed} times before it was ejected"
    );
    assert!(
        last.iter()
            .all(|(s, b)| *s == 200 && b.as_deref() == Some("v2")),
        "{last:?}"
    );
    assert_eq!(v1.times_seen("/x/fail-v1/500/59"), 0);
    let ejections = h.metric("mesh_upstream_outlier_ejections_total", &[]);
    assert_eq!(ejections, 1.0);
    Ok(())
}

/// `http2MaxRequests: 2`: with two requests in flight to the Service, more are answered at
/// once with 503 `UO` (Envoy's overflow), and the two are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_http2_max_requests_overflow() -> anyhow::Result<()> {
    let pool = json!({"connectionPool": {"http": {"http2MaxRequests": 2}}});
    let h = with_policy(96, pool).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let statuses = concurrent_statuses(&h, 8, "held").await?;
    assert_eq!(statuses.get(&200), Some(&2), "{statuses:?}");
    assert_eq!(statuses.get(&503), Some(&6), "{statuses:?}");
    let overflowed = h
        .wait_metric("istio_requests_total", &[("response_flags", "UO")], 6.0)
        .await;
    assert_eq!(overflowed, 6.0);
    Ok(())
}

/// `maxRequestsPerConnection: 1` turns keep-alive off: each request gets its own upstream
/// connection; without it, sequential requests share one per endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_bounds_reuse() -> anyhow::Result<()> {
    let pool = json!({"connectionPool": {"http": {"maxRequestsPerConnection": 1}}});
    let h = with_policy(97, pool).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let mut client = h.http1(SLEEP).await?;
    let paths: Vec<String> = (0..10).map(|i| format!("/once/{i}")).collect();
    served_by(&mut client, &paths).await?;
    assert_eq!(v1.tunnels_opened() + v2.tunnels_opened(), 10);
    Ok(())
}

/// `maxConnections: 1` with `http1MaxPendingRequests: 1` (Istio's circuit-breaking example):
/// one request has the Service's one connection, one waits for it and is served after, the
/// rest are answered at once with 503 `UO`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queue_pending_requests_and_overflow_the_rest() -> anyhow::Result<()> {
    let pool = json!({"connectionPool": {
        "tcp": {"maxConnections": 1},
        "http": {"http1MaxPendingRequests": 1}
    }});
    let h = with_policy(98, pool).await?;
    let v1 = h.backend("v1").await?;
    let v2 = h.backend("v2").await?;
    let statuses = concurrent_statuses(&h, 6, "cb").await?;
    assert_eq!(statuses.get(&200), Some(&2), "{statuses:?}");
    assert_eq!(statuses.get(&503), Some(&4), "{statuses:?}");
    let overflowed = h
        .wait_metric("istio_requests_total", &[("response_flags", "UO")], 4.0)
        .await;
    assert_eq!(overflowed, 4.0);
    // At rest, the one connection (a connection closed to make room may take a moment).
    let mut open = usize::MAX;
    for _ in 0..100 {
        open = v1.open_tunnels() + v2.open_tunnels();
        if open <= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(open, 1, "connections open to the Service");
    // Later requests still go through, one at a time.
    let mut client = h.http1(SLEEP).await?;
    let paths: Vec<String> = (0..4).map(|i| format!("/after/{i}")).collect();
    served_by(&mut client, &paths).await?;
    Ok(())
}
