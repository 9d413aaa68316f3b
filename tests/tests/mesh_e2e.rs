//! The whole local mesh on loopback, end to end: client pod ─SOCKS5─▶ ztunnel ─HBONE─▶ waypoint
//! (Pingora) ─HBONE─▶ ztunnel ─TCP─▶ echo app. Every test runs its own mesh in its own
//! 127.<block>.0.0/16 so the suite can run in parallel.

use std::time::Duration;

use http::Method;
use mesh::client::MeshClient;
use mesh::demo::{measure_split, within_tolerance};
use mesh_tests::{TestMesh, demo_yaml_in_block, scrape_sum, scrape_until};

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";
// Pod addresses inside a block (see examples/demo.yaml).
const PRODUCTPAGE: &str = "1.10";
const SLEEP: &str = "1.12";
const NODE_B: &str = "2.1";
const WAYPOINT_POD: &str = "2.20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_identity_reaches_the_backend_through_the_waypoint() -> anyhow::Result<()> {
    let t = TestMesh::start(10).await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let seen = client.get("/debug").await?;
    assert_eq!(seen.status, 200);
    let json = seen.json()?;
    let xfcc = json["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        xfcc,
        "By=spiffe://cluster.local/ns/default/sa/waypoint;URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    // The app sees the waypoint as its peer (it re-originated the connection).
    let peer = json["peer"].as_str().unwrap_or_default();
    assert!(
        peer.starts_with(&format!("127.10.{WAYPOINT_POD}:")),
        "peer {peer}"
    );
    assert_eq!(json["headers"]["x-mesh-route"], "reviews");
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_waypoint_goes_ztunnel_to_ztunnel() -> anyhow::Result<()> {
    let t = TestMesh::start(11).await?;
    let mut client = MeshClient::connect(t.socks(SLEEP), RATINGS, 9080).await?;
    let seen = client.get("/debug").await?;
    assert_eq!(seen.status, 200);
    let json = seen.json()?;
    assert_eq!(json["server"], "ratings-v1");
    // Direct path: the app sees the source pod's address and no waypoint headers.
    let peer = json["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with(&format!("127.11.{SLEEP}:")), "peer {peer}");
    assert!(json["headers"].get("x-forwarded-client-cert").is_none());
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_within_tolerance() -> anyhow::Result<()> {
    let t = TestMesh::start(12).await?;
    let n = 600;
    let split = measure_split(t.socks(PRODUCTPAGE), n).await?;
    let v1 = split.served_by.get("reviews-v1").copied().unwrap_or(0);
    let v2 = split.served_by.get("reviews-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, n, "{:?}", split.served_by);
    assert!(within_tolerance(v2, n, 0.1), "v2 got {v2} of {n}");
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_denies_and_allows_at_the_waypoint() -> anyhow::Result<()> {
    let t = TestMesh::start(13).await?;
    let mut productpage = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let mut sleep = MeshClient::connect(t.socks(SLEEP), REVIEWS, 9080).await?;
    assert_eq!(productpage.get("/reviews/1").await?.status, 200);
    let denied = sleep.get("/reviews/1").await?;
    assert_eq!(denied.status, 403);
    assert!(String::from_utf8_lossy(&denied.body).contains("RBAC: access denied"));
    let post = productpage.request(Method::POST, "/reviews/1", &[]).await?;
    assert_eq!(post.status, 403, "the policy allows GET only");
    // The denied connection stays usable for a later allowed request on another client.
    assert_eq!(productpage.get("/reviews/2").await?.status, 200);
    // The waypoint counted both outcomes.
    let admin = t.addr(WAYPOINT_POD, 15020);
    let denied_count = scrape_until(
        admin,
        "istio_requests_total",
        &[("response_code", "403")],
        2.0,
    )
    .await?;
    let ok_count = scrape_until(
        admin,
        "istio_requests_total",
        &[("response_code", "200")],
        2.0,
    )
    .await?;
    assert_eq!(denied_count, 2.0);
    assert_eq!(ok_count, 2.0);
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_connections_upstream_are_reused() -> anyhow::Result<()> {
    let t = TestMesh::start(14).await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    for i in 0..1000 {
        let response = client.get("/reviews/1").await?;
        assert_eq!(response.status, 200, "request {i}");
    }
    // Every CONNECT stream the waypoint opens upstream is one inbound connection at node-b.
    let streams = upstream_streams_from_the_waypoint(&t).await?;
    assert!(streams >= 1.0, "no upstream stream seen at all");
    assert!(
        streams <= 4.0,
        "1000 requests opened {streams} upstream CONNECT streams"
    );
    t.stop().await;
    Ok(())
}

/// Inbound CONNECT streams the waypoint opened to node B (one per upstream connection).
async fn upstream_streams_from_the_waypoint(t: &TestMesh) -> anyhow::Result<f64> {
    scrape_sum(
        t.addr(NODE_B, 15020),
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/waypoint",
            ),
        ],
    )
    .await
}

/// 200 callers at once, ten rounds: the waypoint's upstream connections are pooled and reused
/// at that concurrency too (a pool smaller than the concurrency closes and reopens the
/// difference every round: Pingora's default of 128 opened about 1,000 streams here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_under_200_concurrent_callers() -> anyhow::Result<()> {
    const CALLERS: usize = 200;
    let t = TestMesh::start(24).await?;
    let mut clients = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        clients.push(MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?);
    }
    for round in 0..10 {
        let mut calls = tokio::task::JoinSet::new();
        for mut client in clients.drain(..) {
            calls.spawn(async move {
                let response = client.get("/?delay=20ms").await?;
                anyhow::ensure!(response.status == 200, "status {}", response.status);
                anyhow::Ok(client)
            });
        }
        for call in calls.join_all().await {
            clients.push(call.map_err(|e| e.context(format!("round {round}")))?);
        }
    }
    let streams = upstream_streams_from_the_waypoint(&t).await?;
    // Each of the 200 callers needs its own upstream connection while its request is in
    // flight; rounds must reuse them, not open more.
    assert!(
        streams <= (CALLERS + CALLERS / 4) as f64,
        "2,000 requests from 200 concurrent callers opened {streams} upstream streams"
    );
    t.stop().await;
    Ok(())
}

/// Apps that close each idle keep-alive connection 20 ms after their last response, with no
/// `Connection: close` (`loadtest server --keepalive-timeout`), under steady GETs from 4
/// callers whose pauses straddle that timeout, through the whole mesh: no request fails,
/// because a GET sent on a connection found closed goes again on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_closing_keep_alive_connections_fail_no_get_through_the_waypoint() -> anyhow::Result<()>
{
    let yaml = demo_yaml_in_block(25).replace(
        "\n    mesh.dev/echo: \"true\"",
        "\n    mesh.dev/echo: \"true\"\n    mesh.dev/echo-keepalive-timeout: \"20ms\"",
    );
    let t = TestMesh::start_with(25, &yaml).await?;
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..4u64 {
        let socks = t.socks(PRODUCTPAGE);
        callers.spawn(async move {
            let mut client = MeshClient::connect(socks, REVIEWS, 9080).await?;
            for i in 0..120u64 {
                let response = client.get(&format!("/reviews/{caller}/{i}")).await?;
                anyhow::ensure!(
                    response.status == 200,
                    "caller {caller} request {i}: {}",
                    response.status
                );
                // 0 to 40 ms: about half the pauses outlast the apps' keep-alive timeout.
                tokio::time::sleep(Duration::from_millis((i * 7 + caller * 3) % 41)).await;
            }
            anyhow::Ok(())
        });
    }
    for caller in callers.join_all().await {
        caller?;
    }
    let served = scrape_until(
        t.addr(WAYPOINT_POD, 15020),
        "istio_requests_total",
        &[("response_code", "200")],
        480.0,
    )
    .await?;
    assert_eq!(served, 480.0);
    let retried = scrape_sum(
        t.addr(WAYPOINT_POD, 15020),
        "mesh_upstream_retries_total",
        &[("reason", "reset-before-request")],
    )
    .await?;
    eprintln!("requests that met a closed connection and went again: {retried}");
    t.stop().await;
    Ok(())
}

/// Pods `pool-a`, `pool-b` (echo apps) and `pool-dead` (no app: its node refuses) behind
/// Service `pool` (no waypoint), with a DestinationRule: ROUND_ROBIN, and outlier detection
/// ejecting an endpoint after 2 failures in a row.
fn pool_with_a_dead_endpoint(block: u8) -> String {
    let pod = |name: &str, ip: &str, echo: bool| {
        let annotations = if echo {
            "\n  annotations:\n    mesh.dev/echo: \"true\""
        } else {
            ""
        };
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    pool: \"yes\"{annotations}\nspec:\n  nodeName: node-b\n  serviceAccountName: pool\n  containers:\n    - name: app\n      ports:\n        - containerPort: 9080\nstatus:\n  podIP: 127.{block}.{ip}\n"
        )
    };
    let mut yaml = demo_yaml_in_block(block);
    yaml.push_str(&pod("pool-a", "2.30", true));
    yaml.push_str(&pod("pool-b", "2.31", true));
    yaml.push_str(&pod("pool-dead", "2.32", false));
    yaml.push_str(&format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: pool\n  namespace: default\nspec:\n  clusterIP: 127.{block}.100.30\n  selector:\n    pool: \"yes\"\n  ports:\n    - name: http\n      port: 9080\n      targetPort: 9080\n"
    ));
    yaml.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: pool\n  namespace: default\nspec:\n  host: pool.default.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n    outlierDetection:\n      consecutive5xxErrors: 2\n      maxEjectionPercent: 50\n      baseEjectionTime: 60s\n",
    );
    yaml
}

/// The ztunnel balances connections by the DestinationRule too: round robin over a Service's
/// endpoints, and an endpoint whose connections cannot be made is ejected after 2 in a row,
/// after which every connection succeeds, still taking turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ztunnel_balances_connections_by_the_destination_rule() -> anyhow::Result<()> {
    const POOL: &str = "pool.default.svc.cluster.local";
    let t = TestMesh::start_with(26, &pool_with_a_dead_endpoint(26)).await?;
    let mut failed = 0;
    let mut served = Vec::new();
    for _ in 0..30 {
        let connected = MeshClient::connect(t.socks(SLEEP), POOL, 9080).await;
        let Ok(mut client) = connected else {
            failed += 1;
            continue;
        };
        let response = client.get("/").await?;
        assert_eq!(response.status, 200);
        served.push(response.header("x-echo-server").unwrap_or("?").to_owned());
    }
    assert_eq!(failed, 2, "the dead endpoint was tried {failed} times");
    let last: Vec<&String> = served.iter().rev().take(20).collect();
    for pair in last.windows(2) {
        assert_ne!(pair[0], pair[1], "not taking turns: {served:?}");
    }
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_policy_at_ztunnel_refuses_the_connection() -> anyhow::Result<()> {
    let policy = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-from-productpage
  namespace: default
spec:
  selector:
    matchLabels:
      app: ratings
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
"#;
    let yaml = format!("{}{policy}", demo_yaml_in_block(16));
    let t = TestMesh::start_with(16, &yaml).await?;
    let mut allowed = MeshClient::connect(t.socks(PRODUCTPAGE), RATINGS, 9080).await?;
    assert_eq!(allowed.get("/").await?.status, 200);
    let refused = MeshClient::connect(t.socks(SLEEP), RATINGS, 9080).await;
    let error = format!("{:#}", refused.err().expect("sleep must be refused at L4"));
    assert!(
        error.contains("not allowed") || error.contains("ruleset"),
        "{error}"
    );
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes() -> anyhow::Result<()> {
    mesh::demo::run(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_inside_the_tunnel_is_served_by_the_waypoint() -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Empty};
    let t = TestMesh::start(17).await?;
    let stream =
        tokio_socks::tcp::Socks5Stream::connect(t.socks(PRODUCTPAGE), (REVIEWS, 9080)).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream.into_inner()),
    )
    .await?;
    tokio::spawn(conn);
    // Several concurrent streams on the one h2c connection.
    let mut responses = Vec::new();
    for i in 0..8 {
        let request = http::Request::get(format!("http://{REVIEWS}:9080/debug?i={i}"))
            .body(Empty::<bytes::Bytes>::new())?;
        responses.push(sender.send_request(request));
    }
    for response in futures_join(responses).await {
        let response = response?;
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await?.to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        assert!(
            json["server"]
                .as_str()
                .unwrap_or_default()
                .starts_with("reviews-v")
        );
        assert_eq!(json["headers"]["x-mesh-route"], "reviews");
    }
    t.stop().await;
    Ok(())
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_ztunnel_authorizes_the_waypoint_identity() -> anyhow::Result<()> {
    // reviews accepts only productpage at L4; traffic via the waypoint arrives with the
    // waypoint's identity, so the destination ztunnel refuses it and the caller sees 503.
    let policy = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-l4, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
"#;
    let t = TestMesh::start_with(20, &format!("{}{policy}", demo_yaml_in_block(20))).await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let refused = client.get("/reviews/1").await?;
    assert_eq!(refused.status, 503);
    let flagged = scrape_until(
        t.addr(WAYPOINT_POD, 15020),
        "istio_requests_total",
        &[("response_flags", "UF")],
        1.0,
    )
    .await?;
    assert_eq!(flagged, 1.0);
    // Allowing the waypoint's identity as well lets the same traffic through.
    let allowing = policy.replace(
        r#"principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]"#,
        r#"principals: ["cluster.local/ns/default/sa/bookinfo-productpage", "cluster.local/ns/default/sa/waypoint"]"#,
    );
    t.edit(&format!("{}{allowing}", demo_yaml_in_block(20)))
        .await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    assert_eq!(client.get("/reviews/1").await?.status, 200);
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_modifier_edits_what_the_client_sees() -> anyhow::Result<()> {
    let filters = "        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set:
              - name: x-served-via
                value: waypoint
            add:
              - name: x-extra
                value: one
            remove:
              - x-echo-server
        - type: RequestHeaderModifier";
    let yaml = demo_yaml_in_block(21).replacen("        - type: RequestHeaderModifier", filters, 1);
    assert!(
        yaml.contains("responseHeaderModifier"),
        "the demo route changed shape"
    );
    let t = TestMesh::start_with(21, &yaml).await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let response = client.get("/reviews/1").await?;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-served-via"), Some("waypoint"));
    assert_eq!(response.header("x-extra"), Some("one"));
    assert_eq!(
        response.header("x-echo-server"),
        None,
        "removed by the route"
    );
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_socks5_handshake_is_closed_after_its_timeout() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestMesh::start(22).await?;
    // The greeting, then silence: the destination is never named.
    let mut idle = tokio::net::TcpStream::connect(t.socks(PRODUCTPAGE)).await?;
    idle.write_all(&[5, 1, 0]).await?;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 20 s");
    assert_eq!(got, [5, 0], "only the method selection was answered");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(9),
        "closed after {waited:?}, before the 10 s timeout"
    );
    // The listener goes on serving.
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    assert_eq!(client.get("/reviews/1").await?.status, 200);
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_l4_connection_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let tuning = mesh::local::Tuning {
        ztunnel_idle_timeout: Duration::from_secs(1),
        ..mesh::local::Tuning::default()
    };
    let t = TestMesh::start_tuned(23, &demo_yaml_in_block(23), tuning).await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), RATINGS, 9080).await?;
    // In use more often than the timeout: stays open.
    for _ in 0..4 {
        assert_eq!(client.get("/ratings/1").await?.status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Then idle for longer than it: closed, and counted with flag SI.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        client.get("/ratings/1").await.is_err(),
        "the idle connection was closed"
    );
    let idle_closed = scrape_until(
        t.addr("1.1", 15020),
        "istio_tcp_connections_closed_total",
        &[("response_flags", "SI")],
        1.0,
    )
    .await?;
    assert!(idle_closed >= 1.0, "{idle_closed}");
    t.stop().await;
    Ok(())
}

/// Route filters through the whole mesh (productpage's ztunnel → waypoint → the endpoint's
/// ztunnel): a URL rewrite the app sees, a CORS preflight the waypoint answers itself, and a
/// mirrored copy that reaches another Service while the caller's answer is the route's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_filters_work_through_the_whole_mesh() -> anyhow::Result<()> {
    let rules = "    - matches:
        - path:
            type: PathPrefix
            value: /app
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: reviews-rewritten.example
            path:
              type: ReplacePrefixMatch
              replacePrefixMatch: /
        - type: CORS
          cors:
            allowOrigins: [\"https://*.example.com\"]
            allowMethods: [GET]
      backendRefs:
        - name: reviews-v1
          port: 9080
    - matches:
        - path:
            type: PathPrefix
            value: /mirrored
      filters:
        - type: RequestMirror
          requestMirror:
            backendRef:
              name: ratings
              port: 9080
      backendRefs:
        - name: reviews-v1
          port: 9080
    # The old URLs";
    let yaml = demo_yaml_in_block(28).replacen("    # The old URLs", rules, 1);
    assert!(
        yaml.contains("requestMirror"),
        "the demo route changed shape"
    );
    let t = TestMesh::start_with(28, &yaml).await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    // The rewrite: the app's /debug, with the query kept and the new host.
    let rewritten = client.get("/app/debug?x=1").await?;
    assert_eq!(rewritten.status, 200);
    let seen = rewritten.json()?;
    assert_eq!(seen["path"], "/debug");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["host"], "reviews-rewritten.example");
    // The preflight, answered by the waypoint (no app header).
    let preflight = client
        .request(
            Method::OPTIONS,
            "/app/debug",
            &[
                ("origin", "https://shop.example.com"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await?;
    assert_eq!(preflight.status, 200);
    let origin = preflight.header("access-control-allow-origin");
    assert_eq!(origin, Some("https://shop.example.com"));
    assert_eq!(preflight.header("x-echo-server"), None);
    // The mirror: ratings gets copies over HBONE from the waypoint; the caller's answers are
    // reviews-v1's.
    let from_waypoint = [
        ("reporter", "destination"),
        ("destination_workload", "ratings-v1"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/waypoint",
        ),
    ];
    let node_a = t.addr("1.1", 15020);
    let metric = "istio_tcp_connections_opened_total";
    assert_eq!(scrape_sum(node_a, metric, &from_waypoint).await?, 0.0);
    for i in 0..5 {
        let answer = client.get(&format!("/mirrored/{i}")).await?;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-echo-server"), Some("reviews-v1"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while scrape_sum(node_a, metric, &from_waypoint).await? < 1.0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no copy reached ratings"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A bad filter in an edit (a redirect replacing both the full path and the prefix) is
    // refused naming file, object and field; the filters already in place keep working.
    let bad = yaml.replacen(
        "              replacePrefixMatch: /reviews",
        "              replacePrefixMatch: /reviews\n              replaceFullPath: /all",
        1,
    );
    assert_ne!(bad, yaml, "the demo's redirect changed shape");
    let why = t.edit_rejected(&bad).await?;
    assert!(
        why.contains("HTTPRoute default/reviews")
            && why.contains("requestRedirect.path.replaceFullPath: must not be set"),
        "{why}"
    );
    let still = client.get("/app/debug").await?;
    assert_eq!(still.json()?["path"], "/debug");
    t.stop().await;
    Ok(())
}
