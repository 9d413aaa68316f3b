//! Gateway API routing through the whole local mesh (client pod → its ztunnel → waypoint →
//! the backend's ztunnel → the app): gRPC with real tonic clients against the echo apps' gRPC
//! services, GAMMA consumer routes from another namespace, and route edits that are invalid
//! rejected by name while the last good config keeps serving.

use anyhow::Context;
use mesh::client::{MeshClient, grpc_channel};
use mesh_tests::{TestMesh, demo_yaml_in_block};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const PRODUCTPAGE: &str = "1.10";
const SLEEP: &str = "1.12";

fn server_of<T>(response: &tonic::Response<T>) -> Option<&str> {
    let value = response.metadata().get("x-echo-server")?;
    value.to_str().ok()
}

/// The demo's GRPCRoute with its catch-all rule narrowed to reflection (a regex match), so a
/// call to any other service has no route.
fn grpc_yaml(block: u8) -> String {
    let catch_all = "    - backendRefs:
        - name: reviews-v2
          port: 9090";
    let reflection = "    - matches:
        - method:
            type: RegularExpression
            service: grpc\\.reflection\\..*
      backendRefs:
        - name: reviews-v2
          port: 9090";
    let yaml = demo_yaml_in_block(block);
    assert!(
        yaml.contains(catch_all),
        "the demo's GRPCRoute changed shape"
    );
    yaml.replacen(catch_all, reflection, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_of_every_kind_crosses_the_whole_mesh() -> anyhow::Result<()> {
    let block = 29;
    let t = TestMesh::start_with(block, &grpc_yaml(block)).await?;
    let channel = grpc_channel(t.socks(PRODUCTPAGE), REVIEWS, 9090).await?;

    // Unary, routed by service name to v1.
    let mut health = HealthClient::new(channel.clone());
    let checked = health.check(HealthCheckRequest::default()).await?;
    assert_eq!(server_of(&checked), Some("reviews-v1"));
    assert_eq!(checked.into_inner().status, ServingStatus::Serving as i32);
    // The server's own status, carried in trailers through both ztunnels and the waypoint.
    let unknown = HealthCheckRequest {
        service: "nope".into(),
    };
    let not_found = health.check(unknown).await.expect_err("unknown service");
    assert_eq!(not_found.code(), tonic::Code::NotFound, "{not_found:?}");
    // Server streaming: the first status arrives while the stream stays open.
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await?
        .into_inner();
    let first = watch.message().await?.map(|m| m.status);
    assert_eq!(first, Some(ServingStatus::Serving as i32));

    // Bidirectional streaming with large messages, routed by a regex to v2: each request is
    // answered in turn on the one stream, and the stream ends when the client's does.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let answers = reflection.server_reflection_info(requests).await?;
    assert_eq!(server_of(&answers), Some("reviews-v2"));
    let mut answers = answers.into_inner();
    for round in 0..3 {
        let host = format!("{round}").repeat(512 << 10);
        let list = MessageRequest::ListServices(String::new());
        tx.send(ServerReflectionRequest {
            host: host.clone(),
            message_request: Some(list),
        })
        .await?;
        let answer = answers.message().await?.expect("an answer per request");
        let ServerReflectionResponse {
            valid_host,
            message_response,
            ..
        } = answer;
        assert_eq!(
            valid_host, host,
            "round {round}: the 512 KiB message came back"
        );
        let Some(MessageResponse::ListServicesResponse(list)) = message_response else {
            panic!("round {round}: {message_response:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "grpc.health.v1.Health")
        );
    }
    drop(tx);
    assert!(answers.message().await?.is_none());

    // No rule for this service (the policy allows its path): the waypoint answers
    // UNIMPLEMENTED itself.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default();
    let path = http::uri::PathAndQuery::from_static("/grpc.unknown.v1.Service/Call");
    let call = grpc.unary(
        tonic::Request::new(HealthCheckRequest::default()),
        path,
        codec,
    );
    let unrouted = call.await.expect_err("no route");
    assert_eq!(unrouted.code(), tonic::Code::Unimplemented, "{unrouted:?}");
    assert!(unrouted.metadata().get("x-echo-server").is_none());

    // The AuthorizationPolicy allows productpage only: sleep gets PERMISSION_DENIED.
    let mut denied = HealthClient::new(grpc_channel(t.socks(SLEEP), REVIEWS, 9090).await?);
    let refused = denied.check(HealthCheckRequest::default()).await;
    let refused = refused.expect_err("sleep is not allowed");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    t.stop().await;
    Ok(())
}

/// A pod in namespace `shop`, its own Service account, allowed by the waypoint's policy, and a
/// consumer route in `shop` for the reviews Service of `default`: everything to v2, marked.
const SHOP: &str = "---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: shop-client
  namespace: shop
spec:
  nodeName: node-a
  serviceAccountName: shop-client
  containers:
    - name: client
      image: curl
status:
  podIP: 127.0.1.13
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: shop-may-call
  namespace: default
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: Gateway
      name: waypoint
  action: ALLOW
  rules:
    - from:
        - source:
            namespaces: [shop]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews-for-shop
  namespace: shop
spec:
  parentRefs:
    - group: \"\"
      kind: Service
      name: reviews
      namespace: default
      port: 9080
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set:
              - name: x-mesh-route
                value: shop
      backendRefs:
        - name: reviews-v2
          namespace: default
          port: 9080
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_routes_apply_to_their_namespace_only_through_the_whole_mesh() -> anyhow::Result<()>
{
    let block = 30;
    let yaml = format!("{}\n{}", demo_yaml_in_block(block), SHOP)
        .replace("127.0.1.13", &format!("127.{block}.1.13"));
    let t = TestMesh::start_with(block, &yaml).await?;
    let mut shop = MeshClient::connect(t.socks("1.13"), REVIEWS, 9080).await?;
    let mut productpage = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let (mut shop_servers, mut producer_servers) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let seen = shop.get("/debug").await?;
        assert_eq!(seen.status, 200);
        let seen = seen.json()?;
        assert_eq!(
            seen["headers"]["x-mesh-route"], "shop",
            "the consumer route's"
        );
        shop_servers.push(seen["server"].as_str().unwrap_or_default().to_string());
        let seen = productpage.get("/debug").await?.json()?;
        assert_eq!(
            seen["headers"]["x-mesh-route"], "reviews",
            "the producer route's"
        );
        producer_servers.push(seen["server"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        shop_servers.iter().all(|s| s == "reviews-v2"),
        "{shop_servers:?}"
    );
    // The producer route (90/10) still serves default's callers: v1 most of the time.
    let v1 = producer_servers
        .iter()
        .filter(|s| *s == "reviews-v1")
        .count();
    assert!(v1 >= 25, "{producer_servers:?}");
    // The producer route's other rules do not apply to shop: no redirect there.
    assert_eq!(shop.get("/old-reviews/1").await?.status, 200);
    assert_eq!(productpage.get("/old-reviews/1").await?.status, 301);
    t.stop().await;
    Ok(())
}

/// Each kind of invalid route edit is rejected with the file, object and field named, and the
/// mesh keeps serving the last good config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_route_edits_are_rejected_by_name_and_the_last_good_config_serves()
-> anyhow::Result<()> {
    let block = 31;
    let good = demo_yaml_in_block(block);
    let t = TestMesh::start_with(block, &good).await?;
    let redirect = "          requestRedirect:
            path:
              type: ReplacePrefixMatch
              replacePrefixMatch: /reviews";
    let mirror = "            backendRef:
              name: reviews-v2
              port: 9080
            percent: 10";
    let url_rewrite = "        - type: URLRewrite";
    let match_value = "            value: /old-reviews";
    let edits = [
        (
            "an invalid regex",
            good.replacen(
                "            type: PathPrefix\n            value: /api",
                "            type: RegularExpression\n            value: /api(",
                1,
            ),
            "spec.rules[1].matches[0].path.value",
        ),
        (
            "a redirect with both path kinds",
            good.replacen(
                redirect,
                &format!("{redirect}\n              replaceFullPath: /x"),
                1,
            ),
            "spec.rules[2].filters[0].requestRedirect.path",
        ),
        (
            "a mirror to a missing Service",
            good.replacen(mirror, &mirror.replace("reviews-v2", "nowhere"), 1),
            "spec.rules[1].filters[1].requestMirror.backendRef",
        ),
        (
            "an unknown filter",
            good.replacen(url_rewrite, "        - type: Teleport", 1),
            "spec.rules[1].filters[0].type",
        ),
    ];
    assert!(good.contains(match_value), "the demo route changed shape");
    for (what, yaml, field) in edits {
        assert_ne!(yaml, good, "{what}: the demo route changed shape");
        let message = t.edit_rejected(&yaml).await.context(what)?;
        let file = t.manifest.display().to_string();
        for part in [file.as_str(), "HTTPRoute default/reviews", field] {
            assert!(message.contains(part), "{what}: {part:?} not in {message}");
        }
        // The last good config still serves: its redirect and its rewrite.
        let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
        assert_eq!(client.get("/old-reviews/1").await?.status, 301, "{what}");
        let rewritten = client.get("/api/debug").await?;
        assert_eq!(rewritten.json()?["path"], "/debug", "{what}");
    }
    t.stop().await;
    Ok(())
}
