//! gRPC through the waypoint with real tonic clients and servers, routed by a GRPCRoute and
//! carried as h2c inside HBONE both ways: unary calls, server streaming, bidirectional
//! streaming, statuses in trailers, large messages, and the waypoint's own answers in gRPC's
//! words (UNIMPLEMENTED for no route, PERMISSION_DENIED for a deny).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{Harness, ip, manifest_with_port};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_config::DEFAULT_TRUST_DOMAIN;
use mesh_hbone::Identity;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const HEALTH: &str = "grpc.health.v1.Health";

/// A gRPC server on pod `reviews-v1`: health (unary, server streaming) and reflection
/// (bidirectional streaming), each behind its own path, over HBONE.
struct GrpcBackend {
    reporter: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn grpc_backend(h: &Harness) -> anyhow::Result<GrpcBackend> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let identity = Identity::new(DEFAULT_TRUST_DOMAIN, "default", "reviews-v1");
    let tls = mesh_hbone::server_config(h.ca.clone(), identity)?;
    let addr = SocketAddr::new(ip(h.block, "2.10"), mesh_core::ports::HBONE);
    let listener = TcpListener::bind(addr).await?;
    let shutdown = CancellationToken::new();
    let handler = move |connect: mesh_hbone::InboundConnect| {
        let (health, reflection) = (health.clone(), reflection.clone());
        async move {
            let Ok(stream) = connect.accept(http::HeaderMap::new()) else {
                return;
            };
            let app = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let (mut health, mut reflection) = (health.clone(), reflection.clone());
                async move {
                    type Req = http::Request<Incoming>;
                    if req.uri().path().starts_with("/grpc.health.v1.Health/") {
                        std::future::poll_fn(|cx| Service::<Req>::poll_ready(&mut health, cx))
                            .await?;
                        health.call(req).await
                    } else {
                        std::future::poll_fn(|cx| Service::<Req>::poll_ready(&mut reflection, cx))
                            .await?;
                        reflection.call(req).await
                    }
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), app)
                .await;
        }
    };
    tokio::spawn(mesh_hbone::Server::new(tls).serve(listener, handler, shutdown.clone()));
    Ok(GrpcBackend { reporter, shutdown })
}

/// A tonic channel over one HBONE tunnel from `caller` to the reviews VIP.
async fn channel(h: &Harness, caller: &str) -> anyhow::Result<Channel> {
    let tunnel = h.tunnel(caller, "1.10", &h.reviews_vip()).await?;
    let tunnel = Arc::new(Mutex::new(Some(tunnel)));
    let connector = tower::service_fn(move |_: http::Uri| {
        let tunnel = tunnel.lock().ok().and_then(|mut t| t.take());
        async move {
            match tunnel {
                Some(t) => Ok(TokioIo::new(t)),
                None => Err(std::io::Error::other("the tunnel was used already")),
            }
        }
    });
    let endpoint = Endpoint::from_static("http://reviews.default:9080");
    Ok(endpoint.connect_with_connector(connector).await?)
}

fn manifest(block: u8) -> String {
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
            "rules": [{
                "matches": [{"method": {"service": HEALTH}}],
                "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                    "set": [{"name": "x-routed", "value": "health"}]}}],
                "backendRefs": [{"name": "reviews", "port": 9080}]
            }, {
                "matches": [{"method": {"type": "RegularExpression", "service": "grpc\\.reflection\\..*"}}],
                "backendRefs": [{"name": "reviews", "port": 9080}]
            }]
        }
    });
    // `intruder` may not check health.
    let deny = mesh_config::fixtures::policy(
        "default",
        "no-intruders",
        json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/intruder"]}}],
                       "to": [{"operation": {"paths": [format!("/{HEALTH}/Check")]}}]}]
        }),
    );
    manifest_with_port(block, "grpc", &[route, deny])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_go_through_a_grpc_route() -> anyhow::Result<()> {
    let block = 104;
    let h = Harness::start(block, &manifest(block)).await?;
    let backend = grpc_backend(&h).await?;
    backend
        .reporter
        .set_service_status("shop", ServingStatus::Serving)
        .await;
    let channel = channel(&h, "sleep").await?;
    let mut health = HealthClient::new(channel.clone());

    // Unary, with the route's response header.
    let checked = health
        .check(HealthCheckRequest {
            service: "shop".into(),
        })
        .await?;
    assert_eq!(
        checked
            .metadata()
            .get("x-routed")
            .and_then(|v| v.to_str().ok()),
        Some("health")
    );
    assert_eq!(checked.into_inner().status, Wire::Serving as i32);
    // A status from the server (NOT_FOUND for an unknown service) reaches the client intact.
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    // Counted by their gRPC status: OK from the trailers, NOT_FOUND from a trailers-only
    // answer's head.
    for (status, code) in [("0", "200"), ("5", "200")] {
        let labels = [("grpc_response_status", status), ("response_code", code)];
        let counted = h.wait_metric("istio_requests_total", &labels, 1.0).await;
        assert!(counted >= 1.0, "grpc_response_status={status}: {counted}");
    }

    // Server streaming: each change of status arrives as it happens.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "shop".into(),
        })
        .await?
        .into_inner();
    let first = watch.message().await?.map(|m| m.status);
    assert_eq!(first, Some(Wire::Serving as i32));
    backend
        .reporter
        .set_service_status("shop", ServingStatus::NotServing)
        .await;
    let second = watch.message().await?.map(|m| m.status);
    assert_eq!(second, Some(Wire::NotServing as i32));

    // Bidirectional streaming, with large messages: each request is answered in turn on one
    // stream; asking for the file of the health service returns its descriptor.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let mut answers = reflection
        .server_reflection_info(requests)
        .await?
        .into_inner();
    for round in 0..3 {
        // A large host name makes a large request (256 KiB), echoed back in the response.
        let host = "h".repeat(256 << 10);
        let request = ServerReflectionRequest {
            host: host.clone(),
            message_request: Some(MessageRequest::FileContainingSymbol(HEALTH.into())),
        };
        tx.send(request).await?;
        let answer = answers.message().await?.expect("an answer per request");
        let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
            panic!("round {round}: {:?}", answer.message_response);
        };
        assert!(!files.file_descriptor_proto.is_empty());
        assert_eq!(answer.valid_host.len(), host.len(), "round {round}");
    }
    drop(tx);
    assert!(
        answers.message().await?.is_none(),
        "the stream ends when the client's does"
    );
    Ok(())
}

/// The waypoint's own answers to a gRPC client are gRPC statuses a tonic client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waypoints_own_answers_are_grpc_statuses() -> anyhow::Result<()> {
    let block = 105;
    let h = Harness::start(block, &manifest(block)).await?;
    let _backend = grpc_backend(&h).await?;
    // No rule matches a service the route does not name: UNIMPLEMENTED.
    let mut grpc = tonic::client::Grpc::new(channel(&h, "sleep").await?);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/unknown.v1.Service/Call");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default();
    let request = tonic::Request::new(HealthCheckRequest::default());
    let missing = grpc
        .unary(request, path, codec)
        .await
        .expect_err("no route");
    assert_eq!(missing.code(), tonic::Code::Unimplemented, "{missing:?}");
    // A DENY policy: PERMISSION_DENIED, for this caller only.
    let mut denied = HealthClient::new(channel(&h, "intruder").await?);
    let refused = denied
        .check(HealthCheckRequest::default())
        .await
        .expect_err("denied");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().starts_with("RBAC: access denied"),
        "{refused:?}"
    );
    let mut allowed = HealthClient::new(channel(&h, "sleep").await?);
    let served = allowed.check(HealthCheckRequest::default()).await?;
    assert_eq!(served.into_inner().status, Wire::Serving as i32);
    Ok(())
}
