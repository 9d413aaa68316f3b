//! What a Telemetry's features cost per request, each timed alone over half a second: reading
//! and writing trace context, a span started, tagged and ended (sampled but not exported: the
//! export itself runs on the batch processor's own thread), and the CEL of an access-log
//! filter and of a tag override.
//!
//! `cargo run --release -p waypoint --example telemetry_cost` (BENCHMARKS.md has the figures).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use mesh_config::cel::Expression;
use mesh_config::traces::{
    CustomTag, DEFAULT_MAX_TAG_LENGTH, OtlpExport, TracingProvider, TracingSettings,
};
use mesh_config::{Destination, ObjectRef, Service, Store};
use mesh_hbone::{Identity, LocalCa, Pool, PoolConfig};
use waypoint::telemetry::RequestLabels;
use waypoint::telemetry::attributes::Attributes;
use waypoint::telemetry::trace::{Incoming, RequestSpan, Tracers, context, tags};
use waypoint::upstream::{ClientConfig, Upstreams};

/// Nanoseconds per call of `f`, over at least half a second.
fn per_call(mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn service() -> Arc<Service> {
    mesh_config::fixtures::compiled_service("default", "web")
}

fn settings(percent: f64) -> Arc<TracingSettings> {
    Arc::new(TracingSettings {
        provider: Arc::new(TracingProvider {
            name: "otel".into(),
            service: service(),
            port: 4317,
            max_tag_length: DEFAULT_MAX_TAG_LENGTH,
            export: OtlpExport::Grpc {
                timeout: Duration::from_secs(1),
                metadata: Vec::new(),
            },
        }),
        sampling_percent: percent,
        // Recorded and ended as when exported; the silent tracer hands it to no exporter.
        report_spans: false,
        istio_tags: true,
        custom_tags: vec![("team".into(), CustomTag::Literal("payments".into()))],
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ca = Arc::new(LocalCa::new("cluster.local").expect("ca"));
    let identity = Identity::new("cluster.local", "default", "waypoint");
    let upstreams = Upstreams::new(
        Pool::new(ca, PoolConfig::default()),
        identity,
        "127.0.2.20".parse().expect("ip"),
        ClientConfig::default(),
    );
    let snapshot = mesh_config::compile(vec![("empty.yaml".into(), String::new())]).expect("empty");
    let waypoint = ObjectRef::new("default", "wp");
    let tracers = Tracers::new(
        waypoint.clone(),
        Store::new(snapshot),
        upstreams,
        Duration::from_secs(5),
    );

    let mut headers = HeaderMap::new();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    headers.insert("traceparent", parent.parse().expect("value"));
    headers.insert("x-request-id", "r-1".parse().expect("value"));
    headers.insert("user-agent", "fortio/1.0".parse().expect("value"));
    let labels = RequestLabels {
        response_code: 200,
        ..RequestLabels::default()
    };
    let destination = Destination::Service {
        service: service(),
        port: 80,
    };

    let read_and_write = per_call(|| {
        let incoming = Incoming::of(black_box(&headers));
        let parent = incoming
            .as_ref()
            .and_then(|i| i.parent.clone())
            .expect("parent");
        black_box(context::outgoing(&parent, incoming.as_ref()));
    });
    let span = |percent: f64, headers: &HeaderMap| {
        let settings = settings(percent);
        per_call(|| {
            let span = RequestSpan::start(
                &tracers,
                &settings,
                headers,
                "web:80/*".into(),
                SystemTime::now(),
            );
            black_box(span.outgoing());
            if !span.sampled() {
                return;
            }
            let facts = tags::Facts {
                labels: &labels,
                destination: Some(&destination),
                method: "GET",
                url: "http://web:80/items".into(),
                protocol: "HTTP/1.1",
                headers,
                peer_address: Some("10.0.0.1".into()),
                upstream_address: Some("10.0.0.2:8080".into()),
                request_size: 0,
                response_size: 512,
            };
            let tags = tags::tags(&facts, &span.settings, &waypoint, |_| None);
            span.end(tags, false);
        })
    };
    let sampled = span(100.0, &headers);
    let unsampled = span(0.0, &HeaderMap::new());

    let response = HeaderMap::new();
    let attributes = Attributes {
        method: "GET",
        host: "web:80",
        path_and_query: "/items?page=2",
        request_headers: &headers,
        protocol: "HTTP/1.1",
        start: SystemTime::now(),
        duration: Duration::from_millis(3),
        request_size: 0,
        response_code: 200,
        grpc_status: None,
        response_headers: Some(&response),
        response_size: 512,
        source: Some("10.0.0.1:4000".parse().expect("addr")),
        destination: Some("10.96.0.10:80".parse().expect("addr")),
        upstream: None,
        peer_principal: Some("spiffe://cluster.local/ns/default/sa/caller"),
        local_principal: "spiffe://cluster.local/ns/default/sa/waypoint",
    };
    let filter = Expression::parse("response.code >= 400").expect("filter");
    let by_header =
        Expression::parse("request.headers['user-agent'].startsWith('curl')").expect("filter");
    let label = Expression::parse("request.headers['x-request-id']").expect("label");
    let filter_code = per_call(|| assert!(!attributes.holds(black_box(&filter))));
    let filter_header = per_call(|| assert!(!attributes.holds(black_box(&by_header))));
    let tag_value = per_call(|| assert!(attributes.text(black_box(&label)).is_some()));

    println!("telemetry cost per request (ns):");
    println!("  trace context read + written (W3C)        {read_and_write:>8.0}");
    println!("  span, sampled: started, tagged, ended     {sampled:>8.0}");
    println!("  span, not sampled                         {unsampled:>8.0}");
    println!("  access-log filter `response.code >= 400`  {filter_code:>8.0}");
    println!("  access-log filter on a request header     {filter_header:>8.0}");
    println!("  tag override value from a header         {tag_value:>8.0}");
}
