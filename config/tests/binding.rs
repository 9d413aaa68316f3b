//! Waypoint binding: Service/Pod label beats Namespace label, `none`, waypoint-for gating.

mod common;

use common::*;
use mesh_config::{ObjectRef, WaypointFor};
use serde_json::{Value, json};

fn fixture(ns_labels: Value, waypoint_for: Option<&str>) -> Vec<Value> {
    let mut objs = nodes();
    objs.push(namespace("default", ns_labels));
    objs.push(waypoint_gateway("default", "ns-wp", waypoint_for));
    objs.push(waypoint_pod("default", "ns-wp", "127.0.1.50"));
    objs.push(waypoint_gateway("default", "svc-wp", waypoint_for));
    objs.push(waypoint_pod("default", "svc-wp", "127.0.1.51"));
    objs.push(waypoint_gateway("infra", "shared", Some("all")));
    objs.push(waypoint_pod("infra", "shared", "127.0.1.52"));
    objs
}

fn labelled_service(name: &str, vip: &str, labels: Value) -> Value {
    let mut s = service("default", name, vip, json!({"app": name}));
    s["metadata"]["labels"] = labels;
    s
}

#[test]
fn service_label_beats_namespace_label() {
    let mut objs = fixture(json!({"istio.io/use-waypoint": "ns-wp"}), None);
    objs.push(labelled_service(
        "own",
        "127.0.100.1",
        json!({"istio.io/use-waypoint": "svc-wp"}),
    ));
    objs.push(labelled_service("inherits", "127.0.100.2", json!({})));
    objs.push(labelled_service(
        "opted-out",
        "127.0.100.3",
        json!({"istio.io/use-waypoint": "none"}),
    ));
    objs.push(labelled_service(
        "elsewhere",
        "127.0.100.4",
        json!({"istio.io/use-waypoint": "shared", "istio.io/use-waypoint-namespace": "infra"}),
    ));
    let snap = must_compile(&objs);
    let wp = |name: &str| snap.service("default", name).expect(name).waypoint.clone();
    assert_eq!(wp("own"), Some(ObjectRef::new("default", "svc-wp")));
    assert_eq!(wp("inherits"), Some(ObjectRef::new("default", "ns-wp")));
    assert_eq!(wp("opted-out"), None);
    assert_eq!(wp("elsewhere"), Some(ObjectRef::new("infra", "shared")));
}

#[test]
fn workload_bindings_need_workload_or_all() {
    // Default waypoint-for is `service`: the namespace label binds Services, not pods.
    let mut objs = fixture(json!({"istio.io/use-waypoint": "ns-wp"}), None);
    objs.push(pod(
        "default",
        "plain",
        "127.0.1.10",
        json!({"app": "plain"}),
    ));
    objs.push(labelled_service("svc", "127.0.100.1", json!({})));
    let snap = must_compile(&objs);
    let plain = snap.workloads().find(|w| w.name == "plain").expect("plain");
    assert_eq!(plain.waypoint, None);
    assert_eq!(
        snap.service("default", "svc").expect("svc").waypoint,
        Some(ObjectRef::new("default", "ns-wp"))
    );

    // waypoint-for: workload binds pods but no longer Services.
    let mut objs = fixture(json!({"istio.io/use-waypoint": "ns-wp"}), Some("workload"));
    objs.push(pod(
        "default",
        "plain",
        "127.0.1.10",
        json!({"app": "plain"}),
    ));
    objs.push(pod(
        "default",
        "opted-out",
        "127.0.1.11",
        json!({"istio.io/use-waypoint": "none"}),
    ));
    objs.push(labelled_service("svc", "127.0.100.1", json!({})));
    let snap = must_compile(&objs);
    let w = |name: &str| {
        snap.workloads()
            .find(|w| w.name == name)
            .expect(name)
            .waypoint
            .clone()
    };
    assert_eq!(w("plain"), Some(ObjectRef::new("default", "ns-wp")));
    assert_eq!(w("opted-out"), None);
    assert_eq!(snap.service("default", "svc").expect("svc").waypoint, None);
    let ns_wp = snap
        .waypoint(&ObjectRef::new("default", "ns-wp"))
        .expect("ns-wp");
    assert_eq!(ns_wp.waypoint_for, WaypointFor::Workload);
}

#[test]
fn waypoint_for_all_and_none() {
    let mut objs = fixture(json!({"istio.io/use-waypoint": "ns-wp"}), Some("all"));
    objs.push(pod("default", "p", "127.0.1.10", json!({})));
    objs.push(labelled_service("svc", "127.0.100.1", json!({})));
    let snap = must_compile(&objs);
    assert!(
        snap.workloads()
            .find(|w| w.name == "p")
            .expect("p")
            .waypoint
            .is_some()
    );
    assert!(
        snap.service("default", "svc")
            .expect("svc")
            .waypoint
            .is_some()
    );

    let mut objs = fixture(json!({"istio.io/use-waypoint": "ns-wp"}), Some("none"));
    objs.push(pod("default", "p", "127.0.1.10", json!({})));
    objs.push(labelled_service("svc", "127.0.100.1", json!({})));
    let snap = must_compile(&objs);
    assert!(
        snap.workloads()
            .find(|w| w.name == "p")
            .expect("p")
            .waypoint
            .is_none()
    );
    assert!(
        snap.service("default", "svc")
            .expect("svc")
            .waypoint
            .is_none()
    );
}

#[test]
fn waypoint_pods_never_get_a_waypoint() {
    let objs = fixture(json!({"istio.io/use-waypoint": "ns-wp"}), Some("all"));
    let snap = must_compile(&objs);
    let wp = snap
        .waypoint(&ObjectRef::new("default", "ns-wp"))
        .expect("ns-wp");
    assert_eq!(wp.pods.len(), 1);
    assert_eq!(wp.pods[0].waypoint, None);
    assert_eq!(
        wp.pods[0].identity.to_string(),
        "spiffe://cluster.local/ns/default/sa/ns-wp-0"
    );
    let by_ip = snap
        .waypoint_by_ip("127.0.1.50".parse().expect("ip"))
        .expect("by ip");
    assert_eq!(by_ip.name, "ns-wp");
    assert!(
        snap.workloads()
            .filter(|w| w.name.ends_with("-0"))
            .all(|w| w.waypoint.is_none())
    );
}

#[test]
fn non_waypoint_gateway_class_is_ignored_with_warning() {
    let mut gw = waypoint_gateway("default", "ingress", None);
    gw["spec"]["gatewayClassName"] = json!("nginx");
    let svc = labelled_service(
        "svc",
        "127.0.100.1",
        json!({"istio.io/use-waypoint": "ingress"}),
    );
    let snap = must_compile(&[gw, svc]);
    assert_eq!(snap.waypoints().count(), 0);
    assert_eq!(snap.service("default", "svc").expect("svc").waypoint, None);
    let text: Vec<String> = snap.warnings().iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|w| w.contains("Gateway default/ingress") && w.contains("nginx")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|w| w.contains("Service default/svc") && w.contains("not a waypoint")),
        "{text:?}"
    );
}
