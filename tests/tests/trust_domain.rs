//! A mesh in a trust domain of its own (the mesh config's `trustDomain`), end to end: every
//! identity, certificate and policy is in it, and an edit that would change it while the
//! mesh serves is rejected, the mesh serving on.

use mesh::client::MeshClient;
use mesh_tests::{TestMesh, demo_yaml_in_block};

const BLOCK: u8 = 32;
const REVIEWS: &str = "reviews.default.svc.cluster.local";
const PRODUCTPAGE: &str = "1.10";
const SLEEP: &str = "1.12";

const MESH_CONFIG: &str = "---
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    trustDomain: example.org
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_in_its_own_trust_domain_serves_and_authorizes_in_it() -> anyhow::Result<()> {
    // The demo's policy names `cluster.local/ns/default/sa/bookinfo-productpage`: as in
    // Istio, `cluster.local` stands for the mesh's own trust domain.
    let demo = demo_yaml_in_block(BLOCK);
    let principal = "cluster.local/ns/default/sa/bookinfo-productpage";
    assert!(demo.contains(principal), "the demo's policy changed shape");
    let t = TestMesh::start_with(BLOCK, &format!("{demo}\n{MESH_CONFIG}")).await?;

    // HBONE both ways with certificates for example.org; the waypoint names both identities.
    let mut productpage = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    let seen = productpage.get("/debug").await?;
    assert_eq!(seen.status, 200);
    let json = seen.json()?;
    assert_eq!(
        json["headers"]["x-forwarded-client-cert"],
        "By=spiffe://example.org/ns/default/sa/waypoint;\
         URI=spiffe://example.org/ns/default/sa/bookinfo-productpage"
    );
    // The policy's principal read in example.org: productpage allowed, sleep denied.
    let mut sleep = MeshClient::connect(t.socks(SLEEP), REVIEWS, 9080).await?;
    assert_eq!(sleep.get("/reviews/1").await?.status, 403);
    assert_eq!(productpage.get("/reviews/1").await?.status, 200);

    // Back to the default trust domain while serving: rejected, the mesh serving on.
    let why = t.edit_rejected(&demo).await?;
    assert!(why.contains("trustDomain"), "{why}");
    assert_eq!(t.mesh.store.load().trust_domain(), "example.org");
    let mut again = MeshClient::connect(t.socks(PRODUCTPAGE), REVIEWS, 9080).await?;
    assert_eq!(again.get("/reviews/1").await?.status, 200);
    t.stop().await;
    Ok(())
}
