//! `loadtest load` against the echo server (and test servers) on loopback.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use common::socks::start_socks5;
use common::start_echo;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadtest::cli::{Cli, Command, normalize_args};
use loadtest::load::{self, HttpRunnerResults, LoadError, LoadOptions};
use mesh_runtime::CancellationToken;
use serde_json::Value;

fn options(argv: &[&str]) -> LoadOptions {
    let mut full = vec!["loadtest", "load"];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(normalize_args(full.into_iter().map(Into::into))).expect("parse");
    let Command::Load(args) = cli.command else {
        panic!("expected load");
    };
    args.into_options("testhost").expect("valid options")
}

async fn run(argv: &[&str]) -> (HttpRunnerResults, String) {
    let mut text = Vec::new();
    let results = load::run(&options(argv), &mut text, CancellationToken::new())
        .await
        .expect("run succeeds");
    (results, String::from_utf8(text).expect("utf8"))
}

fn json_of(results: &HttpRunnerResults) -> Value {
    let dir = std::env::temp_dir().join(format!("loadtest-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.json", rand::random::<u64>()));
    let path = path.to_str().expect("utf8 path").to_owned();
    load::write_json(results, &path).expect("write json");
    let text = std::fs::read_to_string(&path).expect("read json");
    std::fs::remove_file(&path).expect("remove json");
    let _ = std::fs::remove_dir(&dir); // fails harmlessly while another test still uses it
    serde_json::from_str(&text).expect("valid json")
}

fn code(results: &HttpRunnerResults, code: &str) -> u64 {
    results.ret_codes.get(code).copied().unwrap_or(0)
}

fn assert_histogram_shape(h: &Value, name: &str, with_percentiles: bool) {
    assert!(h["Count"].is_u64(), "{name}.Count is an integer");
    for field in ["Min", "Max", "Sum", "Avg", "StdDev"] {
        assert!(h[field].is_number(), "{name}.{field} is a number");
    }
    let data = h["Data"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}.Data is an array"));
    for bucket in data {
        for field in ["Start", "End", "Percent"] {
            assert!(bucket[field].is_number(), "{name}.Data[].{field}");
        }
        assert!(bucket["Count"].is_u64(), "{name}.Data[].Count");
    }
    assert_eq!(
        h.get("Percentiles").is_some(),
        with_percentiles,
        "{name}.Percentiles"
    );
}

/// One `-n 40 -c 2` max-speed run with a 3-byte payload: its JSON and the wall-clock time.
async fn json_run() -> (Value, Duration, String, SocketAddr) {
    let echo = start_echo("json").await;
    let url = format!("http://{}/echo?size=1024", echo.addr);
    let started = Instant::now();
    let (results, _) = run(&[
        "-qps",
        "0",
        "-n",
        "40",
        "-c",
        "2",
        "-payload-size",
        "3",
        &url,
    ])
    .await;
    let wall = started.elapsed();
    (json_of(&results), wall, url, echo.addr)
}

#[tokio::test]
async fn json_has_fortio_field_names_and_types() {
    let (v, _, _, _) = json_run().await;
    let strings = [
        "RunType",
        "Labels",
        "StartTime",
        "RequestedQPS",
        "RequestedDuration",
        "Version",
        "AccessLoggerInfo",
        "ID",
        "URL",
        "CACert",
        "Cert",
        "Key",
        "UnixDomainSocket",
        "Resolve",
        "UserCredentials",
        "ContentType",
        "MethodOverride",
        "Payload",
    ];
    for f in strings {
        assert!(v[f].is_string(), "{f} is a string: {}", v[f]);
    }
    let integers = [
        "ActualDuration",
        "NumThreads",
        "Exactly",
        "RunID",
        "NumConnections",
        "HTTPReqTimeOut",
        "SocketCount",
        "AbortOn",
        "Offset",
    ];
    for f in integers {
        assert!(v[f].is_i64(), "{f} is an integer: {}", v[f]);
    }
    for f in ["ActualQPS", "Resolution"] {
        assert!(v[f].is_f64(), "{f} is a float");
    }
    let bools = [
        "Jitter",
        "Uniform",
        "NoCatchUp",
        "Insecure",
        "MTLS",
        "Compression",
        "DisableFastClient",
        "HTTP10",
        "H2",
        "DisableKeepAlive",
        "AllowHalfClose",
        "FollowRedirects",
        "LogErrors",
        "SequentialWarmup",
        "NoResolveEachConn",
    ];
    for f in bools {
        assert!(v[f].is_boolean(), "{f} is a bool");
    }
    for f in ["RetCodes", "IPCountMap"] {
        assert!(v[f].is_object(), "{f} is a map");
    }
    assert_eq!(v["ConnReuseRange"], serde_json::json!([0, 0]));
    assert_histogram_shape(&v["DurationHistogram"], "DurationHistogram", true);
    assert_histogram_shape(&v["Sizes"], "Sizes", false);
    assert_histogram_shape(&v["HeaderSizes"], "HeaderSizes", false);
    assert_histogram_shape(&v["ConnectionStats"], "ConnectionStats", true);
    let e = &v["ErrorsDurationHistogram"];
    assert_eq!(e["Count"], 0);
    assert!(
        e["Data"].is_null(),
        "empty histogram data is null, like Go's nil slice"
    );
    assert!(e.get("Percentiles").is_none());
    // Round trip through our own types.
    let back: HttpRunnerResults = serde_json::from_value(v).expect("deserialize");
    assert_eq!(back.duration_histogram.count, 40);
}

#[tokio::test]
async fn json_values_and_units() {
    let (v, wall, url, addr) = json_run().await;
    assert_eq!(v["RunType"], "HTTP");
    assert_eq!(v["RequestedQPS"], "max");
    assert_eq!(v["RequestedDuration"], "exactly 40 calls");
    assert_eq!(v["Exactly"], 40);
    assert_eq!(v["NumThreads"], 2);
    assert_eq!(v["URL"], url.as_str());
    assert_eq!(v["RetCodes"]["200"], 40);
    assert_eq!(v["Sockets"], serde_json::json!([1, 1]));
    assert_eq!(v["SocketCount"], 2);
    assert_eq!(v["IPCountMap"][addr.to_string()], 2);
    assert_eq!(v["Payload"], "YWJj", "base64 of the 3-byte payload");
    assert_eq!(v["HTTPReqTimeOut"], 3_000_000_000i64, "timeout in ns");
    assert_eq!(v["Resolution"], 0.001);
    let start = v["StartTime"].as_str().expect("start");
    assert!(
        start.len() >= 20 && start.as_bytes()[10] == b'T' && start.ends_with('Z'),
        "{start}"
    );
    assert!(v["ID"].as_str().expect("id").starts_with(&start[..10]));

    // ActualDuration in ns, latencies in seconds.
    let ns = v["ActualDuration"].as_i64().expect("ns") as f64;
    assert!(
        ns > 1e5 && ns <= wall.as_nanos() as f64,
        "ActualDuration {ns} ns vs wall {wall:?}"
    );
    let qps = v["ActualQPS"].as_f64().expect("qps");
    assert!((qps - 40.0 / (ns / 1e9)).abs() < 1e-6 * qps.max(1.0));
    let d = &v["DurationHistogram"];
    assert_eq!(d["Count"], 40);
    let avg = d["Avg"].as_f64().expect("avg");
    assert!(avg > 0.0 && avg < 1.0, "latency in seconds: {avg}");
    assert!(d["Max"].as_f64() <= Some(wall.as_secs_f64()));
    let percentiles: Vec<f64> = d["Percentiles"]
        .as_array()
        .expect("percentiles")
        .iter()
        .map(|p| p["Percentile"].as_f64().expect("percentile"))
        .collect();
    assert_eq!(percentiles, [50.0, 75.0, 90.0, 99.0, 99.9]);
    let last = d["Data"]
        .as_array()
        .expect("data")
        .last()
        .expect("a bucket")
        .clone();
    assert_eq!(last["Percent"], 100.0);
    let body_and_headers = v["Sizes"]["Min"].as_f64().expect("size");
    let headers = v["HeaderSizes"]["Min"].as_f64().expect("header size");
    assert_eq!(
        body_and_headers - headers,
        1024.0,
        "Sizes = headers + 1024-byte body"
    );
    assert_eq!(v["ConnectionStats"]["Count"], 2);
}

#[tokio::test]
async fn text_summary_reads_like_fortio() {
    let echo = start_echo("text").await;
    let url = format!("http://{}/?size=10", echo.addr);
    let (_, text) = run(&["-qps", "200", "-t", "500ms", "-c", "2", &url]).await;
    for needle in [
        "running at 200 queries per second",
        "Starting at 200 qps with 2 thread(s) [gomax ",
        "for 500ms : 50 calls each (total 100)",
        "scheduled send time",
        "Ended after ",
        "Sleep times : count ",
        "Aggregated Function Time : count 100 avg ",
        "# range, mid point, percentile, count\n>= ",
        "# target 50% ",
        "# target 99.9% ",
        "Error cases : no data",
        "Sockets used: 2 (for perfect keepalive, would be 2)",
        "Uniform: false, Jitter: false, Catchup allowed: true",
        "Code 200 : 100 (100.0 %)",
        "Response Header Sizes : count 100 avg ",
        "Response Body/Total Sizes : count 100 avg ",
        "All done 100 calls (plus 2 warmup) ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[tokio::test]
async fn pacing_500_qps_for_2s_sends_about_1000() {
    let echo = start_echo("pace").await;
    let url = format!("http://{}/echo?size=100", echo.addr);
    let (results, _) = run(&["-qps", "500", "-t", "2s", "-c", "4", "-uniform", &url]).await;
    let count = results.duration_histogram.count;
    assert!((900..=1100).contains(&count), "count {count}");
    let seconds = results.actual_duration as f64 / 1e9;
    assert!((1.8..=2.5).contains(&seconds), "duration {seconds}");
    assert!(
        (450.0..=550.0).contains(&results.actual_qps),
        "qps {}",
        results.actual_qps
    );
    assert_eq!(results.requested_qps, "500");
    assert_eq!(results.requested_duration, "2s");
    assert!(results.uniform);
}

#[tokio::test]
async fn exact_count_is_exact() {
    let echo = start_echo("n").await;
    let url = format!("http://{}/", echo.addr);
    let (results, text) = run(&["-qps", "0", "-n", "37", "-c", "4", &url]).await;
    assert_eq!(results.duration_histogram.count, 37);
    assert_eq!(code(&results, "200"), 37);
    assert_eq!(results.sockets, [1, 1, 1, 1]);
    assert!(text.contains("(plus 0 warmup)"), "no warmup with -n");
    let (results, _) = run(&["-qps", "400", "-n", "10", "-c", "3", &url]).await;
    assert_eq!(results.duration_histogram.count, 10);
    assert_eq!(results.requested_duration, "exactly 10 calls");
}

#[tokio::test]
async fn socks5_entry_resolves_the_name_at_the_proxy() {
    let echo = start_echo("behind-proxy").await;
    let proxy = start_socks5(echo.addr).await;
    let proxy_addr = proxy.addr.to_string();
    let url = "http://reviews.default.svc.cluster.local:9080/echo?size=64";
    let (results, _) = run(&[
        "-qps",
        "0",
        "-n",
        "30",
        "-c",
        "3",
        "-socks5",
        &proxy_addr,
        url,
    ])
    .await;
    assert_eq!(code(&results, "200"), 30);
    let targets = proxy.targets.lock().expect("lock").clone();
    assert_eq!(
        targets.len(),
        3,
        "one proxied connection per -c: {targets:?}"
    );
    assert!(
        targets
            .iter()
            .all(|t| t == "reviews.default.svc.cluster.local:9080"),
        "{targets:?}"
    );
    assert_eq!(
        results.ip_count_map.keys().collect::<Vec<_>>(),
        [&proxy_addr]
    );

    let fetched = load::curl(&options(&[
        "-socks5",
        &proxy_addr,
        "http://any.name:1/debug",
    ]))
    .await
    .expect("curl through the proxy");
    let debug: Value = serde_json::from_slice(&fetched.body).expect("json");
    assert_eq!(debug["server"], "behind-proxy");
    assert_eq!(debug["host"], "any.name:1");
}

/// An HTTP/2-only server counting the requests it sees as HTTP/2.
async fn h2_only_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    if req.version() == http::Version::HTTP_2 {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn h2_speaks_http2_prior_knowledge() {
    let echo = start_echo("h2").await;
    let debug_url = format!("http://{}/debug", echo.addr);
    let fetched = load::curl(&options(&["-h2", &debug_url]))
        .await
        .expect("h2 curl");
    let debug: Value = serde_json::from_slice(&fetched.body).expect("json");
    assert_eq!(debug["protocol"], "HTTP/2.0");
    let fetched = load::curl(&options(&[&debug_url])).await.expect("h1 curl");
    let debug: Value = serde_json::from_slice(&fetched.body).expect("json");
    assert_eq!(debug["protocol"], "HTTP/1.1");

    let (results, _) = run(&["-h2", "-qps", "0", "-n", "20", "-c", "2", &debug_url]).await;
    assert_eq!(code(&results, "200"), 20);
    assert!(results.options.h2);

    let (addr, seen) = h2_only_server().await;
    let url = format!("http://{addr}/");
    let (results, _) = run(&["-h2", "-qps", "0", "-n", "25", "-c", "2", &url]).await;
    assert_eq!(code(&results, "200"), 25);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        25,
        "every call arrived as HTTP/2"
    );
    assert_eq!(results.socket_count, 2);
}

#[tokio::test]
async fn keepalive_false_and_server_close_use_new_sockets() {
    let echo = start_echo("ka").await;
    let url = format!("http://{}/?size=8", echo.addr);
    let (results, _) = run(&["-keepalive=false", "-qps", "0", "-n", "12", "-c", "2", &url]).await;
    assert_eq!(code(&results, "200"), 12);
    assert!(results.options.disable_keep_alive);
    assert_eq!(
        results.socket_count, 12,
        "one socket per call (first one pre-opened)"
    );
    let close_url = format!("http://{}/?close=true", echo.addr);
    let (results, _) = run(&["-qps", "0", "-n", "10", "-c", "1", &close_url]).await;
    assert_eq!(
        code(&results, "200"),
        10,
        "no errors when the server closes"
    );
    assert_eq!(results.socket_count, 10);
    let (results, _) = run(&["-qps", "0", "-n", "10", "-c", "1", &url]).await;
    assert_eq!(results.socket_count, 1, "keep-alive reuses the socket");
}

#[tokio::test]
async fn error_codes_and_timeouts_are_recorded() {
    let echo = start_echo("err").await;
    let url = format!("http://{}/?status=503", echo.addr);
    match load::run(
        &options(&["-t", "200ms", &url]),
        &mut Vec::new(),
        CancellationToken::new(),
    )
    .await
    {
        Err(LoadError::Warmup { reason, .. }) => assert!(reason.contains("503"), "{reason}"),
        other => panic!("expected a warmup failure, got {other:?}"),
    }
    let (results, text) = run(&[
        "-allow-initial-errors",
        "-qps",
        "0",
        "-n",
        "9",
        "-c",
        "3",
        &url,
    ])
    .await;
    assert_eq!(code(&results, "503"), 9);
    assert_eq!(results.errors_duration_histogram.count, 9);
    assert!(text.contains("Code 503 : 9 (100.0 %)"), "{text}");

    let slow = format!("http://{}/?delay=2s", echo.addr);
    let (results, _) = run(&[
        "-timeout", "100ms", "-qps", "0", "-n", "2", "-c", "1", &slow,
    ])
    .await;
    assert_eq!(code(&results, "-1"), 2, "timeouts are socket errors (-1)");
    assert!(
        results.duration_histogram.max < 0.5,
        "bounded by the timeout"
    );
}

#[tokio::test]
async fn stalls_are_not_hidden_and_nocatchup_does_not_burst() {
    let echo = start_echo("stall").await;
    // Each call takes 30 ms but is scheduled every 10 ms.
    let url = format!("http://{}/?delay=30ms", echo.addr);
    let (results, _) = run(&["-qps", "100", "-n", "20", "-c", "1", &url]).await;
    assert!(
        results.duration_histogram.max > 0.25,
        "latency counted from the schedule grows with the backlog: max {}",
        results.duration_histogram.max
    );
    let (results, _) = run(&["-qps", "100", "-n", "20", "-c", "1", "-nocatchup", &url]).await;
    assert!(results.no_catch_up);
    assert!(
        results.duration_histogram.max < 0.2,
        "no backlog without catch-up: max {}",
        results.duration_histogram.max
    );
    assert!(results.duration_histogram.min >= 0.03);
}

#[tokio::test]
async fn stop_token_ends_an_unbounded_run() {
    let echo = start_echo("stop").await;
    let url = format!("http://{}/", echo.addr);
    let stop = CancellationToken::new();
    let canceller = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        canceller.cancel();
    });
    let started = Instant::now();
    let results = load::run(
        &options(&["-qps", "50", "-t", "0", "-c", "1", &url]),
        &mut Vec::new(),
        stop,
    )
    .await
    .expect("run");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(results.requested_duration, "until stop");
    assert!(
        results.duration_histogram.count >= 5,
        "{}",
        results.duration_histogram.count
    );
}
