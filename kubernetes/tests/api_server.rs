//! The Kubernetes source against a scripted API server that speaks the real list/watch HTTP
//! protocol (`mesh_kubernetes::testing`) to an unmodified kube-rs client.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_config::Store;
use mesh_config::fixtures;
use mesh_kubernetes::KubeSource;
use mesh_kubernetes::testing::{FakeApi, serve};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A small cluster: two nodes, a pod behind a Service, a waypoint.
fn cluster(api: &FakeApi) {
    for obj in fixtures::nodes() {
        api.put(obj);
    }
    api.put(fixtures::namespace("default", json!({})));
    api.put(fixtures::pod(
        "default",
        "app-0",
        "10.0.0.10",
        json!({"app": "web"}),
    ));
    api.put(fixtures::service(
        "default",
        "web",
        "10.96.0.10",
        json!({"app": "web"}),
    ));
    api.put(fixtures::waypoint_gateway("default", "waypoint", None));
    api.put(fixtures::waypoint_pod("default", "waypoint", "10.0.0.20"));
}

fn route(name: &str, path: &str) -> Value {
    let parent = json!([{"group": "", "kind": "Service", "name": "web", "port": 80}]);
    let rules = json!([{"matches": [{"path": {"type": "RegularExpression", "value": path}}],
                        "backendRefs": [{"name": "web", "port": 80}]}]);
    fixtures::http_route("default", name, parent, rules)
}

async fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

/// The route names the snapshot serves on web:80.
fn routes(store: &Store) -> Vec<String> {
    let snapshot = store.load();
    let Some(web) = snapshot.service("default", "web") else {
        return Vec::new();
    };
    let names = snapshot
        .routes(web, 80)
        .iter()
        .map(|r| r.route.name.clone());
    let mut names: Vec<String> = names.collect();
    names.dedup();
    names
}

/// Waits (bounded) until the store serves `want`.
async fn until_routes(store: &Store, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while routes(store) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {want:?}, serving {:?}",
            routes(store)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_from_the_api_become_the_snapshot_and_follow_every_change() {
    let api = FakeApi::default();
    cluster(&api);
    api.put(route("first", "/a.*"));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let addr = serve(api.clone(), stop.clone()).await;
    let store = KubeSource::new(client(addr).await)
        .start(stop.clone())
        .await
        .expect("the first config");
    let snapshot = store.load();
    assert_eq!(snapshot.nodes().len(), 2);
    assert_eq!(snapshot.workloads().count(), 2);
    assert!(
        snapshot
            .waypoint(&mesh_config::ObjectRef::new("default", "waypoint"))
            .is_some()
    );
    until_routes(&store, &["first"]).await;

    // Added, modified, deleted: each arrives by the watch.
    api.put(route("second", "/b.*"));
    until_routes(&store, &["first", "second"]).await;
    api.delete("httproutes", "default", "first");
    until_routes(&store, &["second"]).await;

    // An invalid object is left out; the rest keeps updating.
    api.put(route("broken", "(("));
    api.put(route("third", "/c.*"));
    until_routes(&store, &["second", "third"]).await;

    // 410 Gone: the watcher lists again, and finds what changed meanwhile.
    api.put_with(route("while-away", "/d.*"), true);
    api.expire_watches("httproutes");
    until_routes(&store, &["second", "third", "while-away"]).await;

    // A watch that sends garbage is retried (after kube-runtime's backoff); nothing is lost.
    api.put_with(route("after-garbage", "/e.*"), true);
    api.garble_watches("httproutes");
    until_routes(&store, &["after-garbage", "second", "third", "while-away"]).await;
}

/// A waypoint may watch its own namespace only: namespaced kinds elsewhere are not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_source_reads_one_namespace() {
    let api = FakeApi::default();
    cluster(&api);
    api.put(fixtures::namespace("other", json!({})));
    api.put(fixtures::service(
        "other",
        "elsewhere",
        "10.96.0.11",
        json!({"app": "x"}),
    ));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let addr = serve(api.clone(), stop.clone()).await;
    let store = KubeSource::new(client(addr).await)
        .namespaced("default")
        .start(stop.clone())
        .await
        .expect("the first config");
    let snapshot = store.load();
    assert!(snapshot.service("default", "web").is_some());
    assert!(snapshot.service("other", "elsewhere").is_none());
    assert_eq!(
        snapshot.nodes().len(),
        2,
        "cluster-scoped kinds are read whole"
    );
}

/// A cluster without Istio's CRDs: their kinds are read as empty and the config starts; once
/// a CRD is installed, its objects arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_the_cluster_does_not_serve_are_read_as_empty() {
    let api = FakeApi::default();
    cluster(&api);
    api.stop_serving("authorizationpolicies");
    api.stop_serving("destinationrules");
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let addr = serve(api.clone(), stop.clone()).await;
    let started = KubeSource::new(client(addr).await).start(stop.clone());
    let store = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("the config does not wait for kinds that are not served")
        .expect("the first config");
    assert!(store.load().service("default", "web").is_some());
    assert_eq!(routes(&store), Vec::<String>::new());
    assert_eq!(store.load().policies().count(), 0);
    api.serve_again("authorizationpolicies");
    let deny = fixtures::policy(
        "default",
        "deny-all",
        json!({"action": "DENY",
        "targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
        "rules": [{}]}),
    );
    api.put(deny);
    // Found by the listing that goes on (kube-runtime's backoff paces it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.load().policies().count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new kind never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mesh config (ext_authz providers) comes from its one ConfigMap, watched alone: other
/// ConfigMaps are never read, and the providers follow the ConfigMap's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_config_comes_from_its_config_map_alone() {
    let api = FakeApi::default();
    cluster(&api);
    let mesh_config = |namespace: &str, name: &str, provider: &str| {
        let mesh = format!(
            "extensionProviders:\n- name: {provider}\n  envoyExtAuthzGrpc: \
             {{service: web.default.svc.cluster.local, port: 80}}\n"
        );
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": namespace}, "data": {"mesh": mesh}})
    };
    api.put(mesh_config("istio-system", "istio", "opa"));
    // Were these read, each would warn that it has no effect.
    api.put(mesh_config("istio-system", "other", "no"));
    api.put(mesh_config("default", "istio", "no"));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let addr = serve(api.clone(), stop.clone()).await;
    let store = KubeSource::new(client(addr).await)
        .start(stop.clone())
        .await
        .expect("the first config");
    let snapshot = store.load();
    assert!(snapshot.ext_authz_provider("opa").is_some());
    let warned: Vec<&str> = (snapshot.warnings().iter())
        .map(|w| w.object.as_str())
        .filter(|o| o.starts_with("ConfigMap"))
        .collect();
    assert!(warned.is_empty(), "other ConfigMaps were read: {warned:?}");

    api.put(mesh_config("istio-system", "istio", "opa-v2"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.load().ext_authz_provider("opa-v2").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.load().ext_authz_provider("opa").is_none());
}
