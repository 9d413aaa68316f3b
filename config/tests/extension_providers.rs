//! The mesh config (ConfigMap istio-system/istio): ext_authz extension providers, their
//! validation, and what has no effect here.

mod common;

use common::*;
use mesh_config::ext_authz::{BodyInCheck, ExtAuthzApi};
use serde_json::{Value, json};

fn config_map(namespace: &str, name: &str, mesh: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace}, "data": {"mesh": mesh}})
}

fn with_authz(mesh: &str) -> Vec<Value> {
    let mut objs = with_svc([]);
    let mut authz = service("auth", "opa", "127.0.100.9", json!({"app": "opa"}));
    authz["spec"]["ports"] = json!([{"name": "grpc", "port": 9191, "targetPort": 9191}]);
    objs.push(authz);
    objs.push(config_map("istio-system", "istio", mesh));
    objs
}

#[test]
fn providers_compile_with_istios_defaults() {
    let snap = must_compile(&with_authz(
        r#"
extensionProviders:
- name: opa
  envoyExtAuthzGrpc: {service: opa.auth.svc.cluster.local, port: 9191}
- name: web
  envoyExtAuthzHttp:
    service: auth/opa.auth.svc.cluster.local
    port: "9191"
    timeout: 250ms
    failOpen: true
    statusOnError: "503"
    pathPrefix: /authz/
    includeHeadersInCheck: [cookie]
    includeRequestHeadersInCheck: [X-User, "x-ext-*"]
    includeAdditionalHeadersInCheck: {x-from: waypoint}
    headersToUpstreamOnAllow: ["*-id"]
    includeRequestBodyInCheck: {maxRequestBytes: 4096, allowPartialMessage: true}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"#,
    ));
    let opa = snap.ext_authz_provider("opa").expect("opa");
    assert_eq!((opa.service.name.as_str(), opa.port), ("opa", 9191));
    assert_eq!(opa.timeout, std::time::Duration::from_secs(600));
    assert_eq!((opa.fail_open, opa.status_on_error), (false, 403));
    assert!(matches!(opa.api, ExtAuthzApi::Grpc));
    assert_eq!(opa.request_body, None);
    let web = snap.ext_authz_provider("web").expect("web");
    assert_eq!(web.timeout, std::time::Duration::from_millis(250));
    assert_eq!((web.fail_open, web.status_on_error), (true, 503));
    assert_eq!(
        web.request_body,
        Some(BodyInCheck {
            max_bytes: 4096,
            allow_partial: true,
            pack_as_bytes: false
        })
    );
    let ExtAuthzApi::Http(check) = &web.api else {
        panic!("an HTTP provider");
    };
    assert_eq!(check.path_prefix, "/authz");
    assert_eq!(
        check.include_request_headers.len(),
        3,
        "the deprecated list too"
    );
    assert_eq!(check.additional_headers[0].0, "x-from");
    // A tracing provider is not an authorizer: warned of, not compiled.
    assert!(snap.ext_authz_provider("zipkin").is_none());
    let warned: Vec<&str> = snap.warnings().iter().map(|w| w.field.as_str()).collect();
    assert_eq!(warned, ["data.mesh.extensionProviders[2]"]);
}

#[test]
fn bad_providers_are_refused_naming_the_field() {
    let cases = [
        (
            "{service: nowhere.svc, port: 80}",
            "envoyExtAuthzGrpc.service",
            "no Service",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 0}",
            "envoyExtAuthzGrpc.port",
            "1-65535",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 1, timeout: soon}",
            "timeout",
            "invalid duration",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 1, statusOnError: teapot}",
            "statusOnError",
            "not an HTTP status",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 1, clearRouteCache: true}",
            "clearRouteCache",
            "not supported",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 1, includeRequestBodyInCheck: {allowPartialMessage: true}}",
            "includeRequestBodyInCheck.maxRequestBytes",
            "required",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 1, includeRequestBodyInCheck: {maxRequestBytes: 9000000000}}",
            "includeRequestBodyInCheck.maxRequestBytes",
            "1 to 8388608",
        ),
        (
            "{service: opa.auth.svc.cluster.local, port: 1, failopen: true}",
            "data.mesh.extensionProviders[0].envoyExtAuthzGrpc",
            "failopen",
        ),
    ];
    for (provider, field, why) in cases {
        let mesh = format!("extensionProviders:\n- name: p\n  envoyExtAuthzGrpc: {provider}\n");
        let errors = must_fail(&with_authz(&mesh));
        assert_error(&errors, &["ConfigMap istio-system/istio", field, why]);
    }
    let packed = "extensionProviders:\n- name: p\n  envoyExtAuthzHttp: {service: opa.auth.svc.cluster.local, port: 1, includeRequestBodyInCheck: {maxRequestBytes: 10, packAsBytes: true}}\n";
    assert_error(
        &must_fail(&with_authz(packed)),
        &["includeRequestBodyInCheck.packAsBytes", "only a gRPC check"],
    );
    let http = "extensionProviders:\n- name: p\n  envoyExtAuthzHttp: {service: opa.auth.svc.cluster.local, port: 1, headersToUpstreamOnAllow: ['*']}\n";
    assert_error(
        &must_fail(&with_authz(http)),
        &["headersToUpstreamOnAllow[0]", "not a header pattern"],
    );
    let twice = "extensionProviders:\n- {name: p, envoyExtAuthzGrpc: {service: opa.auth.svc.cluster.local, port: 1}}\n- {name: p, envoyExtAuthzGrpc: {service: opa.auth.svc.cluster.local, port: 1}}\n";
    assert_error(
        &must_fail(&with_authz(twice)),
        &["extensionProviders[1].name", "a second provider"],
    );
    assert_error(
        &must_fail(&with_authz("extensionProviders: [")),
        &["data.mesh", "not YAML"],
    );
}

#[test]
fn what_the_mesh_does_not_read_is_said_to_have_no_effect() {
    let mut objs = with_authz(
        "trustDomain: cluster.local\ndefaultConfig: {holdApplicationUntilProxyStarts: true}\n",
    );
    objs.push(config_map("default", "settings", "{}"));
    let snap = must_compile(&objs);
    let warned: Vec<(&str, &str)> = (snap.warnings().iter())
        .map(|w| (w.object.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned[0].0 == "ConfigMap istio-system/istio"
            && warned[0].1.starts_with("defaultConfig configure istiod"),
        "{warned:?}"
    );
    assert!(
        warned[1].0 == "ConfigMap default/settings" && warned[1].1.contains("no effect"),
        "{warned:?}"
    );
}

#[test]
fn a_custom_policy_naming_a_known_provider_compiles_quietly() {
    let mut objs = with_authz(
        "extensionProviders:\n- {name: opa, envoyExtAuthzGrpc: {service: opa.auth.svc.cluster.local, port: 9191}}\n",
    );
    objs.push(policy(
        "default",
        "ext",
        json!({"action": "CUSTOM", "provider": {"name": "opa"},
        "targetRefs": [{"kind": "Service", "group": "", "name": "svc"}], "rules": [{}]}),
    ));
    let snap = must_compile(&objs);
    assert!(snap.warnings().is_empty(), "{:?}", snap.warnings());
    let custom = snap.policies().find(|p| p.name == "ext").expect("compiled");
    assert_eq!(custom.provider.as_deref(), Some("opa"));
    let misplaced = policy(
        "default",
        "allow",
        json!({"provider": {"name": "opa"}, "rules": [{}]}),
    );
    let mut objs = with_authz("{}");
    objs.push(misplaced);
    assert_error(
        &must_fail(&objs),
        &[
            "AuthorizationPolicy default/allow",
            "spec.provider",
            "only a CUSTOM policy",
        ],
    );
}
