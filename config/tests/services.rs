//! Endpoints (numeric and named targetPort) and hostname lookups.

mod common;

use common::*;
use mesh_config::TargetPort;
use serde_json::json;

#[test]
fn endpoints_resolve_numeric_and_named_target_ports() {
    let mut a = pod("default", "a", "127.0.1.10", json!({"app": "web"}));
    a["spec"]["containers"][0]["ports"] = json!([{"name": "web", "containerPort": 8080}]);
    let mut b = pod("default", "b", "127.0.1.11", json!({"app": "web"}));
    b["spec"]["containers"][0]["ports"] = json!([{"name": "web", "containerPort": 8081}]);
    // Same labels, other namespace: never an endpoint.
    let other = pod("other", "c", "127.0.1.12", json!({"app": "web"}));
    // No port named `web`: skipped for the named port, kept for the numeric one.
    let unnamed = pod("default", "d", "127.0.1.13", json!({"app": "web"}));
    let mut svc = service("default", "web", "127.0.100.1", json!({"app": "web"}));
    svc["spec"]["ports"] = json!([
        {"name": "named", "port": 80, "targetPort": "web"},
        {"name": "numeric", "port": 90, "targetPort": 7000},
        {"name": "default", "port": 100}
    ]);
    let mut objs = nodes();
    objs.extend([a, b, other, unnamed, svc]);
    let snap = must_compile(&objs);
    let svc = snap.service("default", "web").expect("svc");
    assert_eq!(svc.ports[0].target_port, TargetPort::Name("web".into()));
    assert_eq!(svc.ports[2].target_port, TargetPort::Number(100));
    let pairs = |port| {
        snap.endpoints(svc, port)
            .iter()
            .map(|e| (e.workload.name.clone(), e.port))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(80), vec![("a".into(), 8080), ("b".into(), 8081)]);
    assert_eq!(
        pairs(90),
        vec![("a".into(), 7000), ("b".into(), 7000), ("d".into(), 7000)]
    );
    assert_eq!(pairs(100).len(), 3);
    assert!(snap.endpoints(svc, 12345).is_empty());
}

#[test]
fn service_without_selector_has_no_endpoints() {
    let p = pod("default", "a", "127.0.1.10", json!({"app": "web"}));
    let svc = service("default", "manual", "127.0.100.1", json!({}));
    let mut objs = nodes();
    objs.extend([p, svc]);
    let snap = must_compile(&objs);
    let svc = snap.service("default", "manual").expect("svc");
    assert!(snap.endpoints(svc, 80).is_empty());
}

#[test]
fn service_by_host_forms() {
    let svc = service("shop", "cart", "127.0.100.1", json!({"app": "cart"}));
    let mut headless = service("shop", "headless", "None", json!({"app": "cart"}));
    headless["spec"]["clusterIP"] = json!("None");
    let snap = must_compile(&[svc, headless]);
    for host in [
        "cart.shop.svc.cluster.local",
        "cart.shop.svc",
        "cart.shop",
        "CART.Shop.svc.cluster.local.",
    ] {
        let found = snap
            .service_by_host(host)
            .unwrap_or_else(|| panic!("{host} not found"));
        assert_eq!(
            (found.namespace.as_str(), found.name.as_str()),
            ("shop", "cart")
        );
    }
    assert!(snap.service_by_host("cart").is_none());
    assert!(snap.service_by_host("cart.other").is_none());
    assert!(snap.service_by_host("cart.shop.svc.example.com").is_none());
    let headless = snap.service("shop", "headless").expect("headless");
    assert_eq!(headless.vip, None);
    assert_eq!(
        snap.service_by_vip("127.0.100.1".parse().expect("ip"))
            .map(|s| s.name.as_str()),
        Some("cart")
    );
}

#[test]
fn load_path_reads_a_directory_of_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a-nodes.yaml"), yaml(&nodes())).expect("write");
    let p = pod("default", "a", "127.0.1.10", json!({"app": "web"}));
    std::fs::write(dir.path().join("b-pods.yml"), yaml(&[p])).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not: [yaml").expect("write");
    let snap = mesh_config::load_path(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.nodes().len(), 2);
    assert_eq!(snap.workloads().count(), 1);
    let missing = mesh_config::load_path(&dir.path().join("nope.yaml")).expect_err("missing file");
    assert!(missing.to_string().contains("nope.yaml"), "{missing}");
}

/// `pod` made unready as a cluster reports it: its Ready condition False, or being deleted.
fn unready(mut pod: serde_json::Value, how: &str) -> serde_json::Value {
    match how {
        "terminating" => pod["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z"),
        "finished" => pod["status"]["phase"] = json!("Succeeded"),
        _ => pod["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]),
    }
    pod
}

/// As an EndpointSlice: a pod that is not ready, is being deleted or has finished is no
/// endpoint (unless the Service publishes not-ready addresses), yet stays a workload that
/// takes what still reaches it; a waypoint pod likewise stays the waypoint's but gets no new
/// connections.
#[test]
fn pods_that_are_not_ready_are_no_endpoints() {
    let web = json!({"app": "web"});
    let mut ready = pod("default", "ready", "127.0.1.10", web.clone());
    ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    let mut objs = nodes();
    objs.extend([
        ready,
        unready(
            pod("default", "starting", "127.0.1.11", web.clone()),
            "unready",
        ),
        unready(
            pod("default", "leaving", "127.0.1.12", web.clone()),
            "terminating",
        ),
        unready(
            pod("default", "done", "127.0.1.13", web.clone()),
            "finished",
        ),
        service("default", "web", "127.0.100.1", web.clone()),
        service("default", "all", "127.0.100.2", web.clone()),
        waypoint_gateway("default", "wp", None),
        waypoint_pod("default", "wp", "127.0.1.50"),
        unready(
            pod(
                "default",
                "wp-1",
                "127.0.1.51",
                json!({"gateway.networking.k8s.io/gateway-name": "wp"}),
            ),
            "terminating",
        ),
    ]);
    let publishing = objs.iter_mut().find(|o| o["metadata"]["name"] == "all");
    publishing.expect("all")["spec"]["publishNotReadyAddresses"] = json!(true);
    let snap = must_compile(&objs);

    let names = |service: &str| -> Vec<String> {
        let service = snap.service("default", service).expect("service");
        (snap.endpoints(service, 80).iter())
            .map(|e| e.workload.name.clone())
            .collect()
    };
    assert_eq!(names("web"), ["ready"]);
    assert_eq!(names("all"), ["done", "leaving", "ready", "starting"]);
    assert_eq!(
        snap.workloads()
            .filter(|w| w.namespace == "default")
            .count(),
        6
    );
    let wp = snap
        .waypoint(&mesh_config::ObjectRef::new("default", "wp"))
        .expect("wp");
    let pods = |pods: &[std::sync::Arc<mesh_config::Workload>]| -> Vec<String> {
        pods.iter().map(|w| w.name.clone()).collect()
    };
    assert_eq!(pods(&wp.pods), ["wp-0", "wp-1"]);
    assert_eq!(pods(&wp.ready_pods), ["wp-0"]);
}
