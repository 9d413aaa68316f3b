//! Every AuthorizationPolicy field, positive and negative, under each action (ALLOW, DENY,
//! AUDIT, CUSTOM): policies written as YAML, compiled by the config compiler, evaluated by the
//! waypoint's evaluator (pure) on a request that the field matches and on one it does not.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use mesh_config::fixtures::{self, yaml};
use mesh_config::{AuthorizationPolicy, ObjectRef};
use serde_json::{Value, json};
use waypoint::authn::JwtIdentity;
use waypoint::authz::{RequestAttributes, Verdict, audited, evaluate};
use waypoint::request::RequestAttrs;

/// The request a case varies.
#[derive(Clone)]
struct Request {
    principal: &'static str,
    namespace: &'static str,
    ip: &'static str,
    destination_ip: &'static str,
    port: u16,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    header: Option<&'static str>,
    jwt: Option<&'static str>,
}

const BASE: Request = Request {
    principal: "cluster.local/ns/default/sa/sleep",
    namespace: "default",
    ip: "127.0.1.10",
    destination_ip: "127.0.100.1",
    port: 9080,
    method: "GET",
    path: "/api/v1/items",
    host: "reviews.default:9080",
    header: Some("blue"),
    jwt: Some("alice"),
};

/// A verified JWT of subject `sub`: issuer `https://idp`, audience `reviews`, presenter
/// `web`, groups `[dev]` (`admin` too for alice).
fn jwt(sub: &str) -> JwtIdentity {
    let groups = match sub {
        "alice" => json!(["dev", "admin"]),
        _ => json!(["dev"]),
    };
    let claims = json!({"iss": "https://idp", "sub": sub, "groups": groups, "azp": "web"});
    JwtIdentity {
        principal: format!("https://idp/{sub}"),
        audiences: vec!["reviews".into()],
        presenter: Some("web".into()),
        claims: claims.as_object().cloned().expect("object"),
    }
}

fn verdict(policies: &[Arc<AuthorizationPolicy>], r: &Request) -> (Verdict, usize) {
    let mut headers = HeaderMap::new();
    if let Some(value) = r.header {
        headers.insert("x-team", HeaderValue::from_static(value));
    }
    let identity = r.jwt.map(jwt);
    let attributes = RequestAttributes {
        principal: Some(r.principal),
        namespace: Some(r.namespace),
        source_ip: r.ip.parse().expect("ip"),
        destination_ip: Some(r.destination_ip.parse().expect("ip")),
        destination_port: r.port,
        request: RequestAttrs::new(r.method, r.path, r.host, &headers),
        jwt: identity.as_ref(),
    };
    let audits = audited(policies, &attributes).len();
    (evaluate(policies, &attributes), audits)
}

/// One field: the rule that holds it, a request it matches and one it does not.
struct Case {
    rule: Value,
    hit: Request,
    miss: Request,
}

fn case(rule: Value, hit: impl FnOnce(&mut Request), miss: impl FnOnce(&mut Request)) -> Case {
    let (mut h, mut m) = (BASE, BASE);
    hit(&mut h);
    miss(&mut m);
    Case {
        rule,
        hit: h,
        miss: m,
    }
}

fn from(source: Value) -> Value {
    json!({"from": [{"source": source}]})
}

fn to(operation: Value) -> Value {
    json!({"to": [{"operation": operation}]})
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Value {
    let mut condition = json!({"key": key});
    if !values.is_empty() {
        condition["values"] = json!(values);
    }
    if !not_values.is_empty() {
        condition["notValues"] = json!(not_values);
    }
    json!({"when": [condition]})
}

fn cases() -> Vec<(&'static str, Case)> {
    let other = "cluster.local/ns/default/sa/other";
    vec![
        (
            "principals",
            case(
                from(json!({"principals": ["cluster.local/ns/default/sa/sleep"]})),
                |_| {},
                |r| r.principal = other,
            ),
        ),
        (
            "notPrincipals",
            case(
                from(json!({"notPrincipals": ["*/sa/sleep"]})),
                |r| r.principal = other,
                |_| {},
            ),
        ),
        (
            "namespaces",
            case(
                from(json!({"namespaces": ["default"]})),
                |_| {},
                |r| r.namespace = "prod",
            ),
        ),
        (
            "notNamespaces",
            case(
                from(json!({"notNamespaces": ["prod"]})),
                |_| {},
                |r| r.namespace = "prod",
            ),
        ),
        (
            "serviceAccounts",
            case(
                from(json!({"serviceAccounts": ["default/sleep"]})),
                |_| {},
                |r| r.principal = other,
            ),
        ),
        (
            "notServiceAccounts",
            case(
                from(json!({"notServiceAccounts": ["default/sleep"]})),
                |r| r.principal = other,
                |_| {},
            ),
        ),
        (
            "ipBlocks",
            case(
                from(json!({"ipBlocks": ["127.0.1.0/24"]})),
                |_| {},
                |r| r.ip = "10.0.0.1",
            ),
        ),
        (
            "notIpBlocks",
            case(
                from(json!({"notIpBlocks": ["10.0.0.0/8"]})),
                |_| {},
                |r| r.ip = "10.0.0.1",
            ),
        ),
        (
            "remoteIpBlocks",
            case(
                from(json!({"remoteIpBlocks": ["127.0.1.10"]})),
                |_| {},
                |r| r.ip = "127.0.1.11",
            ),
        ),
        (
            "notRemoteIpBlocks",
            case(
                from(json!({"notRemoteIpBlocks": ["127.0.1.11"]})),
                |_| {},
                |r| r.ip = "127.0.1.11",
            ),
        ),
        (
            "requestPrincipals",
            case(
                from(json!({"requestPrincipals": ["https://idp/*"]})),
                |_| {},
                |r| r.jwt = None,
            ),
        ),
        (
            "notRequestPrincipals",
            case(
                from(json!({"notRequestPrincipals": ["https://idp/alice"]})),
                |r| r.jwt = Some("bob"),
                |_| {},
            ),
        ),
        (
            "hosts",
            case(
                to(json!({"hosts": ["Reviews.*"]})),
                |_| {},
                |r| r.host = "ratings.default:9080",
            ),
        ),
        (
            "notHosts",
            case(
                to(json!({"notHosts": ["ratings*"]})),
                |_| {},
                |r| r.host = "ratings.default:9080",
            ),
        ),
        (
            "ports",
            case(to(json!({"ports": ["9080"]})), |_| {}, |r| r.port = 80),
        ),
        (
            "notPorts",
            case(to(json!({"notPorts": [80]})), |_| {}, |r| r.port = 80),
        ),
        (
            "methods",
            case(
                to(json!({"methods": ["GET", "HEAD"]})),
                |_| {},
                |r| r.method = "POST",
            ),
        ),
        (
            "notMethods",
            case(
                to(json!({"notMethods": ["POST"]})),
                |_| {},
                |r| r.method = "POST",
            ),
        ),
        (
            "paths",
            case(
                to(json!({"paths": ["/api/{*}/items"]})),
                |_| {},
                |r| r.path = "/api/v1/v2/items",
            ),
        ),
        (
            "notPaths",
            case(
                to(json!({"notPaths": ["/admin*"]})),
                |_| {},
                |r| r.path = "/admin/x",
            ),
        ),
        (
            "when source.ip",
            case(
                when("source.ip", &["127.0.1.0/24"], &[]),
                |_| {},
                |r| r.ip = "10.0.0.1",
            ),
        ),
        (
            "when remote.ip",
            case(
                when("remote.ip", &[], &["10.0.0.1"]),
                |_| {},
                |r| r.ip = "10.0.0.1",
            ),
        ),
        (
            "when source.namespace",
            case(
                when("source.namespace", &["default"], &[]),
                |_| {},
                |r| r.namespace = "prod",
            ),
        ),
        (
            "when source.principal",
            case(
                when("source.principal", &["*/sa/sleep"], &[]),
                |_| {},
                |r| r.principal = other,
            ),
        ),
        (
            "when source.serviceAccount",
            case(
                when("source.serviceAccount", &[], &["default/other"]),
                |_| {},
                |r| r.principal = other,
            ),
        ),
        (
            "when destination.ip",
            case(
                when("destination.ip", &["127.0.100.0/24"], &[]),
                |_| {},
                |r| r.destination_ip = "127.0.200.1",
            ),
        ),
        (
            "when destination.port",
            case(
                when("destination.port", &["9080"], &[]),
                |_| {},
                |r| r.port = 80,
            ),
        ),
        (
            "when request.headers",
            case(
                when("request.headers[x-team]", &["blue"], &[]),
                |_| {},
                |r| r.header = None,
            ),
        ),
        (
            "when request.headers notValues",
            case(
                when("request.headers[x-team]", &[], &["red"]),
                |_| {},
                |r| r.header = Some("red"),
            ),
        ),
        (
            "when request.auth.principal",
            case(
                when("request.auth.principal", &["https://idp/alice"], &[]),
                |_| {},
                |r| r.jwt = Some("bob"),
            ),
        ),
        (
            "when request.auth.audiences",
            case(
                when("request.auth.audiences", &["reviews"], &[]),
                |_| {},
                |r| r.jwt = None,
            ),
        ),
        (
            "when request.auth.presenter",
            case(
                when("request.auth.presenter", &["web"], &[]),
                |_| {},
                |r| r.jwt = None,
            ),
        ),
        (
            "when request.auth.claims",
            case(
                when("request.auth.claims[groups]", &["admin"], &[]),
                |_| {},
                |r| r.jwt = Some("bob"),
            ),
        ),
        (
            "when request.auth.claims notValues",
            case(
                when("request.auth.claims[groups]", &[], &["admin"]),
                |r| r.jwt = Some("bob"),
                |_| {},
            ),
        ),
    ]
}

/// The waypoint's policies (on its Gateway) from `rule` under `action`, compiled from YAML.
fn compiled(action: &str, rule: &Value) -> Vec<Arc<AuthorizationPolicy>> {
    let mut spec = json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "wp"}],
                      "action": action, "rules": [rule]});
    if action == "CUSTOM" {
        spec["provider"] = json!({"name": "opa"});
    }
    let mut objs = fixtures::nodes();
    objs.push(fixtures::waypoint_gateway("default", "wp", None));
    objs.push(fixtures::waypoint_pod("default", "wp", "127.0.1.50"));
    objs.push(fixtures::policy("default", "p", spec));
    let snapshot = mesh_config::compile(vec![("matrix.yaml".into(), yaml(&objs))])
        .unwrap_or_else(|e| panic!("{action} {rule}: {e}"));
    snapshot
        .waypoint_policies(&ObjectRef::new("default", "wp"), None)
        .to_vec()
}

#[test]
fn every_field_matches_and_misses_under_every_action() {
    for (field, case) in cases() {
        for action in ["ALLOW", "DENY", "AUDIT", "CUSTOM"] {
            let policies = compiled(action, &case.rule);
            let (hit, hit_audits) = verdict(&policies, &case.hit);
            let (miss, miss_audits) = verdict(&policies, &case.miss);
            let at = format!("{field} under {action}");
            match action {
                "ALLOW" => {
                    assert_eq!(hit, Verdict::Allow, "{at}: the matching request");
                    assert!(
                        matches!(miss, Verdict::Deny(_)),
                        "{at}: the other request: {miss:?}"
                    );
                }
                "DENY" => {
                    assert!(
                        matches!(hit, Verdict::Deny(_)),
                        "{at}: the matching request: {hit:?}"
                    );
                    assert_eq!(miss, Verdict::Allow, "{at}: the other request");
                }
                "CUSTOM" => {
                    let checked =
                        matches!(&hit, Verdict::Check { provider, .. } if provider == "opa");
                    assert!(
                        checked,
                        "{at}: the matching request goes to the check: {hit:?}"
                    );
                    assert_eq!(
                        miss,
                        Verdict::Allow,
                        "{at}: the other request is not checked"
                    );
                }
                _ => {
                    assert_eq!(
                        (hit, miss),
                        (Verdict::Allow, Verdict::Allow),
                        "{at} decides nothing"
                    );
                    assert_eq!(
                        (hit_audits, miss_audits),
                        (1, 0),
                        "{at}: audited when matched"
                    );
                }
            }
        }
    }
}

/// `connection.sni` is never present at a waypoint (it terminates no caller TLS): `values`
/// never match, `notValues` always do.
#[test]
fn sni_values_never_match_at_a_waypoint() {
    let policies = compiled("ALLOW", &when("connection.sni", &["x.example"], &[]));
    assert!(matches!(verdict(&policies, &BASE).0, Verdict::Deny(_)));
    let policies = compiled("ALLOW", &when("connection.sni", &[], &["x.example"]));
    assert_eq!(verdict(&policies, &BASE).0, Verdict::Allow);
}
