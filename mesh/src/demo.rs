//! `mesh demo`: start the example mesh, send traffic through it, and report what happened.
//! Every step checks its outcome; the demo fails with the reason when something misbehaves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use http::Method;

use crate::client::MeshClient;
use crate::local::LocalMesh;

/// The example mesh, built into the binary so the demo runs from anywhere.
pub const DEMO_YAML: &str = include_str!("../../examples/demo.yaml");

const PRODUCTPAGE_SOCKS: &str = "127.0.1.10:15080";
const SLEEP_SOCKS: &str = "127.0.1.12:15080";
const REVIEWS: &str = "reviews.default.svc.cluster.local";
const REVIEWS_PORT: u16 = 9080;
const GRPC_PORT: u16 = 9090;

/// Counts of backends that served a series of requests.
#[derive(Debug, Default)]
pub struct Split {
    pub served_by: BTreeMap<String, usize>,
    pub total: usize,
}

impl Split {
    pub fn share(&self, server: &str) -> f64 {
        self.served_by.get(server).copied().unwrap_or(0) as f64 / self.total.max(1) as f64
    }
}

/// Whether `hits` out of `n` is within 4 standard deviations of a `p` share.
pub fn within_tolerance(hits: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (hits as f64 - mean).abs() <= 4.0 * sd
}

fn socks(addr: &str) -> SocketAddr {
    addr.parse().expect("constant socket address")
}

/// Sends `n` requests over one keep-alive connection and counts which pod answered.
pub async fn measure_split(socks_addr: SocketAddr, n: usize) -> anyhow::Result<Split> {
    let mut client = MeshClient::connect(socks_addr, REVIEWS, REVIEWS_PORT).await?;
    let mut split = Split::default();
    for i in 0..n {
        let response = client
            .get("/reviews/1")
            .await
            .with_context(|| format!("request {i}"))?;
        ensure!(
            response.status == 200,
            "request {i} answered {}",
            response.status
        );
        let server = response
            .header("x-echo-server")
            .unwrap_or("unknown")
            .to_string();
        *split.served_by.entry(server).or_default() += 1;
        split.total += 1;
    }
    Ok(split)
}

pub async fn run(source: Option<PathBuf>) -> anyhow::Result<()> {
    let mesh = match &source {
        Some(path) => LocalMesh::start_from_path(path).await?,
        None => {
            let snapshot = mesh_config::compile(vec![(
                PathBuf::from("examples/demo.yaml"),
                DEMO_YAML.to_string(),
            )])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            LocalMesh::start(snapshot).await?
        }
    };
    let result = scenario(&mesh).await;
    mesh.stop().await;
    result
}

async fn scenario(mesh: &LocalMesh) -> anyhow::Result<()> {
    mesh.wait_ready(Duration::from_secs(10)).await?;
    let snapshot = mesh.store.load();
    println!(
        "mesh demo: {} nodes, {} pods, {} waypoint(s) running on loopback",
        snapshot.nodes().len(),
        snapshot.workloads().count(),
        snapshot.waypoints().count()
    );
    for line in crate::local::describe(&snapshot, &crate::local::LocalNetwork::Loopback) {
        println!("  {line}");
    }

    // 1. Traffic split: HTTPRoute default/reviews sends 90% to reviews-v1 and 10% to reviews-v2.
    let n = 400;
    let split = measure_split(socks(PRODUCTPAGE_SOCKS), n).await?;
    let v1 = split.served_by.get("reviews-v1").copied().unwrap_or(0);
    let v2 = split.served_by.get("reviews-v2").copied().unwrap_or(0);
    println!(
        "\n[split] HTTPRoute default/reviews (weights 90/10), {n} requests on one connection from productpage:"
    );
    println!(
        "  reviews-v1: {v1:>4} ({:.1}%)",
        split.share("reviews-v1") * 100.0
    );
    println!(
        "  reviews-v2: {v2:>4} ({:.1}%)",
        split.share("reviews-v2") * 100.0
    );
    ensure!(
        v1 + v2 == n,
        "responses came from unexpected servers: {:?}",
        split.served_by
    );
    ensure!(
        within_tolerance(v2, n, 0.1),
        "reviews-v2 got {v2} of {n}: not a 10% share"
    );

    // 2. Authorization at the waypoint: only productpage may GET reviews.
    let mut allowed = MeshClient::connect(socks(PRODUCTPAGE_SOCKS), REVIEWS, REVIEWS_PORT).await?;
    let ok = allowed.get("/debug").await?;
    let post = allowed.request(Method::POST, "/reviews/1", &[]).await?;
    let mut denied = MeshClient::connect(socks(SLEEP_SOCKS), REVIEWS, REVIEWS_PORT).await?;
    let no = denied.get("/reviews/1").await?;
    println!(
        "\n[authz] AuthorizationPolicy default/reviews-viewer (ALLOW productpage: GET, or gRPC):"
    );
    println!("  productpage GET  /debug     → {}", ok.status);
    println!(
        "  productpage POST /reviews/1 → {} {}",
        post.status,
        String::from_utf8_lossy(&post.body).trim()
    );
    println!(
        "  sleep       GET  /reviews/1 → {} {}",
        no.status,
        String::from_utf8_lossy(&no.body).trim()
    );
    ensure!(
        ok.status == 200,
        "productpage GET was not allowed: {}",
        ok.status
    );
    ensure!(
        post.status == 403,
        "productpage POST was not denied: {}",
        post.status
    );
    ensure!(no.status == 403, "sleep GET was not denied: {}", no.status);

    // 3. A route that answers for itself: the old URL is redirected by the waypoint.
    let moved = allowed.get("/old-reviews/1").await?;
    let location = moved.header("location").unwrap_or("").to_string();
    println!("\n[redirect] HTTPRoute default/reviews (RequestRedirect on /old-reviews):");
    println!(
        "  productpage GET /old-reviews/1 → {} location: {location}",
        moved.status
    );
    ensure!(
        moved.status == 301 && location.ends_with(":9080/reviews/1"),
        "the old URL was not redirected: {} {location:?}",
        moved.status
    );

    // 4. A rewrite: /api/debug reaches the app as /debug (the app's request echo).
    let rewritten = allowed.get("/api/debug?from=demo").await?;
    let seen_path = rewritten
        .json()
        .map(|v| v["path"].as_str().unwrap_or("").to_owned());
    let seen_path = seen_path.unwrap_or_default();
    println!("\n[rewrite] HTTPRoute default/reviews (URLRewrite on /api):");
    println!(
        "  productpage GET /api/debug → {}; the app saw {seen_path}",
        rewritten.status
    );
    ensure!(
        rewritten.status == 200 && seen_path == "/debug",
        "the rewrite did not reach the app: {} {seen_path:?}",
        rewritten.status
    );

    // 5. gRPC: GRPCRoute default/reviews-grpc sends health checks to v1; sleep is refused in
    // gRPC's words.
    let (served_by, status) = grpc_health(socks(PRODUCTPAGE_SOCKS)).await?;
    let refused = grpc_health(socks(SLEEP_SOCKS)).await;
    println!("\n[grpc] GRPCRoute default/reviews-grpc (Health → reviews-v1), port {GRPC_PORT}:");
    println!("  productpage Health/Check → {status} from {served_by}");
    let refused_code = refused.as_ref().err().and_then(grpc_code);
    let refusal = refused_code.map_or_else(|| "answered".to_string(), |c| format!("{c:?}"));
    println!("  sleep       Health/Check → {refusal}");
    ensure!(
        served_by == "reviews-v1" && status == "SERVING",
        "the health check was not routed to reviews-v1: {status} from {served_by}"
    );
    ensure!(
        refused_code == Some(tonic::Code::PermissionDenied),
        "sleep's gRPC call was not denied: {refused:?}"
    );

    // 6. Identity: the waypoint authorized the caller's SPIFFE identity and says so upstream.
    let seen = ok.json()?;
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let route_header = seen["headers"]["x-mesh-route"]
        .as_str()
        .unwrap_or("")
        .to_string();
    println!("\n[identity] what reviews saw from the waypoint:");
    println!("  x-forwarded-client-cert: {xfcc}");
    println!("  x-mesh-route (set by the HTTPRoute filter): {route_header}");
    println!(
        "  peer: {} (the waypoint's address)",
        seen["peer"].as_str().unwrap_or("?")
    );
    ensure!(
        xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        "the waypoint did not report the caller identity: {xfcc:?}"
    );
    ensure!(
        route_header == "reviews",
        "the route's header filter did not apply"
    );

    // 7. A short fixed-rate load through the waypoint.
    let report = crate::load::demo_load(socks(PRODUCTPAGE_SOCKS), REVIEWS, REVIEWS_PORT).await?;
    println!(
        "\n[load] through productpage's ztunnel, the waypoint and reviews' ztunnel:\n  {report}"
    );
    if report.errors > 0 {
        bail!(
            "{} of {} requests failed under load",
            report.errors,
            report.requests
        );
    }
    println!("\nmesh demo: all checks passed");
    Ok(())
}

/// One gRPC health check of reviews through the mesh: (the server that answered, its status).
async fn grpc_health(from: SocketAddr) -> anyhow::Result<(String, String)> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = crate::client::grpc_channel(from, REVIEWS, GRPC_PORT).await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health.check(HealthCheckRequest::default()).await?;
    let server = answer.metadata().get("x-echo-server");
    let server = server.and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    let server = server.to_string();
    let status =
        ServingStatus::try_from(answer.into_inner().status).map_or("unknown", |s| s.as_str_name());
    Ok((server, status.to_string()))
}

fn grpc_code(error: &anyhow::Error) -> Option<tonic::Code> {
    error
        .downcast_ref::<tonic::Status>()
        .map(tonic::Status::code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_band() {
        assert!(within_tolerance(40, 400, 0.1));
        assert!(within_tolerance(20, 400, 0.1));
        assert!(!within_tolerance(10, 400, 0.1));
        assert!(!within_tolerance(80, 400, 0.1));
    }
}
