//! Policy scopes, L4 selection and waypoint attachment.

mod common;

use common::*;
use mesh_config::{Action, ConditionKey, ConditionValues, ObjectRef, PolicyScope, StringMatch};
use serde_json::json;

fn names(list: &[std::sync::Arc<mesh_config::AuthorizationPolicy>]) -> Vec<String> {
    list.iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn fixture() -> Vec<serde_json::Value> {
    let mut objs = waypoint_and_two_services();
    objs.push(pod("default", "web", "127.0.1.10", json!({"app": "web"})));
    objs.push(pod("default", "db", "127.0.1.11", json!({"app": "db"})));
    objs.push(pod("other", "web", "127.0.1.12", json!({"app": "web"})));
    objs.push(policy(
        "istio-system",
        "global",
        json!({"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["*"]}}]}]}),
    ));
    objs.push(policy(
        "istio-system",
        "root-selector",
        json!({"selector": {"matchLabels": {"app": "web"}}}),
    ));
    objs.push(policy("default", "ns-wide", json!({})));
    objs.push(policy(
        "default",
        "web-only",
        json!({"selector": {"matchLabels": {"app": "web"}}, "action": "AUDIT"}),
    ));
    objs.push(policy("default", "on-gateway", json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "wp"}]})));
    objs.push(policy(
        "default",
        "on-web-svc",
        json!({"targetRef": {"group": "", "kind": "Service", "name": "web"}}),
    ));
    objs.push(policy("istio-system", "on-class", json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "GatewayClass", "name": "istio-waypoint"}]})));
    objs.push(policy(
        "istio-system",
        "on-other-class",
        json!({"targetRefs": [{"kind": "GatewayClass", "name": "mesh-waypoint"}]}),
    ));
    objs
}

#[test]
fn scopes_are_derived_from_namespace_selector_and_targets() {
    let snap = must_compile(&fixture());
    let scope = |ns: &str, name: &str| {
        snap.policies()
            .find(|p| p.namespace == ns && p.name == name)
            .expect(name)
            .scope
            .clone()
    };
    assert_eq!(scope("istio-system", "global"), PolicyScope::Global);
    assert_eq!(scope("default", "ns-wide"), PolicyScope::Namespace);
    assert!(
        matches!(scope("default", "web-only"), PolicyScope::Selector(s) if s.get("app").map(String::as_str) == Some("web"))
    );
    let PolicyScope::TargetRefs(refs) = scope("default", "on-web-svc") else {
        panic!("targetRefs")
    };
    assert_eq!(
        (
            refs[0].group.as_str(),
            refs[0].kind.as_str(),
            refs[0].namespace.as_str()
        ),
        ("", "Service", "default")
    );
    let PolicyScope::TargetRefs(refs) = scope("istio-system", "on-other-class") else {
        panic!("targetRefs")
    };
    assert_eq!(refs[0].group, "gateway.networking.k8s.io");
    let global = snap
        .policies()
        .find(|p| p.name == "global")
        .expect("global");
    assert_eq!(global.action, Action::Deny);
    assert_eq!(
        global.rules[0].from[0].not_namespaces,
        vec![StringMatch::Presence]
    );
}

#[test]
fn l4_policies_select_by_namespace_and_labels() {
    let snap = must_compile(&fixture());
    let w = |ns: &str, name: &str| {
        snap.workloads()
            .find(|w| w.namespace == ns && w.name == name)
            .expect(name)
            .clone()
    };
    assert_eq!(
        names(&snap.l4_policies(&w("default", "web"))),
        vec![
            "default/ns-wide",
            "default/web-only",
            "istio-system/global",
            "istio-system/root-selector"
        ]
    );
    assert_eq!(
        names(&snap.l4_policies(&w("default", "db"))),
        vec!["default/ns-wide", "istio-system/global"]
    );
    // A selector policy in `default` never applies to pods of `other`; the root one does.
    assert_eq!(
        names(&snap.l4_policies(&w("other", "web"))),
        vec!["istio-system/global", "istio-system/root-selector"]
    );
    // A pod the snapshot no longer has (a connection outliving its pod's config) still gets
    // its policies, computed from what the caller knows of it.
    let mut gone = (*w("default", "web")).clone();
    gone.ip = "127.9.9.9".parse().expect("ip");
    gone.name = "web-old".into();
    assert!(matches!(
        snap.l4_policies(&gone),
        std::borrow::Cow::Owned(_)
    ));
    assert_eq!(
        names(&snap.l4_policies(&gone)),
        names(&snap.l4_policies(&w("default", "web")))
    );
    assert!(matches!(
        snap.l4_policies(&w("default", "db")),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn waypoint_policies_follow_target_refs() {
    let snap = must_compile(&fixture());
    let wp = snap
        .waypoint(&ObjectRef::new("default", "wp"))
        .expect("wp")
        .clone();
    let web = snap.service("default", "web").expect("web").clone();
    let db = snap.service("default", "db").expect("db").clone();
    assert_eq!(
        names(snap.waypoint_policies(&wp.object_ref(), Some(&web))),
        vec![
            "default/on-gateway",
            "default/on-web-svc",
            "istio-system/on-class"
        ]
    );
    assert_eq!(
        names(snap.waypoint_policies(&wp.object_ref(), Some(&db))),
        vec!["default/on-gateway", "istio-system/on-class"]
    );
    assert_eq!(
        names(snap.waypoint_policies(&wp.object_ref(), None)),
        vec!["default/on-gateway", "istio-system/on-class"]
    );
}

#[test]
fn policy_structure_errors() {
    let both = policy(
        "default",
        "both",
        json!({
        "selector": {"matchLabels": {"app": "web"}},
        "targetRefs": [{"kind": "Service", "name": "web"}]}),
    );
    let class_outside_root = policy(
        "default",
        "class",
        json!({"targetRefs": [{"kind": "GatewayClass", "name": "istio-waypoint"}]}),
    );
    let cross_ns = policy(
        "default",
        "cross",
        json!({"targetRefs": [{"kind": "Service", "name": "web", "namespace": "other"}]}),
    );
    let bad_kind = policy(
        "default",
        "kind",
        json!({"targetRefs": [{"group": "apps", "kind": "Deployment", "name": "web"}]}),
    );
    let custom = policy("default", "custom", json!({"action": "CUSTOM"}));
    let errors = must_fail(&[both, class_outside_root, cross_ns, bad_kind, custom]);
    assert_eq!(errors.len(), 5, "{errors}");
    assert_error(
        &errors,
        &[
            "AuthorizationPolicy default/both",
            "spec.selector",
            "mutually exclusive",
        ],
    );
    assert_error(
        &errors,
        &[
            "AuthorizationPolicy default/class",
            "spec.targetRefs[0].kind",
            "root namespace",
        ],
    );
    assert_error(
        &errors,
        &[
            "AuthorizationPolicy default/cross",
            "spec.targetRefs[0].namespace",
        ],
    );
    assert_error(
        &errors,
        &[
            "AuthorizationPolicy default/kind",
            "spec.targetRefs[0].kind",
            "Deployment",
        ],
    );
    assert_error(
        &errors,
        &["AuthorizationPolicy default/custom", "spec.provider"],
    );
}

#[test]
fn ports_and_cidrs_compile() {
    let p = policy(
        "default",
        "p",
        json!({"rules": [{
            "from": [{"source": {"ipBlocks": ["10.0.0.0/8", "127.0.0.1"], "principals": ["cluster.local/ns/a/*"]}}],
            "to": [{"operation": {"ports": ["9080", 8080], "paths": ["/api/*"]}}],
            "when": [{"key": "destination.port", "values": ["9080"]}, {"key": "request.headers[x-user]", "notValues": ["bob"]}]
        }]}),
    );
    let snap = must_compile(&[p]);
    let rule = &snap.policies().next().expect("policy").rules[0];
    let blocks: Vec<String> = rule.from[0]
        .ip_blocks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(blocks, vec!["10.0.0.0/8", "127.0.0.1/32"]);
    assert_eq!(
        rule.from[0].principals,
        vec![StringMatch::Prefix("cluster.local/ns/a/".into())]
    );
    assert_eq!(rule.to[0].ports, vec![9080, 8080]);
    assert_eq!(rule.to[0].paths, vec![StringMatch::Prefix("/api/".into())]);
    assert_eq!(rule.when[0].key, ConditionKey::DestinationPort);
    assert_eq!(rule.when[0].values, ConditionValues::Ports(vec![9080]));
    assert_eq!(
        rule.when[1].key,
        ConditionKey::RequestHeader(http::HeaderName::from_static("x-user"))
    );
    assert_eq!(
        rule.when[1].not_values,
        ConditionValues::Strings(vec![StringMatch::Exact("bob".into())])
    );
}

/// A CUSTOM policy naming a provider the mesh config does not have is kept (it denies what
/// it matches, fail closed) and warns, naming the provider.
#[test]
fn custom_policies_without_their_provider_warn_that_they_fail_closed() {
    let mut objs = fixture();
    objs.push(policy(
        "default",
        "ext",
        json!({"action": "CUSTOM", "provider": {"name": "opa"},
               "targetRefs": [{"kind": "Service", "group": "", "name": "web"}],
               "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
    ));
    let snap = must_compile(&objs);
    let warning = (snap.warnings().iter())
        .find(|w| w.object == "AuthorizationPolicy default/ext")
        .expect("a warning");
    assert_eq!(warning.field, "spec.provider.name");
    assert!(warning.message.contains("\"opa\""), "{}", warning.message);
    assert!(
        warning.message.contains("fail closed"),
        "{}",
        warning.message
    );
    let web = snap.service("default", "web").expect("web");
    let wp = ObjectRef::new("default", "wp");
    let custom = (snap.waypoint_policies(&wp, Some(web)).iter()).find(|p| p.name == "ext");
    assert_eq!(custom.expect("kept").action, Action::Custom);
}
