//! HTTPRoute compilation, attachment and precedence ordering.

mod common;

use std::time::Duration;

use common::*;
use mesh_config::{PathMatch, RetryPolicy, RouteRule, ValueMatch};
use serde_json::{Value, json};

fn svc_parent(name: &str, port: Option<u16>) -> Value {
    let mut p = json!({"group": "", "kind": "Service", "name": name});
    if let Some(port) = port {
        p["port"] = json!(port);
    }
    json!([p])
}

fn backend() -> Value {
    json!([{"name": "svc", "port": 80}])
}

fn ids(rules: &[std::sync::Arc<RouteRule>]) -> Vec<String> {
    rules
        .iter()
        .map(|r| format!("{}#{}", r.route.name, r.rule_index))
        .collect()
}

#[test]
fn rules_are_ordered_by_gateway_api_precedence() {
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let path = |t: &str, v: &str| json!({"path": {"type": t, "value": v}});
    // Route "b" (alphabetically after "a"), rule order deliberately least-specific first.
    let b = http_route(
        "default",
        "b",
        svc_parent("svc", Some(80)),
        json!([
            {"backendRefs": backend()},                                                   // b#0: default "/"
            {"matches": [path("PathPrefix", "/api")], "backendRefs": backend()},          // b#1
            {"matches": [path("PathPrefix", "/api/v1")], "backendRefs": backend()},       // b#2
            {"matches": [path("Exact", "/api")], "backendRefs": backend()},               // b#3
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}],
             "backendRefs": backend()},                                                   // b#4
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
                          "headers": [{"name": "X-A", "value": "1"}]}], "backendRefs": backend()}, // b#5
            {"matches": [path("RegularExpression", "/x/[0-9]+")], "backendRefs": backend()} // b#6
        ]),
    );
    // Route "a": same specificity as b#1 → wins the tie by name.
    let a = http_route(
        "default",
        "a",
        svc_parent("svc", None),
        json!([
            {"matches": [path("PathPrefix", "/api")], "backendRefs": backend()}
        ]),
    );
    let snap = must_compile(&[svc, b, a]);
    let svc = snap.service("default", "svc").expect("svc");
    let order = ids(snap.routes(svc, 80));
    assert_eq!(
        order,
        vec!["b#3", "b#6", "b#2", "b#5", "b#4", "a#0", "b#1", "b#0"]
    );
}

#[test]
fn older_route_wins_a_tie() {
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let mut newer = http_route(
        "default",
        "a-newer",
        svc_parent("svc", None),
        json!([{"backendRefs": backend()}]),
    );
    newer["metadata"]["creationTimestamp"] = json!("2026-02-01T00:00:00Z");
    let mut older = http_route(
        "default",
        "z-older",
        svc_parent("svc", None),
        json!([{"backendRefs": backend()}]),
    );
    older["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    let snap = must_compile(&[svc, newer, older]);
    let svc = snap.service("default", "svc").expect("svc");
    assert_eq!(ids(snap.routes(svc, 80)), vec!["z-older#0", "a-newer#0"]);
}

#[test]
fn a_rule_is_ranked_by_its_best_match() {
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let route = http_route(
        "default",
        "r",
        svc_parent("svc", None),
        json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/long/prefix"}}], "backendRefs": backend()},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}},
                         {"path": {"type": "Exact", "value": "/e"}}], "backendRefs": backend()}
        ]),
    );
    let snap = must_compile(&[svc, route]);
    let svc = snap.service("default", "svc").expect("svc");
    assert_eq!(ids(snap.routes(svc, 80)), vec!["r#1", "r#0"]);
}

#[test]
fn compiled_rule_contents() {
    let svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    let route = http_route(
        "default",
        "r",
        svc_parent("svc", Some(80)),
        json!([{
            "matches": [{
                "path": {"type": "RegularExpression", "value": "/items/[0-9]+"},
                "method": "POST",
                "headers": [{"name": "X-Version", "value": "v[12]", "type": "RegularExpression"}],
                "queryParams": [{"name": "debug", "value": "1"}]
            }],
            "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": "x-set", "value": "s"}], "add": [{"name": "x-add", "value": "a"}],
                    "remove": ["x-drop"]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-resp", "value": "r"}]}}
            ],
            "backendRefs": [{"name": "svc", "port": 80}, {"name": "svc", "port": 80, "weight": 0}],
            "timeouts": {"request": "10s", "backendRequest": "500ms"}
        }, {
            "timeouts": {"request": "0s"}
        }]),
    );
    let snap = must_compile(&[svc, route]);
    let svc = snap.service("default", "svc").expect("svc");
    let rules = snap.routes(svc, 80);
    let rule = &rules[0];
    let m = &rule.matches[0];
    let PathMatch::Regex(re) = &m.path else {
        panic!("regex path")
    };
    assert!(re.is_match("/items/42"));
    assert!(!re.is_match("/items/42/extra"), "regex must be anchored");
    assert_eq!(m.method.as_deref(), Some("POST"));
    assert_eq!(m.headers[0].name, "x-version");
    let ValueMatch::Regex(hre) = &m.headers[0].value else {
        panic!("regex header")
    };
    assert!(hre.is_match("v2") && !hre.is_match("v22"));
    assert!(matches!(&m.query[0].value, ValueMatch::Exact(v) if v == "1"));
    let req = rule.filters.request_headers.as_ref().expect("req filter");
    assert_eq!(
        req.add,
        vec![(
            http::HeaderName::from_static("x-add"),
            http::HeaderValue::from_static("a")
        )]
    );
    assert_eq!(req.remove, vec![http::HeaderName::from_static("x-drop")]);
    let response = rule.filters.response_headers.as_ref();
    assert!(response.is_some_and(|r| r.add.len() == 1));
    assert_eq!(rule.backends[0].weight, 1);
    assert_eq!(rule.backends[1].weight, 0);
    assert_eq!(rule.request_timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        rule.backend_request_timeout,
        Some(Duration::from_millis(500))
    );
    // A rule without matches gets the default Prefix("/") match; "0s" means no timeout.
    let default_rule = &rules[1];
    assert!(
        matches!(&default_rule.matches[..], [m] if matches!(&m.path, PathMatch::Prefix(p) if p == "/"))
    );
    assert_eq!(default_rule.request_timeout, None);
    assert!(default_rule.backends.is_empty());
}

#[test]
fn attachment_by_port_namespace_and_waypoint() {
    let mut objs = vec![waypoint_gateway("default", "wp", None)];
    let mut bound = service("default", "bound", "127.0.100.1", json!({"app": "a"}));
    bound["metadata"]["labels"] = json!({"istio.io/use-waypoint": "wp"});
    bound["spec"]["ports"] = json!([{"port": 80}, {"port": 81}]);
    let mut two_ports = service("default", "two", "127.0.100.2", json!({"app": "b"}));
    two_ports["spec"]["ports"] = json!([{"port": 80}, {"port": 81}]);
    objs.extend([
        bound,
        two_ports,
        service("other", "foreign", "127.0.100.3", json!({"app": "c"})),
    ]);
    let rule = json!([{"backendRefs": backend()}]);
    objs.push(http_route(
        "default",
        "port-only",
        svc_parent("two", Some(81)),
        rule.clone(),
    ));
    objs.push(http_route(
        "default",
        "consumer",
        json!([{"group": "", "kind": "Service", "name": "foreign", "namespace": "other"}]),
        rule.clone(),
    ));
    objs.push(http_route(
        "default",
        "to-waypoint",
        json!([{"name": "wp"}]),
        rule,
    ));
    let snap = must_compile(&objs);
    let two = snap.service("default", "two").expect("two");
    assert!(snap.routes(two, 80).is_empty());
    assert_eq!(ids(snap.routes(two, 81)), vec!["port-only#0"]);
    let foreign = snap.service("other", "foreign").expect("foreign");
    assert!(snap.routes(foreign, 80).is_empty(), "no producer route");
    // A consumer route: for callers from its own namespace only.
    let for_default = snap.routes_for(foreign, 80, "default");
    assert_eq!(ids(for_default), vec!["consumer#0"]);
    assert!(snap.routes_for(foreign, 80, "other").is_empty());
    let bound = snap.service("default", "bound").expect("bound");
    assert_eq!(ids(snap.routes(bound, 80)), vec!["to-waypoint#0"]);
    assert_eq!(ids(snap.routes(bound, 81)), vec!["to-waypoint#0"]);
    let about_consumer = |w: &&mesh_config::ConfigError| {
        w.object == "HTTPRoute default/consumer" && w.field.starts_with("spec.parentRefs")
    };
    assert!(!snap.warnings().iter().any(|w| about_consumer(&w)));
}

/// GEP-1294: a namespace's consumer routes replace the producer routes for its callers (not
/// merged with them); callers from any other namespace get the producer routes; several
/// consumer routes of one namespace merge by precedence.
#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace() {
    let mut objs = vec![service("prod", "api", "127.0.100.1", json!({"app": "a"}))];
    let parent =
        json!([{"group": "", "kind": "Service", "name": "api", "namespace": "prod", "port": 80}]);
    let rule = |path: &str| {
        json!([{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": "api", "namespace": "prod", "port": 80}]}])
    };
    objs.push(http_route("prod", "producer", parent.clone(), rule("/")));
    objs.push(http_route("shop", "short", parent.clone(), rule("/a")));
    objs.push(http_route("shop", "long", parent, rule("/a/b")));
    let snap = must_compile(&objs);
    let api = snap.service("prod", "api").expect("api");
    assert_eq!(
        ids(snap.routes_for(api, 80, "shop")),
        vec!["long#0", "short#0"]
    );
    assert_eq!(ids(snap.routes_for(api, 80, "prod")), vec!["producer#0"]);
    assert_eq!(
        ids(snap.routes_for(api, 80, "elsewhere")),
        vec!["producer#0"]
    );
}

/// GEP-1731 `retry`: attempts (2 when left out, 0 turns retries off), codes, backoff.
#[test]
fn retry_policies_compile() {
    let route = http_route(
        "default",
        "r",
        svc_parent("svc", Some(80)),
        json!([
            {"backendRefs": backend()},
            {"backendRefs": backend(), "retry": {"attempts": 3, "codes": [503, 429], "backoff": "100ms"}},
            {"backendRefs": backend(), "retry": {"codes": [500]}},
            {"backendRefs": backend(), "retry": {"attempts": 0}}
        ]),
    );
    let snap = must_compile(&with_svc([route]));
    let svc = snap.service("default", "svc").expect("svc");
    let by_index = |i: usize| {
        let rules = snap.routes(svc, 80);
        let rule = rules.iter().find(|r| r.rule_index == i).expect("rule");
        rule.retry.clone()
    };
    assert_eq!(by_index(0), None);
    let policy = |attempts, codes: &[u16], backoff| RetryPolicy {
        attempts,
        codes: codes.to_vec(),
        backoff,
    };
    assert_eq!(
        by_index(1),
        Some(policy(3, &[503, 429], Some(Duration::from_millis(100))))
    );
    assert_eq!(by_index(2), Some(policy(2, &[500], None)));
    assert_eq!(by_index(3), Some(policy(0, &[], None)));
}

/// A retry policy out of bounds is refused naming its field; session persistence, which the
/// waypoint does not do, is refused rather than ignored.
#[test]
fn bad_retry_policies_and_session_persistence_are_refused() {
    let route = http_route(
        "default",
        "r",
        svc_parent("svc", Some(80)),
        json!([
            {"backendRefs": backend(), "retry": {"attempts": -1}},
            {"backendRefs": backend(), "retry": {"attempts": 11}},
            {"backendRefs": backend(), "retry": {"codes": [503, 200]}},
            {"backendRefs": backend(), "retry": {"backoff": "1.5s"}},
            {"backendRefs": backend(), "retry": {"backoff": "-1s"}},
            {"backendRefs": backend(), "sessionPersistence": {"type": "Cookie"}}
        ]),
    );
    let errors = must_fail(&with_svc([route]));
    let expected: [&[&str]; 6] = [
        &["spec.rules[0].retry.attempts", "-1 is not within 0..=10"],
        &["spec.rules[1].retry.attempts", "11 is not within 0..=10"],
        &[
            "spec.rules[2].retry.codes[1]",
            "200 is not a status within 400-599",
        ],
        &["spec.rules[3].retry.backoff", "invalid duration \"1.5s\""],
        &["spec.rules[4].retry.backoff", "invalid duration \"-1s\""],
        &["spec.rules[5].sessionPersistence", "not supported"],
    ];
    for needles in expected {
        let mut all = vec!["HTTPRoute default/r"];
        all.extend_from_slice(needles);
        assert_error(&errors, &all);
    }
}

fn grpc_route(namespace: &str, name: &str, parents: Value, rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"parentRefs": parents, "rules": rules}
    })
}

/// A GRPCRoute is routed as the HTTP/2 requests gRPC makes: service and method matches
/// become `/<service>/<method>` path matches; headers, filters and weights carry over, and
/// its rules are ordered by HTTPRoute's precedence.
#[test]
fn grpc_routes_compile_to_path_matches() {
    let route = grpc_route(
        "default",
        "g",
        svc_parent("svc", Some(80)),
        json!([{
            "matches": [{"method": {"service": "pkg.Svc", "method": "Get"},
                         "headers": [{"name": "x-tenant", "value": "a"}]}],
            "filters": [{"type": "RequestHeaderModifier",
                         "requestHeaderModifier": {"set": [{"name": "x-grpc", "value": "1"}]}}],
            "backendRefs": [{"name": "svc", "port": 80, "weight": 3}]
        }, {
            "matches": [{"method": {"service": "pkg.Svc"}}],
            "backendRefs": backend()
        }]),
    );
    let snap = must_compile(&with_svc([route]));
    let svc = snap.service("default", "svc").expect("svc");
    let rules = snap.routes(svc, 80);
    // Exact service+method first, the service-only regex next.
    assert_eq!(ids(rules), vec!["g#0", "g#1"]);
    let exact = &rules[0].matches[0];
    assert!(matches!(&exact.path, PathMatch::Exact(p) if p == "/pkg.Svc/Get"));
    assert_eq!(exact.headers[0].name, "x-tenant");
    assert!(rules[0].filters.request_headers.is_some());
    assert_eq!(rules[0].backends[0].weight, 3);
    let PathMatch::Regex(service) = &rules[1].matches[0].path else {
        panic!("a regex for the service's methods")
    };
    assert!(service.is_match("/pkg.Svc/List"));
    assert!(!service.is_match("/pkg.SvcX/List") && !service.is_match("/pkg.Svc/a/b"));
    let status = &snap.route_statuses()[0];
    assert_eq!(status.route, "GRPCRoute default/g");
    assert!(status.is_clean());
}

/// Where a GRPCRoute and an HTTPRoute bind the same Service port for the same callers, the
/// GRPCRoute wins and the HTTPRoute is ignored there, `Accepted: False (Conflicted)`; on the
/// ports only the HTTPRoute binds, and for another namespace's consumers, it still applies.
#[test]
fn a_grpc_route_takes_a_port_from_an_http_route() {
    let mut objs = nodes();
    let mut svc = service("default", "svc", "127.0.100.1", json!({"app": "a"}));
    svc["spec"]["ports"] = json!([{"name": "grpc", "port": 80}, {"name": "http", "port": 81}]);
    objs.push(svc);
    let everything = json!([{"backendRefs": backend()}]);
    let grpc = grpc_route(
        "default",
        "g",
        svc_parent("svc", Some(80)),
        everything.clone(),
    );
    let http = http_route("default", "h", svc_parent("svc", None), everything.clone());
    let parent = json!([{"group": "", "kind": "Service", "name": "svc", "namespace": "default"}]);
    let to_svc = json!([{"backendRefs": [{"name": "svc", "namespace": "default", "port": 80}]}]);
    let consumer = http_route("shop", "c", parent, to_svc);
    objs.extend([grpc, http, consumer]);
    let snap = must_compile(&objs);
    let svc = snap.service("default", "svc").expect("svc");
    assert_eq!(ids(snap.routes(svc, 80)), vec!["g#0"]);
    assert_eq!(ids(snap.routes(svc, 81)), vec!["h#0"]);
    assert_eq!(ids(snap.routes_for(svc, 80, "shop")), vec!["c#0"]);
    let statuses = snap.route_statuses();
    let status = |name: &str| statuses.iter().find(|s| s.route == name).expect(name);
    let accepted = &status("HTTPRoute default/h").parents[0].accepted;
    assert!(!accepted.status);
    assert_eq!(accepted.reason, "Conflicted");
    assert!(
        accepted.message.contains("GRPCRoute default/g"),
        "{}",
        accepted.message
    );
    assert!(accepted.message.contains("port 80"), "{}", accepted.message);
    assert!(status("GRPCRoute default/g").is_clean());
    assert!(status("HTTPRoute shop/c").is_clean());
}

/// Problems in a GRPCRoute name its own fields.
#[test]
fn bad_grpc_routes_are_refused_naming_their_fields() {
    let route = grpc_route(
        "default",
        "g",
        svc_parent("svc", Some(80)),
        json!([
            {"matches": [{"method": {"type": "RegularExpression", "service": "(open"}}],
             "backendRefs": backend()},
            {"matches": [{"method": {}}], "backendRefs": backend()},
            {"filters": [{"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "ghost", "port": 80}}}], "backendRefs": backend()}
        ]),
    );
    let errors = must_fail(&with_svc([route]));
    let expected: [&[&str]; 3] = [
        &["spec.rules[0].matches[0].method.service", "invalid regex"],
        &[
            "spec.rules[1].matches[0].method",
            "at least one of service and method",
        ],
        &[
            "spec.rules[2].filters[0].requestMirror.backendRef.name",
            "ghost",
        ],
    ];
    for needles in expected {
        let mut all = vec!["GRPCRoute default/g"];
        all.extend_from_slice(needles);
        assert_error(&errors, &all);
    }
}

/// `hostnames` mean nothing on a mesh route (GEP-1294): said so, and the route still serves.
#[test]
fn hostnames_on_a_mesh_route_are_flagged_as_having_no_effect() {
    let mut route = http_route(
        "default",
        "r",
        svc_parent("svc", Some(80)),
        json!([{"backendRefs": backend()}]),
    );
    route["spec"]["hostnames"] = json!(["svc.example.com"]);
    route["spec"]["useDefaultGateways"] = json!("All");
    let snap = must_compile(&with_svc([route]));
    let svc = snap.service("default", "svc").expect("svc");
    assert_eq!(ids(snap.routes(svc, 80)), vec!["r#0"]);
    let warning = snap.warnings().iter().find(|w| w.field == "spec.hostnames");
    assert!(
        warning.is_some_and(|w| w.message.contains("no effect")),
        "{:?}",
        snap.warnings()
    );
    let defaults = snap
        .warnings()
        .iter()
        .find(|w| w.field == "spec.useDefaultGateways");
    assert!(defaults.is_some_and(|w| w.message.contains("no effect")));
    assert!(snap.route_statuses()[0].is_clean(), "still accepted");
}

/// `sectionName` on a Service parent names one of its ports (with `port`, both must agree);
/// on the waypoint Gateway, one of its listeners. Naming nothing is `NoMatchingParent`.
#[test]
fn section_names_pick_a_port_or_a_listener() {
    let mut svc = service("default", "two", "127.0.100.2", json!({"app": "b"}));
    svc["spec"]["ports"] = json!([{"name": "http", "port": 80}, {"name": "admin", "port": 81}]);
    let rule = json!([{"backendRefs": [{"name": "two", "port": 80}]}]);
    let parent = |section: &str, port: Option<u16>| {
        let mut p = json!({"group": "", "kind": "Service", "name": "two", "sectionName": section});
        if let Some(port) = port {
            p["port"] = json!(port);
        }
        json!([p])
    };
    let objs = vec![
        svc,
        http_route("default", "by-name", parent("admin", None), rule.clone()),
        http_route("default", "both", parent("http", Some(80)), rule.clone()),
        http_route(
            "default",
            "disagree",
            parent("http", Some(81)),
            rule.clone(),
        ),
        http_route("default", "unknown", parent("metrics", None), rule),
    ];
    let snap = must_compile(&objs);
    let two = snap.service("default", "two").expect("two");
    assert_eq!(ids(snap.routes(two, 80)), vec!["both#0"]);
    assert_eq!(ids(snap.routes(two, 81)), vec!["by-name#0"]);
    let no_parent = |route: &str| {
        snap.warnings().iter().any(|w| {
            w.object == format!("HTTPRoute default/{route}")
                && w.field == "spec.parentRefs[0].sectionName"
                && w.reason.condition() == Some(("Accepted", "NoMatchingParent"))
        })
    };
    assert!(
        no_parent("disagree") && no_parent("unknown"),
        "{:?}",
        snap.warnings()
    );
    assert!(!no_parent("by-name") && !no_parent("both"));
}

#[test]
fn a_gateway_section_name_must_be_one_of_its_listeners() {
    let mut bound = service("default", "bound", "127.0.100.1", json!({"app": "a"}));
    bound["metadata"]["labels"] = json!({"istio.io/use-waypoint": "wp"});
    let rule = json!([{"backendRefs": [{"name": "bound", "port": 80}]}]);
    let objs = vec![
        waypoint_gateway("default", "wp", None),
        bound,
        http_route(
            "default",
            "mesh",
            json!([{"name": "wp", "sectionName": "mesh"}]),
            rule.clone(),
        ),
        http_route(
            "default",
            "nope",
            json!([{"name": "wp", "sectionName": "nope"}]),
            rule,
        ),
    ];
    let snap = must_compile(&objs);
    let bound = snap.service("default", "bound").expect("bound");
    assert_eq!(ids(snap.routes(bound, 80)), vec!["mesh#0"]);
    let refused = snap.warnings().iter().any(|w| {
        w.object == "HTTPRoute default/nope" && w.field == "spec.parentRefs[0].sectionName"
    });
    assert!(refused, "{:?}", snap.warnings());
}
