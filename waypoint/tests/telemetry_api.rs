//! Istio's Telemetry API at the real waypoint: an access-log filter (CEL) decides which
//! requests are logged, and tag overrides (CEL values, REMOVE) change the labels of the
//! request metrics, per metric and per destination.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Harness, manifest};
use http_body_util::Full;
use hyper::Request;
use mesh_runtime::LogFormat;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BLOCK: u8 = 122;

/// Everything the process logs, one JSON object per line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The access-log lines written so far, as (path, response code).
    fn requests(&self) -> Vec<(String, u64)> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == "request")
            .map(|line| {
                let path = line["path"].as_str().unwrap_or_default().to_string();
                (path, line["response_code"].as_u64().unwrap_or_default())
            })
            .collect()
    }

    /// The messages logged at ERROR or WARN.
    fn alarms(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["level"] == "ERROR" || line["level"] == "WARN")
            .map(|line| line["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn telemetry(spec: Value) -> Value {
    json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": "istio-system"}, "spec": spec})
}

fn get(path: &str, app: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get(format!("http://reviews.default:9080{path}"))
        .header(http::header::HOST, "reviews.default:9080");
    if let Some(app) = app {
        request = request.header("x-app", app);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_filters_and_tag_overrides_apply() -> anyhow::Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    // The mesh's own subscriber, as `LOG_FORMAT=json` installs it.
    let filter = tracing_subscriber::EnvFilter::new("info");
    mesh_runtime::try_init_with(filter, LogFormat::Json, false, move || writer.clone())?;
    let spec = json!({
        "accessLogging": [{"filter": {"expression": "response.code >= 400 || request.headers['x-app'] == 'audited'"}}],
        "metrics": [{"overrides": [
            {"match": {"metric": "REQUEST_COUNT"}, "tagOverrides": {
                "source_app": {"value": "request.headers['x-app']"},
                "destination_version": {"operation": "REMOVE"}}},
            {"match": {"metric": "REQUEST_DURATION"}, "tagOverrides": {
                "request_protocol": {"value": "request.method + '-' + string(response.code)"}}}]}]
    });
    let h = Harness::start(BLOCK, &manifest(BLOCK, &[telemetry(spec)])).await?;
    let _v1 = h.backend("v1").await?;
    let mut caller = h.http1("sleep").await?;

    assert_eq!(caller.send(get("/ok", Some("web"))).await?.status, 200);
    assert_eq!(
        caller.send(get("/audited", Some("audited"))).await?.status,
        200
    );
    assert_eq!(caller.send(get("/fail-all/503/x", None)).await?.status, 503);
    assert_eq!(caller.send(get("/ok-again", None)).await?.status, 200);

    // Tag overrides: REQUEST_COUNT's source_app is the request's header (`unknown` when the
    // expression cannot be evaluated: no header), its destination_version removed; the
    // duration metric's request_protocol is an expression of its own, its other labels kept.
    // (A request is counted just after its response: wait for all four.)
    assert_eq!(h.wait_metric("istio_requests_total", &[], 4.0).await, 4.0);
    assert_eq!(
        h.wait_metric(
            "istio_requests_total",
            &[("source_app", "web"), ("destination_version", "")],
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        h.metric("istio_requests_total", &[("source_app", "audited")]),
        1.0
    );
    assert_eq!(
        h.metric("istio_requests_total", &[("source_app", "unknown")]),
        2.0
    );
    assert_eq!(
        h.metric("istio_requests_total", &[("destination_version", "v1")]),
        0.0
    );
    let durations = |protocol: &str| -> f64 {
        let histograms = h.registry.gather();
        let family = histograms
            .iter()
            .find(|f| f.name() == "istio_request_duration_milliseconds");
        family.map_or(0.0, |f| {
            f.get_metric()
                .iter()
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "request_protocol" && l.value() == protocol)
                })
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "destination_version" && l.value() == "v1")
                })
                .map(|m| m.get_histogram().get_sample_count() as f64)
                .sum()
        })
    };
    assert_eq!(durations("GET-200"), 3.0);
    assert_eq!(durations("GET-503"), 1.0);

    // The access-log filter: the failure and the audited request only.
    let mut logged = captured.requests();
    for _ in 0..50 {
        if logged.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        logged = captured.requests();
    }
    logged.sort();
    assert_eq!(
        logged,
        [
            ("/audited".to_string(), 200),
            ("/fail-all/503/x".to_string(), 503)
        ]
    );

    // Heads the tunnel refuses before the proxy has them (over the wire bound) are reported
    // like any other request: counted, and logged as the filter says (431, no path).
    const REFUSED: usize = 15;
    let lines: String = (0..30)
        .map(|i| format!("x-h{i}: {}\r\n", "a".repeat(4 << 10)))
        .collect();
    let head = format!("GET /big HTTP/1.1\r\nhost: reviews:9080\r\n{lines}");
    for _ in 0..REFUSED {
        let mut tunnel = h.tunnel("sleep", "1.10", &h.reviews_vip()).await?;
        tunnel.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        let read = tunnel.read_to_end(&mut answer);
        tokio::time::timeout(std::time::Duration::from_secs(5), read).await??;
        assert!(answer.starts_with(b"HTTP/1.1 431"));
    }
    let refused = [("response_code", "431"), ("response_flags", "DPE")];
    let counted = h.wait_metric("istio_requests_total", &refused, REFUSED as f64);
    assert_eq!(counted.await, REFUSED as f64);
    for _ in 0..50 {
        if captured.requests().len() >= 2 + REFUSED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(captured.requests().last(), Some(&(String::new(), 431)));
    // Pingora's own line about each (an ERROR: "Fail to proxy: Downstream ...") is limited
    // to 10 a minute; nothing else alarmed.
    let alarms = captured.alarms();
    assert_eq!(alarms.len(), 10, "{alarms:#?}");
    assert!(
        alarms
            .iter()
            .all(|a| a.starts_with("Fail to proxy: Downstream"))
    );
    Ok(())
}
