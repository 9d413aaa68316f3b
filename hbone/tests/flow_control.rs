//! Flow control across the tunnels of one connection: a tunnel whose reader has stopped holds
//! its own window only, so the other tunnels sharing the connection keep moving (the
//! head-of-line blocking Istio's window sizes allow after four stalled streams).

mod common;

use std::time::Duration;

use common::*;
use mesh_hbone::InboundConnect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Streams tunnels open at once beside the one that must keep working: the rest of a
/// connection's streams (32 by default).
const STALLED: usize = 31;
const EIGHT_MIB: usize = 8 << 20;

const ECHO: &str = "10.0.0.1:1001";
const DOWNLOAD: &str = "10.0.0.1:1002";
const UPLOAD: &str = "10.0.0.1:1003";

/// [`ECHO`] echoes; [`DOWNLOAD`] sends 8 MiB the client never reads; [`UPLOAD`] never reads
/// what the client sends. Held tunnels stay open until `release` is cancelled.
async fn handler(connect: InboundConnect, release: CancellationToken) {
    let authority = connect.authority().to_string();
    if authority == ECHO {
        return echo(connect).await;
    }
    let Ok(mut stream) = connect.accept(http::HeaderMap::new()) else {
        return;
    };
    if authority == DOWNLOAD {
        let data = vec![7u8; EIGHT_MIB];
        tokio::select! {
            _ = stream.write_all(&data) => {}
            _ = release.cancelled() => {}
        }
    }
    release.cancelled().await;
}

/// A server running [`handler`], a pool to it, and the token that releases held tunnels.
async fn start_holding_server() -> (TestServer, mesh_hbone::Pool, CancellationToken) {
    let ca = ca();
    let release = CancellationToken::new();
    let held = release.clone();
    let server = start_server(ca.clone(), server_id(), move |connect| {
        handler(connect, held.clone())
    })
    .await;
    (server, pool(ca), release)
}

async fn echo_in_time_beside_stalled(stalled: &str) {
    let (server, pool, release) = start_holding_server().await;
    let key = key(server.addr);
    let mut tunnels = Vec::new();
    for _ in 0..STALLED {
        let mut tunnel = pool.connect(&key, request(stalled)).await.expect("tunnel");
        if stalled == UPLOAD {
            // Writes until the server's window for this stream is full, then waits there.
            tunnels.push(tokio::spawn(async move {
                let _ = tunnel.write_all(&vec![1u8; EIGHT_MIB]).await;
                tunnel
            }));
        } else {
            tunnels.push(tokio::spawn(async move { tunnel }));
        }
    }
    // Let the stalled tunnels take all the window they can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let data = vec![9u8; 256 << 10];
    let echo = async {
        let mut tunnel = pool.connect(&key, request(ECHO)).await.expect("tunnel");
        round_trip(&mut tunnel, &data).await
    };
    let back = tokio::time::timeout(Duration::from_secs(10), echo)
        .await
        .unwrap_or_else(|_| {
            panic!("the echo beside {STALLED} stalled tunnels to {stalled} stalled too")
        });
    assert_eq!(
        back.len(),
        data.len(),
        "the echo beside {STALLED} stalled tunnels to {stalled}"
    );
    assert_eq!(pool.stats().connections_opened, 1, "all on one connection");
    release.cancel();
    for tunnel in tunnels {
        tunnel.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_downloads_do_not_stall_the_other_tunnels_of_the_connection() {
    echo_in_time_beside_stalled(DOWNLOAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_uploads_do_not_stall_the_other_tunnels_of_the_connection() {
    echo_in_time_beside_stalled(UPLOAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tunnel_resumes_when_its_reader_reads() {
    let (server, pool, release) = start_holding_server().await;
    let mut tunnel = pool
        .connect(&key(server.addr), request(DOWNLOAD))
        .await
        .expect("tunnel");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all = vec![0u8; EIGHT_MIB];
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut all))
        .await
        .expect("the whole download in time")
        .expect("read");
    assert!(all.iter().all(|b| *b == 7));
    release.cancel();
}
