//! The echo server over real loopback sockets (HTTP/1.1 and h2c).

mod common;

use std::time::{Duration, Instant};

use common::{h1_connect, h1_get, h1_send, h2_get, start_echo};
use http::StatusCode;

#[tokio::test]
async fn size_returns_exactly_n_bytes() {
    let echo = start_echo("e1").await;
    for size in [0usize, 1, 1024, 70_000] {
        let reply = h1_get(echo.addr, &format!("/echo?size={size}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), size);
        assert_eq!(reply.headers["content-length"], size.to_string().as_str());
        assert_eq!(reply.headers["x-echo-server"], "e1");
    }
}

#[tokio::test]
async fn status_sets_the_response_code() {
    let echo = start_echo("e1").await;
    let reply = h1_get(echo.addr, "/any/path?status=503").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["x-echo-server"], "e1");
    let reply = h1_get(echo.addr, "/?status=418:100").await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn delay_waits_before_answering() {
    let echo = start_echo("e1").await;
    let started = Instant::now();
    let reply = h1_get(echo.addr, "/?delay=200ms").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    h1_get(echo.addr, "/").await;
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn header_is_repeatable() {
    let echo = start_echo("e1").await;
    let reply = h1_get(
        echo.addr,
        "/?header=X-One:1&header=x-two:%20two&header=X-One:again",
    )
    .await;
    let ones: Vec<_> = reply.headers.get_all("x-one").iter().collect();
    assert_eq!(ones, ["1", "again"]);
    assert_eq!(reply.headers["x-two"], "two");
}

#[tokio::test]
async fn close_answers_with_connection_close_and_closes() {
    let echo = start_echo("e1").await;
    let mut sender = h1_connect(echo.addr).await;
    let reply = h1_send(&mut sender, "GET", "/?close=true&size=5", b"").await;
    assert_eq!(reply.headers["connection"], "close");
    assert_eq!(reply.body.len(), 5);
    let closed = tokio::time::timeout(Duration::from_secs(5), sender.ready()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the server closed the connection"
    );
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let echo = start_echo("e1").await;
    let mut sender = h1_connect(echo.addr).await;
    for _ in 0..5 {
        let reply = h1_send(&mut sender, "POST", "/?size=3", b"ignored request body").await;
        assert_eq!(reply.body.as_ref(), b"abc");
    }
}

#[tokio::test]
async fn without_size_the_request_body_is_echoed() {
    let echo = start_echo("e1").await;
    let mut sender = h1_connect(echo.addr).await;
    let reply = h1_send(&mut sender, "POST", "/echo", b"hello echo").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.as_ref(), b"hello echo");
    let reply = h1_send(&mut sender, "POST", "/echo?status=201", b"again").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body.as_ref(), b"again");
}

#[tokio::test]
async fn bad_query_values_are_400_with_a_message() {
    let echo = start_echo("e1").await;
    for query in [
        "size=big",
        "status=abc",
        "delay=later",
        "header=novalue",
        "close=maybe",
    ] {
        let reply = h1_get(echo.addr, &format!("/?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let message = String::from_utf8_lossy(&reply.body).into_owned();
        let name = query.split('=').next().expect("name");
        assert!(message.contains(name), "{query}: {message}");
        assert_eq!(reply.headers["x-echo-server"], "e1");
    }
}

#[tokio::test]
async fn debug_describes_the_request() {
    let echo = start_echo("debug-server").await;
    let mut sender = h1_connect(echo.addr).await;
    let request = http::Request::post("/debug?a=1&b=2")
        .header("host", "svc.test:80")
        .header("X-Custom", "Value")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"12345",
        )))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["server"], "debug-server");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/debug");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["headers"]["x-custom"], "Value");
    assert_eq!(v["headers"]["host"], "svc.test:80");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["body_size"], 5);
    let peer: std::net::SocketAddr = v["peer"].as_str().expect("peer").parse().expect("ip:port");
    assert!(peer.ip().is_loopback());
}

#[tokio::test]
async fn h2c_requests_work() {
    let echo = start_echo("h2").await;
    let reply = h2_get(echo.addr, "/debug").await;
    let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(v["protocol"], "HTTP/2.0");
    assert_eq!(v["host"], "echo.test");
    assert_eq!(reply.headers["x-echo-server"], "h2");
    let reply = h2_get(echo.addr, "/?size=100000&status=202&close=true").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body.len(), 100_000);
    assert!(
        reply.headers.get("connection").is_none(),
        "no connection header in HTTP/2"
    );
}

#[tokio::test]
async fn ten_megabytes_are_streamed() {
    let echo = start_echo("big").await;
    let size = 10 * 1024 * 1024;
    let reply = h1_get(echo.addr, &format!("/?size={size}")).await;
    assert_eq!(reply.body.len(), size);
    assert_eq!(reply.headers["content-length"], size.to_string().as_str());
    // Arrives as a stream of frames (the server sends 64 KiB slices of one static buffer).
    assert!(reply.frames > 1, "{} frames", reply.frames);
    assert!(reply.body.iter().all(u8::is_ascii_lowercase));
    let reply = h2_get(echo.addr, &format!("/?size={size}")).await;
    assert_eq!(reply.body.len(), size);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let echo = start_echo("e1").await;
    assert_eq!(h1_get(echo.addr, "/").await.status, StatusCode::OK);
    echo.shutdown.cancel();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(echo.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener closed after shutdown");
}

/// gRPC on the same port: health (unary and server streaming), reflection (bidirectional
/// streaming), statuses in trailers, and UNIMPLEMENTED for a service the server lacks; HTTP
/// keeps working beside it.
#[tokio::test]
async fn grpc_calls_are_served_on_the_same_port() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let echo = start_echo("g1").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", echo.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    let served = health
        .check(HealthCheckRequest::default())
        .await
        .expect("the server is healthy");
    assert_eq!(
        served
            .metadata()
            .get("x-echo-server")
            .and_then(|v| v.to_str().ok()),
        Some("g1")
    );
    assert_eq!(served.into_inner().status, ServingStatus::Serving as i32);
    let unknown = HealthCheckRequest {
        service: "nope".into(),
    };
    let missing = health.check(unknown).await.expect_err("unknown service");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("a message").map(|m| m.status);
    assert_eq!(first, Some(ServingStatus::Serving as i32));

    let request = ServerReflectionRequest {
        host: "h".repeat(100_000),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let requests = futures::stream::iter([request.clone(), request]);
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let mut answers = reflection
        .server_reflection_info(requests)
        .await
        .expect("reflection")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(ServerReflectionResponse {
        valid_host,
        message_response,
        ..
    }) = answers.message().await.expect("an answer")
    {
        assert_eq!(valid_host.len(), 100_000);
        let Some(MessageResponse::ListServicesResponse(list)) = message_response else {
            panic!("{message_response:?}");
        };
        listed.push(list.service.into_iter().map(|s| s.name).collect::<Vec<_>>());
    }
    assert_eq!(listed.len(), 2, "one answer per request, then the end");
    assert!(
        listed[0].contains(&"grpc.health.v1.Health".to_string()),
        "{listed:?}"
    );

    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default();
    let path = http::uri::PathAndQuery::from_static("/unknown.v1.Service/Call");
    let call = grpc.unary(
        tonic::Request::new(HealthCheckRequest::default()),
        path,
        codec,
    );
    let unimplemented = call.await.expect_err("no such service");
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

    assert_eq!(h2_get(echo.addr, "/?size=10").await.body.len(), 10);
}
