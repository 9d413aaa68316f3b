//! The standing reliability suite: attacks and faults against a whole local mesh, each run
//! beside well-behaved callers. Every test asserts both that the attack is refused (or the
//! fault contained) and that the other callers saw zero errors. Quick enough for CI; the long
//! versions (more rounds, bigger bodies) run from `scripts/reliability`, which sets
//! `MESH_RELIABILITY_ROUNDS`.
//!
//! Loopback blocks 80–89.

use std::time::Duration;

use mesh_tests::raw::{self, h2};
use mesh_tests::steady::{Callers, SteadyLoad, Tally};
use mesh_tests::{TestMesh, demo_yaml_in_block};
use tokio::io::AsyncWriteExt;

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";
// Pod addresses inside a block (see examples/demo.yaml).
const PRODUCTPAGE: &str = "1.10";
const SLEEP: &str = "1.12";
const WAYPOINT_POD: &str = "2.20";

/// How many times each attack repeats: 1 in CI, more from `scripts/reliability`.
fn rounds() -> u32 {
    std::env::var("MESH_RELIABILITY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Steady callers sharing the attacker's pod (so its HBONE connection), through the waypoint
/// and on the L4-only path.
fn steady(t: &TestMesh) -> Vec<Callers> {
    vec![
        Callers {
            socks: t.socks(PRODUCTPAGE),
            host: REVIEWS,
            port: 9080,
            connections: 4,
        },
        Callers {
            socks: t.socks(SLEEP),
            host: RATINGS,
            port: 9080,
            connections: 2,
        },
    ]
}

/// The demo mesh in `block`, with the waypoint's `timeouts`.
async fn mesh_with(block: u8, timeouts: waypoint::Timeouts) -> anyhow::Result<TestMesh> {
    let tuning = mesh::local::Tuning {
        waypoint_timeouts: timeouts,
        ..mesh::local::Tuning::default()
    };
    TestMesh::start_tuned(block, &demo_yaml_in_block(block), tuning).await
}

/// Runs `attack` beside steady callers, which must complete at least `min_ok` requests and
/// see no error.
async fn beside_steady_callers<F, Fut>(t: &TestMesh, min_ok: u64, attack: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let load = SteadyLoad::start(&steady(t)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let attacked = attack().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tally: Tally = load.finish().await;
    attacked?;
    tally.assert_clean(min_ok);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_requests_are_refused_and_end_their_connection()
-> anyhow::Result<()> {
    let t = TestMesh::start(80).await?;
    let host = format!("Host: {REVIEWS}:9080\r\n");
    // (what, request, the statuses it must get). Every one must also end its connection, so
    // nothing after it on the connection is ever read as a request. (A control character in
    // the target is not refused: Pingora percent-encodes it before anything reads it, so it
    // never reaches a route or a backend raw; see waypoint_alone.rs and SECURITY.md.)
    let attacks: Vec<(&str, String, &[u16])> = vec![
        // Pingora follows RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped and
        // the connection closes after the answer; the smuggled GET is never read.
        (
            "Content-Length beside Transfer-Encoding",
            format!(
                "GET /a HTTP/1.1\r\n{host}Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n{host}\r\n"
            ),
            &[200],
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /a HTTP/1.1\r\n{host}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
            &[400],
        ),
        (
            "Transfer-Encoding that does not end in chunked",
            format!("POST /a HTTP/1.1\r\n{host}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
            &[400],
        ),
        (
            "an invalid chunk size",
            format!(
                "GET /a HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            ),
            &[400],
        ),
        ("no Host", "GET /a HTTP/1.1\r\n\r\n".to_string(), &[400]),
        (
            "a space in a header name",
            format!("GET /a HTTP/1.1\r\n{host}Bad Name: x\r\n\r\n"),
            &[400],
        ),
    ];
    let socks = t.socks(PRODUCTPAGE);
    beside_steady_callers(&t, 20, || async {
        for _ in 0..rounds() {
            for (what, request, expected) in &attacks {
                let mut stream = raw::tunnel(socks, REVIEWS, 9080).await?;
                let (answer, closed) =
                    raw::exchange(&mut stream, request.as_bytes(), Duration::from_secs(5)).await?;
                let statuses = raw::statuses(&answer);
                anyhow::ensure!(
                    statuses == *expected,
                    "{what}: answered {statuses:?}: {}",
                    String::from_utf8_lossy(&answer)
                );
                anyhow::ensure!(
                    closed,
                    "{what}: the connection stayed open after the answer"
                );
            }
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}

/// Opens an h2c connection through the mesh to the waypoint, sends `flood` after the preface
/// (written while the answers are read), and returns how the waypoint ended the connection.
async fn h2_flood(
    t: &TestMesh,
    flood: Vec<u8>,
    until_reset: bool,
) -> anyhow::Result<(h2::Ending, u32)> {
    let stream = raw::tunnel(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&h2::start()).await;
        // Errors are expected: the waypoint may close the connection mid-flood.
        let _ = writer.write_all(&flood).await;
        writer
    });
    let ending = h2::read_until_goaway(&mut reader, Duration::from_secs(10), until_reset).await;
    drop(writing);
    Ok(ending)
}

/// Sends `flood` on an h2c connection of the attacker's (each round), beside steady callers:
/// the waypoint must end that connection with GOAWAY `ENHANCE_YOUR_CALM`.
async fn flood_is_calmed(
    block: u8,
    what: &str,
    flood: impl Fn(&str) -> Vec<u8>,
) -> anyhow::Result<()> {
    let t = TestMesh::start(block).await?;
    let flood = flood(&format!("{REVIEWS}:9080"));
    beside_steady_callers(&t, 20, || async {
        for _ in 0..rounds() {
            let (ending, _) = h2_flood(&t, flood.clone(), false).await?;
            anyhow::ensure!(
                ending == h2::Ending::GoAway(h2::ENHANCE_YOUR_CALM),
                "{what} left the connection {ending:?}"
            );
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_off() -> anyhow::Result<()> {
    flood_is_calmed(81, "20,000 opened-and-reset streams", |authority| {
        let mut flood = Vec::new();
        for i in 0..20_000u32 {
            let stream = 2 * i + 1;
            let get = h2::get_block(authority);
            flood.extend(h2::frame(
                h2::HEADERS,
                h2::END_HEADERS | h2::END_STREAM,
                stream,
                &get,
            ));
            flood.extend(h2::frame(
                h2::RST_STREAM,
                0,
                stream,
                &h2::CANCEL.to_be_bytes(),
            ));
        }
        flood
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off() -> anyhow::Result<()> {
    // One HEADERS without END_HEADERS, then CONTINUATION frames that never end the block:
    // 64 MiB of header block if the server kept reading.
    flood_is_calmed(82, "an endless header block", |authority| {
        let mut flood = h2::frame(h2::HEADERS, 0, 1, &h2::get_block(authority));
        let filler = h2::literal("x-filler", &[b'a'; 16_000]);
        for _ in 0..4096 {
            flood.extend(h2::frame(h2::CONTINUATION, 0, 1, &filler));
        }
        flood
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_in_http1_and_h2() -> anyhow::Result<()> {
    let t = TestMesh::start(83).await?;
    let socks = t.socks(PRODUCTPAGE);
    let host = format!("Host: {REVIEWS}:9080\r\n");
    let big = format!(
        "GET /a HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let many = format!(
        "GET /a HTTP/1.1\r\n{host}{}\r\n",
        (0..120)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    // HPACK bomb: one 4 KiB value put in the dynamic table, then referenced 4,000 times in a
    // 4 KB header block: 16 MB of headers once decoded.
    let authority = format!("{REVIEWS}:9080");
    let mut block = h2::get_block(&authority);
    block.extend(h2::indexed_literal("x-bomb", &[b'b'; 4000]));
    block.extend(std::iter::repeat_n(0xbe, 4000)); // indexed field 62: the entry just added
    let mut bomb = Vec::new();
    let mut chunks = block.chunks(16_000).peekable();
    let first = chunks.next().expect("non-empty block");
    let flags = if chunks.peek().is_none() {
        h2::END_HEADERS | h2::END_STREAM
    } else {
        h2::END_STREAM
    };
    bomb.extend(h2::frame(h2::HEADERS, flags, 1, first));
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            h2::END_HEADERS
        } else {
            0
        };
        bomb.extend(h2::frame(h2::CONTINUATION, flags, 1, chunk));
    }
    beside_steady_callers(&t, 20, || async {
        for _ in 0..rounds() {
            for (what, request) in [("a 70 KiB header", &big), ("120 headers", &many)] {
                let mut stream = raw::tunnel(socks, REVIEWS, 9080).await?;
                let (answer, _) =
                    raw::exchange(&mut stream, request.as_bytes(), Duration::from_secs(5)).await?;
                let statuses = raw::statuses(&answer);
                anyhow::ensure!(statuses == [431], "{what}: answered {statuses:?}");
            }
            let (ending, resets) = h2_flood(&t, bomb.clone(), true).await?;
            anyhow::ensure!(
                resets > 0 || matches!(ending, h2::Ending::GoAway(_) | h2::Ending::Closed),
                "an HPACK bomb was neither reset nor cut off: {ending:?}"
            );
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_timed_out() -> anyhow::Result<()> {
    let timeouts = waypoint::Timeouts {
        request_headers: Duration::from_secs(1),
        ..waypoint::Timeouts::default()
    };
    let t = mesh_with(84, timeouts).await?;
    let socks = t.socks(PRODUCTPAGE);
    let hbone_port = t.addr(WAYPOINT_POD, 15008);
    beside_steady_callers(&t, 100, || async {
        for _ in 0..rounds() {
            // Slowloris: half a request head, then nothing; closed after `request_headers`.
            let mut slow = raw::tunnel(socks, REVIEWS, 9080).await?;
            slow.write_all(format!("GET /a HTTP/1.1\r\nHost: {REVIEWS}\r\nX-A:").as_bytes())
                .await?;
            let started = tokio::time::Instant::now();
            let (_, closed) = raw::read_until_closed(&mut slow, Duration::from_secs(8)).await?;
            anyhow::ensure!(closed, "a half-sent head kept its connection for 8 s");
            anyhow::ensure!(
                started.elapsed() >= Duration::from_millis(900),
                "closed before the 1 s head timeout: {:?}",
                started.elapsed()
            );
            // A TCP connection to the waypoint's HBONE port that never starts TLS, and a SOCKS5
            // client that never finishes its handshake: both closed after 10 s.
            let mut silent_tls = tokio::net::TcpStream::connect(hbone_port).await?;
            let mut silent_socks = tokio::net::TcpStream::connect(socks).await?;
            silent_socks.write_all(&[5, 1]).await?;
            let (tls, socks5) = tokio::join!(
                raw::read_until_closed(&mut silent_tls, Duration::from_secs(15)),
                raw::read_until_closed(&mut silent_socks, Duration::from_secs(15)),
            );
            anyhow::ensure!(tls?.1, "a silent TLS client was kept for 15 s");
            anyhow::ensure!(
                socks5?.1,
                "an unfinished SOCKS5 handshake was kept for 15 s"
            );
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_downloads_do_not_stall_the_attackers_neighbours() -> anyhow::Result<()> {
    let t = TestMesh::start(85).await?;
    let request = |host: &str| {
        format!("GET /?size=16777216 HTTP/1.1\r\nHost: {host}:9080\r\n\r\n").into_bytes()
    };
    beside_steady_callers(&t, 200, || async {
        for _ in 0..rounds() {
            // 40 downloads of 16 MiB that are never read, from the callers' own pods: through
            // the waypoint and on the L4 path. They share the callers' HBONE connections.
            let mut held = Vec::new();
            for (pod, host) in [(PRODUCTPAGE, REVIEWS), (SLEEP, RATINGS)] {
                for _ in 0..20 {
                    let mut stream = raw::tunnel(t.socks(pod), host, 9080).await?;
                    stream.write_all(&request(host)).await?;
                    held.push(stream);
                }
            }
            // Let the held streams fill every window they can, with the callers running.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(held);
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_504_and_others_flow() -> anyhow::Result<()> {
    let timeouts = waypoint::Timeouts {
        stream_idle: Duration::from_secs(1),
        ..waypoint::Timeouts::default()
    };
    let t = mesh_with(86, timeouts).await?;
    let socks = t.socks(PRODUCTPAGE);
    beside_steady_callers(&t, 100, || async {
        for _ in 0..rounds() {
            let mut hung = Vec::new();
            for _ in 0..10 {
                let mut client = mesh::client::MeshClient::connect(socks, REVIEWS, 9080).await?;
                hung.push(tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    let response = client.get("/?delay=8s").await?;
                    anyhow::Ok((
                        response.status,
                        response.header("x-mesh-flags").map(str::to_owned),
                        started.elapsed(),
                    ))
                }));
            }
            for answer in hung {
                let (status, _, took) = answer.await??;
                anyhow::ensure!(status == 504, "a hung backend answered {status}");
                anyhow::ensure!(
                    took < Duration::from_secs(4),
                    "the 504 took {took:?} with a 1 s idle timeout"
                );
            }
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_is_rejected_while_the_last_good_keeps_serving() -> anyhow::Result<()> {
    let t = TestMesh::start(87).await?;
    let good = demo_yaml_in_block(87);
    let broken = [
        "{{{ not yaml".to_string(),
        good.replace("weight: 90", "weight: -5"),
        good.replace("kind: HTTPRoute", "kind: HTTPRoot"),
        "x".repeat(2 * 1024 * 1024),
    ];
    beside_steady_callers(&t, 100, || async {
        for _ in 0..rounds() {
            for text in &broken {
                t.edit_rejected(text).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            t.edit(&good).await?;
        }
        Ok(())
    })
    .await?;
    t.stop().await;
    Ok(())
}
