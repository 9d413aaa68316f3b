//! RequestAuthentication: attachment to waypoints, validation, and what it changes for policies
//! that read a JWT.

mod common;

use common::*;
use mesh_config::ObjectRef;
use mesh_config::authn::{Keys, TokenLocation};
use serde_json::{Value, json};

/// A JWKS with one P-256 key (RFC 7517's example key).
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

fn mesh() -> Vec<Value> {
    let mut objs = waypoint_and_two_services();
    objs.push(pod("default", "web", "127.0.1.10", json!({"app": "web"})));
    objs
}

fn jwt_rule(extra: Value) -> Value {
    let mut rule = json!({"issuer": "https://issuer.example", "jwks": JWKS});
    rule.as_object_mut()
        .expect("object")
        .extend(extra.as_object().cloned().unwrap_or_default());
    rule
}

fn on(kind: &str, name: &str, rule: Value) -> Value {
    let group = if kind == "Service" {
        ""
    } else {
        "gateway.networking.k8s.io"
    };
    json!({"targetRefs": [{"group": group, "kind": kind, "name": name}], "jwtRules": [rule]})
}

#[test]
fn authentications_attach_to_waypoints_as_policies_do() {
    let mut objs = mesh();
    let remote = json!({"issuer": "https://b.example", "jwksUri": "http://keys.auth:8080/jwks.json", "timeout": "2s"});
    objs.push(request_authentication(
        "default",
        "on-gateway",
        on("Gateway", "wp", jwt_rule(json!({}))),
    ));
    objs.push(request_authentication(
        "default",
        "on-web",
        on("Service", "web", remote.clone()),
    ));
    objs.push(request_authentication(
        "istio-system",
        "on-class",
        on("GatewayClass", "istio-waypoint", remote),
    ));
    let snap = must_compile(&objs);
    let wp = ObjectRef::new("default", "wp");
    let names = |service: Option<&str>| -> Vec<String> {
        let service = service.map(|s| snap.service("default", s).expect("service").as_ref());
        (snap.waypoint_authentications(&wp, service).iter())
            .map(|a| format!("{}/{}", a.namespace, a.name))
            .collect()
    };
    assert_eq!(
        names(Some("web")),
        [
            "default/on-gateway",
            "default/on-web",
            "istio-system/on-class"
        ]
    );
    assert_eq!(
        names(Some("db")),
        ["default/on-gateway", "istio-system/on-class"]
    );
    assert_eq!(names(None), ["default/on-gateway", "istio-system/on-class"]);
    // The fetcher's list: each jwksUri once.
    let uris = snap.waypoint_jwks_uris(&wp);
    assert_eq!(uris.len(), 1);
    assert_eq!(uris[0].uri, "http://keys.auth:8080/jwks.json");
    assert_eq!(uris[0].timeout, std::time::Duration::from_secs(2));
    // Istio's default token locations, and the inline key set parsed.
    let rule = &snap.authentications().next().expect("one").rules[0];
    assert_eq!(rule.locations, TokenLocation::defaults());
    assert!(matches!(&rule.keys, Keys::Inline(set) if set.len() == 1));
    assert!(!rule.forward_original_token);
}

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let cases = [
        (json!({"issuer": ""}), "spec.jwtRules[0].issuer", "required"),
        (
            json!({"jwksUri": "http://k/j"}),
            "spec.jwtRules[0].jwks",
            "not both",
        ),
        (
            json!({"jwks": "{\"keys\": []}"}),
            "spec.jwtRules[0].jwks",
            "no key in the JWKS",
        ),
        (
            json!({"jwks": "<html>"}),
            "spec.jwtRules[0].jwks",
            "not a JWKS document",
        ),
        (
            json!({"fromHeaders": [{"name": "bad header"}]}),
            "fromHeaders[0].name",
            "not a header name",
        ),
        (json!({"fromParams": [""]}), "fromParams[0]", "empty"),
        (
            json!({"outputClaimToHeaders": [{"header": "x-a", "claim": ""}]}),
            "outputClaimToHeaders[0].claim",
            "required",
        ),
        (
            json!({"timeout": "soon"}),
            "spec.jwtRules[0].timeout",
            "invalid duration",
        ),
        (json!({"audience": ["a"]}), "spec", "audience"),
    ];
    for (extra, field, why) in cases {
        let mut objs = mesh();
        objs.push(request_authentication(
            "default",
            "bad",
            on("Gateway", "wp", jwt_rule(extra.clone())),
        ));
        let errors = must_fail(&objs);
        assert_error(&errors, &["RequestAuthentication default/bad", field, why]);
    }
    let keyless = |uri: Option<&str>| {
        let mut rule = json!({"issuer": "https://issuer.example"});
        if let Some(uri) = uri {
            rule["jwksUri"] = json!(uri);
        }
        let mut objs = mesh();
        objs.push(request_authentication(
            "default",
            "bad",
            on("Gateway", "wp", rule),
        ));
        must_fail(&objs)
    };
    // Neither jwks nor jwksUri: found through OpenID discovery, which needs an issuer URL.
    let mut objs = mesh();
    let rule = json!({"issuer": "https://issuer.example/"});
    objs.push(request_authentication(
        "default",
        "oidc",
        on("Gateway", "wp", rule),
    ));
    let snap = must_compile(&objs);
    let uris = snap.waypoint_jwks_uris(&ObjectRef::new("default", "wp"));
    assert_eq!(uris.len(), 1);
    assert!(uris[0].discovery);
    assert_eq!(
        uris[0].uri,
        "https://issuer.example/.well-known/openid-configuration"
    );
    let mut objs = mesh();
    let rule = json!({"issuer": "team-a"});
    objs.push(request_authentication(
        "default",
        "bad",
        on("Gateway", "wp", rule),
    ));
    assert_error(
        &must_fail(&objs),
        &["jwksUri", "jwks or jwksUri is required", "OpenID discovery"],
    );
    for bad in ["file:///etc/keys", "https:///keys", "keys.example/jwks"] {
        assert_error(
            &keyless(Some(bad)),
            &["jwksUri", "not an http:// or https:// URL"],
        );
    }
}

#[test]
fn an_authentication_no_waypoint_applies_warns() {
    let mut objs = mesh();
    let rules =
        json!({"selector": {"matchLabels": {"app": "web"}}, "jwtRules": [jwt_rule(json!({}))]});
    objs.push(request_authentication("default", "sidecar-style", rules));
    objs.push(request_authentication(
        "default",
        "namespace-wide",
        json!({"jwtRules": [jwt_rule(json!({}))]}),
    ));
    let snap = must_compile(&objs);
    let warned: Vec<(&str, &str)> = (snap.warnings().iter())
        .filter(|w| w.message.contains("has no effect"))
        .map(|w| (w.object.as_str(), w.field.as_str()))
        .collect();
    assert_eq!(
        warned,
        [
            (
                "RequestAuthentication default/sidecar-style",
                "spec.selector"
            ),
            ("RequestAuthentication default/namespace-wide", "spec"),
        ]
    );
    let wp = ObjectRef::new("default", "wp");
    assert!(snap.waypoint_authentications(&wp, None).is_empty());
}

/// Policy fields that read a request's JWT warn where no RequestAuthentication is (its
/// namespace's or the root namespace's): no request has a verified token there.
#[test]
fn jwt_fields_warn_only_where_no_authentication_is() {
    let jwt_policy = policy(
        "default",
        "jwt",
        json!({"targetRefs": [{"kind": "Service", "group": "", "name": "web"}],
               "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}],
                          "when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}]}),
    );
    let warned = |objs: &[Value]| -> Vec<String> {
        (must_compile(objs).warnings().iter())
            .filter(|w| w.object == "AuthorizationPolicy default/jwt")
            .map(|w| w.field.clone())
            .collect()
    };
    let mut objs = mesh();
    objs.push(jwt_policy.clone());
    assert_eq!(
        warned(&objs),
        [
            "spec.rules[0].from[0].source.requestPrincipals",
            "spec.rules[0].when[0].key"
        ]
    );
    for namespace in ["default", "istio-system"] {
        let mut objs = mesh();
        objs.push(jwt_policy.clone());
        let class = on("GatewayClass", "istio-waypoint", jwt_rule(json!({})));
        let spec = match namespace {
            "default" => on("Gateway", "wp", jwt_rule(json!({}))),
            _ => class,
        };
        objs.push(request_authentication(namespace, "jwt", spec));
        assert!(warned(&objs).is_empty(), "with one in {namespace}");
    }
}
