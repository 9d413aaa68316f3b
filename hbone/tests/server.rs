//! Server lifecycle: graceful shutdown and keepalive towards silent clients.

mod common;

use std::time::Duration;

use common::*;
use mesh_hbone::{HboneError, Server};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_but_drains_open_tunnels() {
    let ca = ca();
    let server = start_server(ca.clone(), server_id(), echo).await;
    let pool = pool(ca);
    let key = key(server.addr);
    let mut open = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    open.write_all(b"before").await.expect("write");

    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !server.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("accept loop ended");
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());

    // The open tunnel still works until it is done.
    open.write_all(b" after")
        .await
        .expect("write after shutdown");
    open.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(back, b"before after");

    // New streams: the connection said GOAWAY, the retry finds nobody listening.
    let err = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect_err("server is gone");
    assert!(matches!(err, HboneError::Connect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keepalive_drops_clients_that_stop_answering() {
    let ca = ca();
    let tls = mesh_hbone::server_config(ca.clone(), server_id()).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let server =
        Server::new(tls).with_keepalive(Duration::from_millis(100), Duration::from_millis(200));
    tokio::spawn(server.serve(listener, echo, token.clone()));

    // A client that completes TLS and the HTTP/2 preface, then never reads again.
    let config = mesh_hbone::client_config(ca, client_id(), vec![server_id()]).expect("config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("tls");
    let (_send, connection) = h2::client::handshake(tls).await.expect("h2");
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Polling now finds the server gone: the connection ends instead of staying open.
    let ended = tokio::time::timeout(Duration::from_secs(3), connection).await;
    assert!(
        ended.is_ok(),
        "server should have closed the silent connection"
    );
    token.cancel();
}
