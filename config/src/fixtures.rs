//! Manifest builders for tests, in this crate and the others: each returns one Kubernetes
//! object as JSON (YAML is a superset of JSON), so a test states the objects it needs instead of
//! editing a shared manifest by string replacement. [`yaml`] joins them into one file's text.
//! [`compiled_service`] is a compiled Service, for tests of what reads one.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::Service;

/// Service `namespace/name` as the compile makes it, with no VIP, ports or selector.
pub fn compiled_service(namespace: &str, name: &str) -> Arc<Service> {
    Arc::new(Service {
        name: name.into(),
        namespace: namespace.into(),
        hostname: format!("{name}.{namespace}.svc.cluster.local"),
        vip: None,
        ports: Vec::new(),
        labels: Default::default(),
        selector: Default::default(),
        waypoint: None,
        publish_not_ready: false,
    })
}

/// Joins objects into one multi-document YAML text.
pub fn yaml(objs: &[Value]) -> String {
    objs.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

pub fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A pod in `ns` on `node-a` with one container port 9080 named `http`.
pub fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"nodeName": "node-a", "serviceAccountName": name,
                    "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 9080}]}]},
           "status": {"podIP": ip}})
}

pub fn service(ns: &str, name: &str, vip: &str, selector: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": vip, "selector": selector,
                    "ports": [{"name": "http", "port": 80, "targetPort": 9080}]}})
}

pub fn waypoint_gateway(ns: &str, name: &str, waypoint_for: Option<&str>) -> Value {
    let mut gw = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"gatewayClassName": "istio-waypoint",
                    "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}});
    if let Some(f) = waypoint_for {
        gw["metadata"]["labels"] = json!({"istio.io/waypoint-for": f});
    }
    gw
}

pub fn waypoint_pod(ns: &str, gateway: &str, ip: &str) -> Value {
    pod(
        ns,
        &format!("{gateway}-0"),
        ip,
        json!({"gateway.networking.k8s.io/gateway-name": gateway}),
    )
}

pub fn http_route(ns: &str, name: &str, parent_refs: Value, rules: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"parentRefs": parent_refs, "rules": rules}})
}

pub fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// A RequestAuthentication `ns/name` with `spec`.
pub fn request_authentication(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// The two nodes every fixture needs.
pub fn nodes() -> Vec<Value> {
    vec![node("node-a", "127.0.1.1"), node("node-b", "127.0.2.1")]
}
