//! The admin server over real loopback sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_runtime::{AdminServer, CancellationToken, Readiness};
use prometheus::{IntCounter, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start(server: AdminServer) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, Option<String>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).expect("utf8"),
        content_type,
    )
}

#[tokio::test]
async fn readiness_follows_the_flag() {
    let readiness = Readiness::new();
    let running = start(AdminServer::new(Registry::new(), readiness.clone())).await;
    let (status, _, _) = get(running.addr, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    readiness.set_ready(true);
    let (status, body, _) = get(running.addr, "/healthz/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.trim(), "ready");
    readiness.set_ready(false);
    let (status, _, _) = get(running.addr, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_are_the_registry_in_text_format() {
    let registry = Registry::new();
    let counter = IntCounter::new("mesh_test_total", "a test counter").expect("counter");
    registry
        .register(Box::new(counter.clone()))
        .expect("register");
    counter.inc_by(42);
    let running = start(AdminServer::new(registry, Readiness::new())).await;
    let (status, body, content_type) = get(running.addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type
            .expect("content type")
            .starts_with("text/plain"),
        "prometheus text format"
    );
    assert!(body.contains("# TYPE mesh_test_total counter"), "{body}");
    assert!(body.contains("mesh_test_total 42"), "{body}");
}

#[tokio::test]
async fn config_dump_is_json_or_404() {
    let running = start(AdminServer::new(Registry::new(), Readiness::new())).await;
    let (status, _, _) = get(running.addr, "/config_dump").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let dump: mesh_runtime::ConfigDump = Arc::new(|| serde_json::json!({"services": 3}));
    let server = AdminServer::new(Registry::new(), Readiness::new()).with_config_dump(dump);
    let running = start(server).await;
    let (status, body, content_type) = get(running.addr, "/config_dump").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(value["services"], 3);
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let running = start(AdminServer::new(Registry::new(), Readiness::new())).await;
    for path in ["/", "/healthz", "/metricsx", "/config_dump/extra"] {
        let (status, _, _) = get(running.addr, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let running = start(AdminServer::new(Registry::new(), Readiness::new())).await;
    let (status, _, _) = get(running.addr, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    running.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("serve returns after shutdown")
        .expect("serve task does not panic");
    assert!(
        TcpStream::connect(running.addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[test]
fn init_logging_is_idempotent() {
    mesh_runtime::init_logging();
    mesh_runtime::init_logging();
    tracing::info!("logging still works after a second init");
}
