//! The fast HTTP/1.1 client (the default) against scripted servers on loopback: response
//! framings the echo server never produces, servers that close reused connections, and
//! malformed responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use loadtest::cli::{Cli, Command, normalize_args};
use loadtest::load::{self, HttpRunnerResults};
use mesh_runtime::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a scripted server answers.
#[derive(Clone)]
struct Script {
    /// Written for every request, piece by piece (each piece flushed on its own).
    pieces: Vec<&'static [u8]>,
    /// Close the connection, without saying so, after this many responses.
    close_after: Option<u64>,
}

struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

async fn scripted_server(script: Script) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, script.clone()));
        }
    });
    Scripted { addr, accepted }
}

async fn serve(mut stream: TcpStream, script: Script) {
    let _ = stream.set_nodelay(true);
    let mut served = 0;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // One request: a head with no body (the load runs send GETs).
        while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.clear();
        for piece in &script.pieces {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        served += 1;
        if script.close_after == Some(served) {
            return;
        }
    }
}

async fn run(argv: &[&str]) -> HttpRunnerResults {
    let mut full = vec!["loadtest", "load"];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(normalize_args(full.into_iter().map(Into::into))).expect("parse");
    let Command::Load(args) = cli.command else {
        panic!("expected load");
    };
    let options = args.into_options("testhost").expect("valid options");
    load::run(&options, &mut Vec::new(), CancellationToken::new())
        .await
        .expect("run succeeds")
}

fn code(results: &HttpRunnerResults, code: &str) -> u64 {
    results.ret_codes.get(code).copied().unwrap_or(0)
}

const CHUNKED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

#[tokio::test]
async fn chunked_bodies_split_across_reads_are_counted() {
    let server = scripted_server(Script {
        pieces: vec![
            CHUNKED_HEAD,
            b"a\r\n0123456789\r\n3e8;ext=x\r\n",
            &[b'z'; 1000],
            b"\r\n0\r\nx-trailer: done\r\n",
            b"\r\n",
        ],
        close_after: None,
    })
    .await;
    let url = format!("http://{}/", server.addr);
    let results = run(&["-qps", "0", "-n", "8", "-c", "1", &url]).await;
    assert_eq!(code(&results, "200"), 8, "{:?}", results.ret_codes);
    assert_eq!(
        results.socket_count, 1,
        "chunked responses keep the connection"
    );
    let head = CHUNKED_HEAD.len() as f64;
    assert_eq!(results.header_sizes.min, head);
    assert_eq!(results.header_sizes.max, head);
    assert_eq!(
        results.sizes.min,
        head + 1010.0,
        "header bytes plus body data"
    );
    assert_eq!(results.sizes.max, head + 1010.0);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let server = scripted_server(Script {
        pieces: vec![
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ],
        close_after: None,
    })
    .await;
    let url = format!("http://{}/", server.addr);
    let results = run(&["-qps", "0", "-n", "5", "-c", "1", &url]).await;
    assert_eq!(code(&results, "201"), 5, "{:?}", results.ret_codes);
    assert_eq!(results.socket_count, 1);
}

#[tokio::test]
async fn bodies_delimited_by_close_use_a_socket_each() {
    let server = scripted_server(Script {
        pieces: vec![b"HTTP/1.0 200 OK\r\n\r\n", b"twelve bytes"],
        close_after: Some(1),
    })
    .await;
    let url = format!("http://{}/", server.addr);
    let results = run(&["-qps", "0", "-n", "6", "-c", "2", &url]).await;
    assert_eq!(code(&results, "200"), 6, "{:?}", results.ret_codes);
    assert_eq!(results.socket_count, 6);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 6);
    assert_eq!(results.sizes.min, (19 + 12) as f64);
}

#[tokio::test]
async fn a_reused_connection_the_server_closed_is_retried_on_a_new_one() {
    // Like a server with a keep-alive request limit that closes without "Connection: close".
    let server = scripted_server(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        close_after: Some(3),
    })
    .await;
    let url = format!("http://{}/", server.addr);
    let results = run(&["-qps", "0", "-n", "30", "-c", "1", &url]).await;
    assert_eq!(code(&results, "200"), 30, "{:?}", results.ret_codes);
    assert_eq!(results.socket_count, 10, "three responses per connection");
}

#[tokio::test]
async fn malformed_responses_are_socket_errors_and_the_run_goes_on() {
    let garbage = scripted_server(Script {
        pieces: vec![b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
        close_after: None,
    })
    .await;
    let url = format!("http://{}/", garbage.addr);
    let results = run(&[
        "-allow-initial-errors",
        "-qps",
        "0",
        "-n",
        "4",
        "-c",
        "1",
        &url,
    ])
    .await;
    assert_eq!(code(&results, "-1"), 4, "{:?}", results.ret_codes);
    assert_eq!(
        results.socket_count, 4,
        "a fresh connection after every error"
    );

    let short = scripted_server(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"],
        close_after: Some(1),
    })
    .await;
    let url = format!("http://{}/", short.addr);
    let results = run(&[
        "-allow-initial-errors",
        "-qps",
        "0",
        "-n",
        "3",
        "-c",
        "1",
        &url,
    ])
    .await;
    assert_eq!(
        code(&results, "-1"),
        3,
        "a body cut short is an error, not a success: {:?}",
        results.ret_codes
    );
}

#[tokio::test]
async fn stdclient_uses_hyper_and_says_so() {
    let server = scripted_server(Script {
        pieces: vec![CHUNKED_HEAD, b"5\r\nhello\r\n0\r\n\r\n"],
        close_after: None,
    })
    .await;
    let url = format!("http://{}/", server.addr);
    let results = run(&["-stdclient", "-qps", "0", "-n", "5", "-c", "1", &url]).await;
    assert_eq!(code(&results, "200"), 5, "{:?}", results.ret_codes);
    assert!(results.options.disable_fast_client);
    let fast = run(&["-qps", "0", "-n", "5", "-c", "1", &url]).await;
    assert!(!fast.options.disable_fast_client);
    assert_eq!(
        results.sizes.min - results.header_sizes.min,
        fast.sizes.min - fast.header_sizes.min,
        "both clients count the same body bytes"
    );
}
