//! Connection pooling: reuse, stream limits, idle release, dead connections, keepalive.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mesh_hbone::{InboundConnect, Pool, PoolConfig};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sequential_tunnels_share_one_connection() {
    let ca = ca();
    let server = start_server(ca.clone(), server_id(), echo).await;
    let pool = pool(ca);
    let key = key(server.addr);
    for i in 0..2000u32 {
        let mut stream = pool
            .connect(&key, request("10.0.0.1:80"))
            .await
            .expect("tunnel");
        let data = i.to_be_bytes();
        assert_eq!(round_trip(&mut stream, &data).await, data);
    }
    let stats = pool.stats();
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert_eq!(stats.connections_open, 1, "{stats:?}");
    assert_eq!(stats.streams_opened, 2000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_concurrent_tunnels_use_eight_connections() {
    let ca = ca();
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let seen = peers.clone();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        seen.lock().expect("lock").insert(connect.peer_addr());
        echo(connect)
    })
    .await;
    let pool = pool(ca);
    let key = key(server.addr);
    let opening: Vec<_> = (0..250)
        .map(|_| {
            let pool = pool.clone();
            let key = key.clone();
            tokio::spawn(async move { pool.connect(&key, request("10.0.0.1:80")).await })
        })
        .collect();
    let mut streams = Vec::new();
    for task in opening {
        streams.push(task.await.expect("task").expect("tunnel"));
    }
    // All 250 are open at once.
    let stats = pool.stats();
    // 32 streams per connection (see `mesh_hbone::http2`): 250 / 32 rounds up to 8.
    assert_eq!(stats.connections_opened, 8, "{stats:?}");
    assert_eq!(stats.connections_open, 8, "{stats:?}");
    assert_eq!(stats.streams_opened, 250, "{stats:?}");
    assert_eq!(peers.lock().expect("lock").len(), 8);

    let checks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            tokio::spawn(async move {
                let data = format!("tunnel {i}");
                assert_eq!(
                    round_trip(&mut stream, data.as_bytes()).await,
                    data.as_bytes()
                );
            })
        })
        .collect();
    for check in checks {
        check.await.expect("echo");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_released() {
    let ca = ca();
    let server = start_server(ca.clone(), server_id(), echo).await;
    let config = PoolConfig {
        idle_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    };
    let pool = Pool::new(ca, config);
    let key = key(server.addr);
    let mut stream = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    assert_eq!(round_trip(&mut stream, b"x").await, b"x");
    // A held stream keeps the connection even past the idle timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.stats().connections_open, 1);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(3), || pool.stats().connections_open
            == 0)
        .await,
        "{:?}",
        pool.stats()
    );
    let mut again = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    assert_eq!(round_trip(&mut again, b"y").await, b"y");
    assert_eq!(pool.stats().connections_opened, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_connections_are_evicted_and_replaced() {
    let ca = ca();
    let first = start_server(ca.clone(), server_id(), echo).await;
    let addr = first.addr;
    let pool = pool(ca.clone());
    let key = key(addr);
    let mut stream = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    assert_eq!(round_trip(&mut stream, b"1").await, b"1");
    drop(stream);

    // Server shutdown: GOAWAY, the connection closes, the pool forgets it.
    first.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !first.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("server stopped");
    assert!(
        eventually(Duration::from_secs(3), || pool.stats().connections_open
            == 0)
        .await,
        "{:?}",
        pool.stats()
    );

    // A new server on the same address: the pool dials again.
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let tls = mesh_hbone::server_config(ca, server_id()).expect("tls");
    let token = tokio_util::sync::CancellationToken::new();
    tokio::spawn(mesh_hbone::Server::new(tls).serve(listener, echo, token.clone()));
    let mut stream = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    assert_eq!(round_trip(&mut stream, b"2").await, b"2");
    assert_eq!(pool.stats().connections_opened, 2);
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dials_report_typed_errors_to_every_waiter() {
    let ca = ca();
    // Nothing listens here: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let pool = pool(ca);
    let key = key(addr);
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            let key = key.clone();
            tokio::spawn(async move { pool.connect(&key, request("10.0.0.1:80")).await })
        })
        .collect();
    for attempt in attempts {
        let err = attempt.await.expect("task").expect_err("refused");
        assert!(
            matches!(err, mesh_hbone::HboneError::Connect { addr: a, .. } if a == addr),
            "{err}"
        );
    }
    assert_eq!(pool.stats().connections_opened, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_a_silent_peer() {
    let ca = ca();
    // Accepts TCP but never speaks TLS.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let config = PoolConfig {
        connect_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let pool = Pool::new(ca, config);
    let started = std::time::Instant::now();
    let err = pool
        .connect(&key(addr), request("10.0.0.1:80"))
        .await
        .expect_err("timeout");
    assert!(
        matches!(err, mesh_hbone::HboneError::Timeout { .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}

/// A TLS + HTTP/2 server that answers PINGs for `responsive`, then goes silent (keeps the
/// socket open without reading).
async fn going_silent_server(responsive: Duration) -> std::net::SocketAddr {
    let tls = mesh_hbone::server_config(ca_for_silent(), server_id()).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = tokio_rustls::TlsAcceptor::from(tls)
            .accept(tcp)
            .await
            .expect("tls");
        let mut conn = h2::server::handshake(tls).await.expect("h2");
        let _ = tokio::time::timeout(responsive, conn.accept()).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
    });
    addr
}

static SILENT_CA: std::sync::OnceLock<Arc<mesh_hbone::LocalCa>> = std::sync::OnceLock::new();

fn ca_for_silent() -> Arc<mesh_hbone::LocalCa> {
    SILENT_CA.get_or_init(ca).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keepalive_drops_the_connection() {
    let addr = going_silent_server(Duration::from_millis(300)).await;
    let config = PoolConfig {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    };
    let pool = Pool::new(ca_for_silent(), config);
    // The raw server never answers CONNECT; the dial itself (TLS + first PING) succeeds.
    let pending = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.connect(&key(addr), request("10.0.0.1:80")).await })
    };
    assert!(
        eventually(Duration::from_secs(2), || pool.stats().connections_opened
            == 1)
        .await,
        "{:?}",
        pool.stats()
    );
    assert!(
        eventually(Duration::from_secs(3), || pool.stats().connections_open
            == 0)
        .await,
        "keepalive should drop the silent connection: {:?}",
        pool.stats()
    );
    let result = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("pending CONNECT ends with the connection")
        .expect("task");
    assert!(result.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_binds_the_socket_and_separates_pools() {
    let ca = ca();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        let _ = tx.send(connect.peer_addr().ip());
        echo(connect)
    })
    .await;
    let pool = pool(ca);
    for source in ["127.0.0.7", "127.0.0.8"] {
        let mut key = key(server.addr);
        key.source_ip = Some(source.parse().expect("ip"));
        let mut stream = pool
            .connect(&key, request("10.0.0.1:80"))
            .await
            .expect("tunnel");
        assert_eq!(round_trip(&mut stream, b"src").await, b"src");
        let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("peer ip");
        assert_eq!(seen.to_string(), source);
    }
    assert_eq!(pool.stats().connections_opened, 2);
}
