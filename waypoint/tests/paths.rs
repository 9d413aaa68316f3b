//! Request paths as policies see them: normalized first, as Istio does by default (so a path
//! written around a rule cannot slip past it), and matched by Istio's path templates.

mod common;

use common::{Harness, manifest};
use mesh_config::fixtures::policy;
use serde_json::json;

const SLEEP: &str = "sleep";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_see_the_normalized_path_and_match_its_templates() -> anyhow::Result<()> {
    let deny = policy(
        "default",
        "deny-private",
        json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
            "action": "DENY",
            "rules": [{"to": [{"operation": {"paths": ["/admin*", "/accounts/{*}/secret", "/private/{**}"]}}]}]
        }),
    );
    let h = Harness::start(113, &manifest(113, &[deny])).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut caller = h.http1(SLEEP).await?;
    let mut status =
        async |path: &str| -> anyhow::Result<u16> { Ok(caller.get(path).await?.status) };
    for (path, want) in [
        ("/admin", 403),
        // Around the rule, and normalized back onto it.
        ("/public/../admin", 403),
        ("/./admin/x", 403),
        ("/%61dmin", 403),
        ("/public/%2e%2e/admin", 403),
        // Templates: one whole segment for {*}, anything after the slash for {**}.
        ("/accounts/42/secret", 403),
        ("/accounts/42/7/secret", 200),
        ("/accounts//secret", 200),
        ("/accounts/42/secret/x", 200),
        ("/private/", 403),
        ("/private/a/b", 403),
        ("/private", 200),
        ("/public/x", 200),
    ] {
        assert_eq!(status(path).await?, want, "{path}");
    }
    // The backend gets the normalized path.
    let seen = caller.get("/public/../debug").await?;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.body.ends_with(" GET /debug"), "{}", seen.body);
    Ok(())
}
