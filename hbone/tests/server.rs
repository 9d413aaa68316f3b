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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_peer_cap_are_closed_and_counted_while_others_are_served() {
    use mesh_runtime::{ConnectionLimit, Limits, Refusal};
    let ca = ca();
    let limit = ConnectionLimit::new(Limits {
        per_process: 3,
        per_peer: 2,
    });
    let tls = mesh_hbone::server_config(ca.clone(), server_id()).expect("server config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = mesh_hbone::Server::new(tls).with_connection_limit(limit.clone());
    tokio::spawn(server.serve(listener, echo, shutdown.clone()));
    let from = |last: u8| {
        let mut k = key(addr);
        k.source_ip = Some(std::net::IpAddr::from([127, 0, 0, last]));
        k
    };
    // Each pool holds its own connection.
    let connect = |last: u8| {
        let pool = pool(ca.clone());
        let key = from(last);
        async move {
            let result = pool.connect(&key, request("10.0.0.1:80")).await;
            (pool, result)
        }
    };
    let (_p1, first) = connect(2).await;
    let (_p2, second) = connect(2).await;
    let mut first = first.expect("first from .2");
    second.expect("second from .2");
    let (_p3, third) = connect(2).await;
    assert!(third.is_err(), "a third connection from .2 is refused");
    let (_p4, other) = connect(3).await;
    let mut other = other.expect("another peer is served");
    assert_eq!(
        round_trip(&mut other, b"still served").await,
        b"still served"
    );
    assert_eq!(round_trip(&mut first, b"untouched").await, b"untouched");
    let (_p5, over) = connect(4).await;
    assert!(over.is_err(), "the process cap (3) is reached");
    assert_eq!(limit.refused("hbone", Refusal::Peer), 1);
    assert_eq!(limit.refused("hbone", Refusal::Process), 1);
    // A closed connection frees its place.
    drop((_p1, first));
    assert!(
        eventually(Duration::from_secs(5), || limit.open() == 2).await,
        "the closed connection's place is freed"
    );
    let (_p6, again) = connect(4).await;
    again.expect("admitted once a place is free");
    shutdown.cancel();
}
