//! Telemetry's CEL expressions (access-log filters, metric tag values): any text parses or is
//! refused with a reason, and what parses evaluates over a request's attributes without
//! panicking (the parser's nesting bound keeps deep expressions from exhausting the stack).
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mesh_config::cel::Expression;
use waypoint::telemetry::attributes::Attributes;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(expression) = Expression::parse(text) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", http::HeaderValue::from_static("alice"));
    let attributes = Attributes {
        method: "GET",
        host: "web:80",
        path_and_query: "/a?b=1",
        request_headers: &headers,
        protocol: "HTTP/1.1",
        start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        duration: Duration::from_millis(3),
        request_size: 1,
        response_code: 503,
        grpc_status: Some(14),
        response_headers: Some(&headers),
        response_size: 2,
        source: Some("10.0.0.1:4000".parse().expect("addr")),
        destination: Some("10.96.0.10:80".parse().expect("addr")),
        upstream: None,
        peer_principal: Some("spiffe://cluster.local/ns/default/sa/caller"),
        local_principal: "spiffe://cluster.local/ns/default/sa/waypoint",
    };
    let _ = attributes.holds(&expression);
    let _ = attributes.text(&expression);
});
