//! Config edited on disk while the whole local mesh serves: routes, policies, pods and
//! Services change under traffic, and connections opened under an old config neither keep it
//! alive nor outlive what it allowed.

use std::time::Duration;

use mesh::client::MeshClient;
use mesh_tests::{TestMesh, demo_yaml_in_block};

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";
// Pod addresses inside a block (see examples/demo.yaml).
const PRODUCTPAGE: &str = "1.10";
const SLEEP: &str = "1.12";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_edited_on_disk_while_requests_flow() -> anyhow::Result<()> {
    let t = TestMesh::start(15).await?;
    let original = demo_yaml_in_block(15);
    // All traffic to v2 instead of the 90/10 split.
    let edited = original
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    assert_ne!(original, edited, "the demo route's weights changed shape");
    let socks = t.socks(PRODUCTPAGE);
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_swap = swapped.clone();
    let load = tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        let mut client = MeshClient::connect(socks, REVIEWS, 9080).await?;
        // (sent after the swap?, server) for every request; bounded in count.
        let mut served = Vec::new();
        let mut after_swap = 0;
        while after_swap < 100 && served.len() < 5000 {
            let after = seen_swap.load(Ordering::SeqCst);
            let response = client.get("/reviews/1").await?;
            anyhow::ensure!(
                response.status == 200,
                "a request failed during the reload: {}",
                response.status
            );
            served.push((
                after,
                response
                    .header("x-echo-server")
                    .unwrap_or_default()
                    .to_string(),
            ));
            after_swap += usize::from(after);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(served)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.edit(&edited).await?;
    swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = load.await??;
    let before = served.iter().filter(|(after, _)| !after).count();
    assert!(
        before > 10,
        "the edit landed before traffic flowed ({before} requests before)"
    );
    let after: Vec<_> = served
        .iter()
        .filter(|(after, _)| *after)
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(after.len(), 100);
    assert!(
        after.iter().all(|s| *s == "reviews-v2"),
        "after the swap: {after:?}"
    );

    // An invalid edit is rejected and the last good config keeps serving.
    t.edit_rejected(&edited.replace("weight: 100", "weight: -5"))
        .await?;
    let mut client = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let response = client.get("/reviews/1").await?;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-echo-server"), Some("reviews-v2"));
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_update_closes_connections_it_now_denies() -> anyhow::Result<()> {
    let t = TestMesh::start(18).await?;
    let mut sleep = MeshClient::connect(t.socks(SLEEP), RATINGS, 9080).await?;
    let mut productpage = MeshClient::connect(t.socks(PRODUCTPAGE), RATINGS, 9080).await?;
    assert_eq!(sleep.get("/").await?.status, 200);
    assert_eq!(productpage.get("/").await?.status, 200);
    let deny_sleep = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-sleep, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
"#;
    t.edit(&format!("{}{deny_sleep}", demo_yaml_in_block(18)))
        .await?;
    // The open connection from sleep is closed by ztunnel; productpage's is untouched.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if sleep.get("/").await.is_err() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "denied connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(productpage.get("/").await?.status, 200);
    // And a new connection from sleep is refused at L4.
    assert!(
        MeshClient::connect(t.socks(SLEEP), RATINGS, 9080)
            .await
            .is_err()
    );
    let ready = mesh_tests::http_get(t.addr("1.1", 15021), "/healthz/ready").await?;
    assert!(ready.contains("ready"), "node readiness: {ready}");
    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_services_added_on_disk_start_serving() -> anyhow::Result<()> {
    let t = TestMesh::start(19).await?;
    let details = r#"
---
apiVersion: v1
kind: Pod
metadata:
  name: details-v1
  namespace: default
  labels: {app: details}
  annotations: {mesh.dev/echo: "true"}
spec:
  nodeName: node-b
  serviceAccountName: bookinfo-details
  containers: [{name: details, image: echo, ports: [{containerPort: 9080}]}]
status: {podIP: 127.19.2.30}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  clusterIP: 127.19.100.30
  selector: {app: details}
  ports: [{name: http, port: 9080, targetPort: 9080}]
"#;
    t.edit(&format!("{}{details}", demo_yaml_in_block(19)))
        .await?;
    // The new echo app and the ztunnel listeners for the new pod come up shortly after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let response = loop {
        let attempt = async {
            let mut client =
                MeshClient::connect(t.socks(SLEEP), "details.default.svc.cluster.local", 9080)
                    .await?;
            client.get("/debug").await
        };
        match attempt.await {
            Ok(response) => break response,
            Err(e) => {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "details never served: {e:#}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(response.status, 200);
    assert_eq!(response.json()?["server"], "details-v1");
    t.stop().await;
    Ok(())
}

/// An open connection does not keep the config it started under: after an edit, the old
/// snapshot is freed while the connection (L4, and through the waypoint) goes on. Before, each
/// connection held its snapshot for its whole life, so long-lived connections across config
/// changes kept every old config in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_do_not_keep_old_configs_alive() -> anyhow::Result<()> {
    let yaml = demo_yaml_in_block(27);
    let t = TestMesh::start_with(27, &yaml).await?;
    let mut l4 = MeshClient::connect(t.socks(SLEEP), RATINGS, 9080).await?;
    let mut l7 = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    assert_eq!(l4.get("/ratings/1").await?.status, 200);
    assert_eq!(l7.get("/reviews/1").await?.status, 200);
    let old = std::sync::Arc::downgrade(&t.mesh.store.load());
    t.edit(&format!("{yaml}\n# edited\n")).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while old.upgrade().is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the old config is still held ({} references)",
            old.strong_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        l4.get("/ratings/1").await?.status,
        200,
        "the L4 connection lives on"
    );
    assert_eq!(
        l7.get("/reviews/1").await?.status,
        200,
        "so does the waypoint's"
    );
    t.stop().await;
    Ok(())
}
