//! Every validation error names file, object and field; all errors of a load are reported.

mod common;

use std::path::PathBuf;

use common::*;
use mesh_config::compile;
use serde_json::json;

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let text = "apiVersion: v1\nkind: Node\nmetadata:\n  name: [unclosed\n";
    let errors = compile(vec![(PathBuf::from("broken.yaml"), text.into())]).expect_err("invalid");
    assert_eq!(errors.len(), 1);
    let line = errors.to_string();
    assert!(line.starts_with("broken.yaml: document 1: line "), "{line}");
    assert!(line.contains("YAML syntax error"), "{line}");
}

#[test]
fn syntax_error_in_one_file_does_not_hide_errors_in_another() {
    let bad = (PathBuf::from("a.yaml"), "key: [".to_string());
    let other = (
        PathBuf::from("b.yaml"),
        yaml(&[json!({"apiVersion": "v9", "kind": "Thing", "metadata": {"name": "x"}})]),
    );
    let errors = compile(vec![bad, other]).expect_err("invalid");
    assert_eq!(errors.len(), 2, "{errors}");
    assert_error(&errors, &["a.yaml", "YAML syntax error"]);
    assert_error(
        &errors,
        &["b.yaml", "document 1", "kind", "unknown apiVersion/kind"],
    );
}

#[test]
fn type_errors_carry_the_field_path() {
    let mut p = pod("default", "a", "127.0.1.10", json!({}));
    p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("not-a-number");
    let mut objs = nodes();
    objs.push(p);
    let errors = must_fail(&objs);
    assert_error(
        &errors,
        &[
            "test.yaml",
            "Pod default/a",
            "spec.containers[0].ports[0].containerPort",
        ],
    );
}

#[test]
fn pod_errors_are_all_reported() {
    let mut no_ip = pod("default", "no-ip", "", json!({}));
    no_ip["status"] = json!({});
    let bad_ip = pod("default", "bad-ip", "127.0.1.999", json!({}));
    let dup = pod("default", "dup", "127.0.1.10", json!({}));
    let first = pod("default", "first", "127.0.1.10", json!({}));
    let mut lost = pod("default", "lost", "127.0.1.11", json!({}));
    lost["spec"]["nodeName"] = json!("node-z");
    let mut bad_port = pod("default", "bad-port", "127.0.1.12", json!({}));
    bad_port["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(70000);
    let bad_label = pod(
        "default",
        "bad-label",
        "127.0.1.13",
        json!({"istio.io/use-waypoint": "Not_A_Name"}),
    );
    let mut objs = nodes();
    objs.extend([first, no_ip, bad_ip, dup, lost, bad_port, bad_label]);
    let errors = must_fail(&objs);
    assert_eq!(errors.len(), 6, "{errors}");
    assert_error(
        &errors,
        &["test.yaml", "Pod default/no-ip", "status.podIP", "required"],
    );
    assert_error(
        &errors,
        &["Pod default/bad-ip", "status.podIP", "invalid IP"],
    );
    assert_error(
        &errors,
        &[
            "Pod default/dup",
            "status.podIP",
            "duplicate pod IP 127.0.1.10",
            "Pod default/first",
        ],
    );
    assert_error(&errors, &["Pod default/lost", "spec.nodeName", "node-z"]);
    assert_error(
        &errors,
        &[
            "Pod default/bad-port",
            "spec.containers[0].ports[0].containerPort",
            "70000",
        ],
    );
    assert_error(
        &errors,
        &[
            "Pod default/bad-label",
            "metadata.labels[istio.io/use-waypoint]",
        ],
    );
}

#[test]
fn service_and_gateway_errors() {
    let bad_vip = service("default", "bad-vip", "10.0.0", json!({"app": "x"}));
    let mut bad_port = service("default", "bad-port", "127.0.100.2", json!({"app": "x"}));
    bad_port["spec"]["ports"][0]["port"] = json!(0);
    let mut bad_target = service("default", "bad-target", "127.0.100.3", json!({"app": "x"}));
    bad_target["spec"]["ports"][0]["targetPort"] = json!(-1);
    let bad_selector = service(
        "default",
        "bad-selector",
        "127.0.100.4",
        json!({"app": "-x-"}),
    );
    let dup_vip = service("default", "dup-vip", "127.0.100.4", json!({"app": "y"}));
    let mut gw = waypoint_gateway("default", "wp", Some("everything"));
    gw["spec"]["listeners"][0]["port"] = json!(99999);
    let mut objs = nodes();
    objs.extend([bad_vip, bad_port, bad_target, bad_selector, gw, dup_vip]);
    let errors = must_fail(&objs);
    assert_eq!(errors.len(), 6, "{errors}");
    assert_error(
        &errors,
        &["Service default/bad-vip", "spec.clusterIP", "\"10.0.0\""],
    );
    assert_error(&errors, &["Service default/bad-port", "spec.ports[0].port"]);
    assert_error(
        &errors,
        &["Service default/bad-target", "spec.ports[0].targetPort"],
    );
    assert_error(
        &errors,
        &["Service default/bad-selector", "spec.selector[app]"],
    );
    assert_error(
        &errors,
        &[
            "Gateway default/wp",
            "metadata.labels[istio.io/waypoint-for]",
            "everything",
        ],
    );
    assert_error(&errors, &["Gateway default/wp", "spec.listeners[0].port"]);
}

#[test]
fn duplicate_vip_is_an_error() {
    let a = service("default", "a", "127.0.100.1", json!({"app": "a"}));
    let b = service("default", "b", "127.0.100.1", json!({"app": "b"}));
    let errors = must_fail(&[a, b]);
    assert_error(
        &errors,
        &["Service default/b", "spec.clusterIP", "Service default/a"],
    );
}

#[test]
fn duplicate_names_per_kind_and_namespace() {
    let a = service("default", "same", "127.0.100.1", json!({"app": "a"}));
    let b = service("default", "same", "127.0.100.2", json!({"app": "a"}));
    let other_ns = service("other", "same", "127.0.100.3", json!({"app": "a"}));
    let errors = compile(vec![
        (PathBuf::from("one.yaml"), yaml(&[a, other_ns])),
        (PathBuf::from("two.yaml"), yaml(&[b])),
    ])
    .expect_err("duplicate");
    assert_eq!(errors.len(), 1, "{errors}");
    assert_error(
        &errors,
        &[
            "two.yaml",
            "Service default/same",
            "metadata.name",
            "duplicate",
            "one.yaml",
        ],
    );
}

#[test]
fn route_errors_are_all_reported() {
    let parent = json!([{"group": "", "kind": "Service", "name": "svc"}]);
    let rules = json!([
        {"matches": [{"path": {"type": "PathPrefix", "value": "/ok"}},
                     {"path": {"type": "RegularExpression", "value": "(unclosed"}}],
         "backendRefs": [{"name": "svc", "port": 80, "weight": -1}]},
        {"matches": [{"headers": [{"name": "x", "type": "RegularExpression", "value": "[z-a]"}]}],
         "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "gone", "port": 80}}}],
         "backendRefs": [{"name": "svc", "port": 80, "weight": 1_000_001}],
         "timeouts": {"request": "soon"}},
        {"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "not a host"}}],
         "backendRefs": [{"name": "svc", "port": 0}]}
    ]);
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let errors = must_fail(&[svc, http_route("default", "r", parent, rules)]);
    assert_eq!(errors.len(), 8, "{errors}");
    assert_eq!(errors.to_string().lines().count(), 8, "one line per error");
    let obj = "HTTPRoute default/r";
    assert_error(
        &errors,
        &[obj, "spec.rules[0].matches[1].path.value", "invalid regex"],
    );
    assert_error(&errors, &[obj, "spec.rules[0].backendRefs[0].weight", "-1"]);
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[1].matches[0].headers[0].value",
            "invalid regex",
        ],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[1].filters[0].requestMirror.backendRef.name",
            "Service default/gone does not exist",
        ],
    );
    assert_error(
        &errors,
        &[obj, "spec.rules[1].backendRefs[0].weight", "1000001"],
    );
    assert_error(
        &errors,
        &[obj, "spec.rules[1].timeouts.request", "invalid duration"],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[2].filters[0].urlRewrite.hostname",
            "\"not a host\" is not a valid hostname",
        ],
    );
    assert_error(
        &errors,
        &[obj, "spec.rules[2].backendRefs[0].port", "invalid port 0"],
    );
}

#[test]
fn header_modifiers_are_parsed_when_compiled() {
    let parent = json!([{"group": "", "kind": "Service", "name": "svc"}]);
    let rules = json!([{
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "x-ok", "value": "line\nbreak"}],
            "add": [{"name": "bad name", "value": "v"}],
            "remove": ["x-fine", "bad:name"]}}],
        "backendRefs": [{"name": "svc", "port": 80}]
    }]);
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let errors = must_fail(&[svc, http_route("default", "r", parent, rules)]);
    assert_eq!(errors.len(), 3, "{errors}");
    let field = "spec.rules[0].filters[0].requestHeaderModifier";
    let obj = "HTTPRoute default/r";
    assert_error(
        &errors,
        &[
            obj,
            &format!("{field}.set[0].value"),
            "invalid header value",
        ],
    );
    assert_error(
        &errors,
        &[
            obj,
            &format!("{field}.add[0].name"),
            "invalid header name \"bad name\"",
        ],
    );
    assert_error(
        &errors,
        &[
            obj,
            &format!("{field}.remove[1]"),
            "invalid header name \"bad:name\"",
        ],
    );
}

#[test]
fn route_backend_port_is_validated() {
    let parent = json!([{"group": "", "kind": "Service", "name": "svc"}]);
    let rules = json!([{"backendRefs": [{"name": "svc", "port": 0}, {"name": "svc"}]}]);
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let errors = must_fail(&[svc, http_route("default", "r", parent, rules)]);
    assert_eq!(errors.len(), 2, "{errors}");
    assert_error(
        &errors,
        &["spec.rules[0].backendRefs[0].port", "invalid port 0"],
    );
    assert_error(&errors, &["spec.rules[0].backendRefs[1].port", "required"]);
}

#[test]
fn policy_errors_are_all_reported() {
    let spec = json!({
        "action": "PERMIT",
        "rules": [{
            "from": [{"source": {"ipBlocks": ["10.0.0.0/33"], "notIpBlocks": ["nope"]}}],
            "to": [{"operation": {"ports": ["http"], "notPorts": [70000]}}],
            "when": [{"key": "source.ip", "values": ["1.2.3.4/40"]}, {"key": "made.up", "values": ["x"]},
                     {"key": "experimental.envoy.filters.network.mysql_proxy[db.table]", "values": ["[update]"]}]
        }]
    });
    let unknown_field = json!({"rules": [{"from": [{"source": {"principal": ["typo"]}}]}]});
    let errors = must_fail(&[
        policy("default", "p", spec),
        policy("default", "q", unknown_field),
    ]);
    assert_eq!(errors.len(), 9, "{errors}");
    let obj = "AuthorizationPolicy default/p";
    assert_error(
        &errors,
        &[obj, "spec.action", "unknown policy action \"PERMIT\""],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "invalid CIDR",
        ],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[0].from[0].source.notIpBlocks[0]",
            "invalid CIDR",
        ],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[0].to[0].operation.ports[0]",
            "invalid port",
        ],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[0].to[0].operation.notPorts[0]",
            "invalid port",
        ],
    );
    assert_error(
        &errors,
        &[obj, "spec.rules[0].when[0].values[0]", "invalid CIDR"],
    );
    assert_error(
        &errors,
        &[obj, "spec.rules[0].when[1].key", "unknown condition key"],
    );
    assert_error(
        &errors,
        &[
            obj,
            "spec.rules[0].when[2].key",
            "Envoy's filter metadata",
            "not supported",
        ],
    );
    assert_error(
        &errors,
        &[
            "AuthorizationPolicy default/q",
            "spec.rules[0].from[0].source",
            "principal",
        ],
    );
}

#[test]
fn unknown_kind_and_missing_name() {
    let unknown = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x"}});
    let nameless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {}});
    let errors = must_fail(&[unknown, nameless]);
    assert_eq!(errors.len(), 2, "{errors}");
    assert_error(&errors, &["document 1", "kind", "VirtualService"]);
    assert_error(
        &errors,
        &["Service (document 2)", "metadata.name", "required"],
    );
}

#[test]
fn missing_references_are_warnings_not_errors() {
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let mut bound = service("default", "bound", "127.0.100.2", json!({"app": "a"}));
    bound["metadata"]["labels"] = json!({"istio.io/use-waypoint": "ghost"});
    let route = http_route(
        "default",
        "r",
        json!([{"group": "", "kind": "Service", "name": "svc", "port": 80},
               {"group": "", "kind": "Service", "name": "missing-parent"}]),
        json!([{"backendRefs": [{"name": "svc", "port": 80, "weight": 1},
                                {"name": "missing-backend", "port": 80, "weight": 1}]}]),
    );
    let snap = must_compile(&[svc, bound, route]);
    let warnings: Vec<String> = snap.warnings().iter().map(ToString::to_string).collect();
    let has = |needles: &[&str]| {
        warnings
            .iter()
            .any(|w| needles.iter().all(|n| w.contains(n)))
    };
    assert!(
        has(&[
            "Service default/bound",
            "istio.io/use-waypoint",
            "default/ghost"
        ]),
        "{warnings:?}"
    );
    assert!(
        has(&[
            "HTTPRoute default/r",
            "spec.parentRefs[1].name",
            "missing-parent"
        ]),
        "{warnings:?}"
    );
    assert!(
        has(&[
            "HTTPRoute default/r",
            "backendRefs[1].name",
            "missing-backend"
        ]),
        "{warnings:?}"
    );
    let svc = snap.service("default", "svc").expect("svc");
    let rule = &snap.routes(svc, 80)[0];
    assert!(rule.backends[0].service.is_some());
    assert_eq!(rule.backends[1].name, "missing-backend");
    assert!(rule.backends[1].service.is_none());
    assert_eq!(
        snap.service("default", "bound").expect("bound").waypoint,
        None
    );
}

#[test]
fn error_display_format() {
    let e = mesh_config::ConfigError {
        location: mesh_config::Location::file("f.yaml"),
        object: "HTTPRoute default/reviews".into(),
        field: "spec.rules[0].matches[1].path.value".into(),
        message: "bad".into(),
        reason: mesh_config::Reason::Invalid,
    };
    assert_eq!(
        e.to_string(),
        "f.yaml: HTTPRoute default/reviews: spec.rules[0].matches[1].path.value: bad"
    );
    let all = mesh_config::ConfigErrors(vec![e.clone(), e]);
    assert_eq!(all.to_string().lines().count(), 2);
}

#[test]
fn objects_from_the_kubernetes_api_are_named_by_uid() {
    let mut resources = mesh_config::Resources::default();
    for (i, obj) in nodes().into_iter().enumerate() {
        let location = mesh_config::Location::Kube {
            uid: format!("node-{i}"),
            resource_version: "1".into(),
        };
        resources.add_object(location, obj);
    }
    let mut svc = service("default", "svc", "not-an-ip", json!({"app": "a"}));
    svc["metadata"]["uid"] = json!("u-1");
    let location = mesh_config::Location::Kube {
        uid: "u-1".into(),
        resource_version: "42".into(),
    };
    resources.add_object(location, svc);
    let errors = resources.compile().expect_err("invalid clusterIP");
    assert_eq!(errors.len(), 1, "{errors}");
    assert_error(
        &errors,
        &[
            "kubernetes uid=u-1 resourceVersion=42",
            "Service default/svc",
            "spec.clusterIP",
        ],
    );
}

#[test]
fn problems_carry_the_status_condition_a_controller_would_write() {
    let parent = json!([{"group": "", "kind": "Service", "name": "svc"},
                        {"group": "", "kind": "Service", "name": "nowhere"}]);
    let rules =
        json!([{"backendRefs": [{"name": "svc", "port": 80}, {"name": "gone", "port": 80}]}]);
    let snap = must_compile(&with_svc([http_route("default", "r", parent, rules)]));
    let reasons: Vec<_> = snap
        .warnings()
        .iter()
        .map(|w| (w.field.as_str(), w.reason.condition()))
        .collect();
    assert!(
        reasons.contains(&(
            "spec.rules[0].backendRefs[1].name",
            Some(("ResolvedRefs", "BackendNotFound"))
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(
            "spec.parentRefs[1].name",
            Some(("Accepted", "NoMatchingParent"))
        )),
        "{reasons:?}"
    );
    let bad = json!([{"filters": [{"type": "ExtensionRef", "extensionRef": {
                          "group": "example.com", "kind": "Magic", "name": "m"}}],
                      "backendRefs": [{"name": "svc", "port": 80}]}]);
    let parent = json!([{"group": "", "kind": "Service", "name": "svc"}]);
    let errors = must_fail(&with_svc([http_route("default", "r", parent, bad)]));
    let reason = errors.iter().next().and_then(|e| e.reason.condition());
    assert_eq!(reason, Some(("Accepted", "UnsupportedValue")));
}
