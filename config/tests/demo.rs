//! The shipped example loads and compiles to the mesh it describes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_config::{
    Action, ObjectRef, PolicyScope, StringMatch, TargetPort, WaypointFor, load_path,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn demo_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.yaml")
}

#[test]
fn demo_loads_nodes_and_workloads() {
    let snap = load_path(&demo_path()).unwrap_or_else(|e| panic!("demo.yaml invalid:\n{e}"));
    assert!(snap.warnings().is_empty(), "{:?}", snap.warnings());
    assert_eq!(snap.trust_domain(), "cluster.local");
    let nodes: Vec<_> = snap
        .nodes()
        .iter()
        .map(|n| (n.name.as_str(), n.address))
        .collect();
    assert_eq!(
        nodes,
        vec![("node-a", ip("127.0.1.1")), ("node-b", ip("127.0.2.1"))]
    );
    assert_eq!(snap.workloads().count(), 6);
    let on_a: Vec<_> = snap
        .workloads_on_node("node-a")
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(on_a, vec!["productpage-v1", "ratings-v1", "sleep"]);
    let r1 = snap.workload_by_ip(ip("127.0.2.10")).expect("reviews-v1");
    assert_eq!(r1.name, "reviews-v1");
    assert_eq!(
        r1.identity.to_string(),
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(r1.canonical_service, "reviews");
    assert_eq!(r1.canonical_revision, "v1");
    assert_eq!(
        r1.annotations.get("mesh.dev/echo").map(String::as_str),
        Some("true")
    );
    assert_eq!(r1.container_ports[0].port, 9080);
    // The namespace has no use-waypoint label: no pod is bound for workload traffic.
    assert!(snap.workloads().all(|w| w.waypoint.is_none()));
    let sleep = snap.workload_by_ip(ip("127.0.1.12")).expect("sleep");
    assert!(!sleep.annotations.contains_key("mesh.dev/echo"));
    assert_eq!(sleep.canonical_revision, "latest");
}

#[test]
fn demo_services_waypoint_and_endpoints() {
    let snap = load_path(&demo_path()).expect("valid");
    let reviews = snap
        .service_by_vip(ip("127.0.100.12"))
        .expect("reviews VIP");
    assert_eq!(reviews.hostname, "reviews.default.svc.cluster.local");
    assert_eq!(
        reviews.waypoint,
        Some(ObjectRef::new("default", "waypoint"))
    );
    let pp = snap.service("default", "productpage").expect("productpage");
    assert_eq!(pp.waypoint, None);
    let eps: Vec<_> = snap
        .endpoints(reviews, 9080)
        .iter()
        .map(|e| e.workload.name.clone())
        .collect();
    assert_eq!(eps, vec!["reviews-v1", "reviews-v2"]);
    let ratings = snap.service("default", "ratings").expect("ratings");
    assert_eq!(
        ratings.ports[0].target_port,
        TargetPort::Name("http".into())
    );
    assert_eq!(snap.endpoints(ratings, 9080)[0].port, 9080);
    let wp = snap
        .waypoint(&ObjectRef::new("default", "waypoint"))
        .expect("waypoint");
    assert_eq!(wp.waypoint_for, WaypointFor::Service);
    assert_eq!(
        wp.pods[0].identity.to_string(),
        "spiffe://cluster.local/ns/default/sa/waypoint"
    );
    assert_eq!(wp.pods.len(), 1);
    assert_eq!(
        snap.waypoint_by_ip(ip("127.0.2.20"))
            .map(|w| w.name.as_str()),
        Some("waypoint")
    );
    assert!(
        snap.services()
            .all(|s| s.vip.is_some_and(|v| v.is_loopback()))
    );
}

#[test]
fn demo_route_and_policy() {
    let snap = load_path(&demo_path()).expect("valid");
    let reviews = snap.service("default", "reviews").expect("reviews");
    let rules = snap.routes(reviews, 9080);
    assert_eq!(rules.len(), 3);
    // The redirect's and the rewrite's prefix matches are more specific than the split's
    // default one (the longer prefix first).
    let redirect = rules[0].filters.redirect.as_ref();
    assert_eq!(redirect.map(|r| r.status), Some(301));
    let api = &rules[1].filters;
    assert!(api.rewrite.is_some() && api.cors.is_some());
    assert_eq!(api.mirrors.len(), 1);
    let rule = &rules[2];
    let weights: Vec<_> = rule
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(weights, vec![("reviews-v1", 90), ("reviews-v2", 10)]);
    assert!(rule.backends.iter().all(|b| b.service.is_some()));
    let m = (rule.filters.request_headers.as_ref()).expect("a request header modifier");
    assert_eq!(
        m.set,
        vec![(
            http::HeaderName::from_static("x-mesh-route"),
            http::HeaderValue::from_static("reviews")
        )]
    );
    assert_eq!(rule.request_timeout, Some(Duration::from_secs(10)));
    let retry = rule.retry.as_ref().expect("the demo route retries");
    assert_eq!((retry.attempts, retry.codes.as_slice()), (2, &[503][..]));
    let ratings = snap.service("default", "ratings").expect("ratings");
    let traffic = snap
        .traffic_policy(ratings)
        .expect("ratings has a DestinationRule");
    assert_eq!(traffic.load_balancer, mesh_config::LoadBalancer::RoundRobin);
    assert!(traffic.outlier_detection.is_some());
    let wp = snap
        .waypoint(&ObjectRef::new("default", "waypoint"))
        .expect("waypoint");
    let policies = snap.waypoint_policies(&wp.object_ref(), Some(reviews));
    assert_eq!(policies.len(), 1);
    let p = &policies[0];
    assert_eq!(
        (p.name.as_str(), p.action),
        ("reviews-viewer", Action::Allow)
    );
    assert!(matches!(p.scope, PolicyScope::TargetRefs(_)));
    let principal = &p.rules[0].from[0].principals[0];
    assert_eq!(
        principal,
        &StringMatch::Exact("cluster.local/ns/default/sa/bookinfo-productpage".into())
    );
    assert_eq!(
        p.rules[0].to[0].methods,
        vec![StringMatch::Exact("GET".into())]
    );
    // targetRef policies are never L4 policies.
    let r1 = snap.workload_by_ip(ip("127.0.2.10")).expect("reviews-v1");
    assert!(snap.l4_policies(r1).is_empty());
}
