//! HTTPRoute filters: each kind compiled, on rules and on backendRefs, and every way to get
//! one wrong refused naming its field.

mod common;

use common::*;
use mesh_config::{OriginPattern, PathRewrite, Redirect, Rewrite, Scheme};
use serde_json::{Value, json};

fn parent() -> Value {
    json!([{"group": "", "kind": "Service", "name": "svc", "port": 80}])
}

fn backend() -> Value {
    json!([{"name": "svc", "port": 80}])
}

fn compile_rules(rules: Value) -> mesh_config::Snapshot {
    must_compile(&with_svc([http_route("default", "r", parent(), rules)]))
}

#[test]
fn every_filter_kind_compiles() {
    let snap = compile_rules(json!([{
        "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "filters": [
            {"type": "URLRewrite", "urlRewrite": {
                "hostname": "New.Example",
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}},
            {"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "svc", "port": 80}, "percent": 20}},
            {"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "svc", "port": 80},
                "fraction": {"numerator": 1, "denominator": 3}}},
            {"type": "CORS", "cors": {
                "allowOrigins": ["https://*.foo.com", "*"],
                "allowMethods": ["GET", "*"],
                "allowHeaders": ["X-Header-1"],
                "allowCredentials": true}}
        ],
        "backendRefs": [{"name": "svc", "port": 80, "filters": [
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "set": [{"name": "backend", "value": "svc"}]}}
        ]}]
    }, {
        "matches": [{"path": {"type": "Exact", "value": "/moved"}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": {
            "scheme": "https", "port": 8443, "statusCode": 301,
            "path": {"type": "ReplaceFullPath", "replaceFullPath": "/elsewhere"}}}]
    }, {
        "matches": [{"path": {"type": "PathPrefix", "value": "/plain"}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": {}}]
    }]));
    let svc = snap.service("default", "svc").expect("svc");
    let rules = snap.routes(svc, 80);
    let by_index = |i| {
        rules
            .iter()
            .find(|r| r.rule_index == i)
            .expect("rule")
            .clone()
    };
    let rewrite = by_index(0);
    assert_eq!(
        rewrite.filters.rewrite,
        Some(Rewrite {
            hostname: Some("new.example".into()),
            path: Some(PathRewrite::Prefix("/new".into())),
        })
    );
    let shares: Vec<_> = (rewrite.filters.mirrors.iter())
        .map(|m| (m.service.name.as_str(), m.port, m.numerator, m.denominator))
        .collect();
    assert_eq!(shares, [("svc", 80, 20, 100), ("svc", 80, 1, 3)]);
    let cors = rewrite.filters.cors.as_ref().expect("cors");
    assert_eq!(cors.allow_origins[1], OriginPattern::Any);
    assert!(cors.allows_origin("https://a.b.foo.com"));
    assert_eq!(cors.allow_headers, ["x-header-1"]);
    assert_eq!(cors.max_age, 5, "Gateway API's default");
    assert!(cors.allow_credentials);
    let backend_filters = &rewrite.backends[0].filters;
    assert!(backend_filters.response_headers.is_some());
    assert!(rewrite.filters.response_headers.is_none());
    assert_eq!(
        by_index(1).filters.redirect,
        Some(Redirect {
            scheme: Some(Scheme::Https),
            hostname: None,
            port: Some(8443),
            path: Some(PathRewrite::Full("/elsewhere".into())),
            status: 301,
        })
    );
    let plain = by_index(2).filters.redirect.clone().expect("redirect");
    assert_eq!(plain.status, 302, "the default status");
    assert!(plain.scheme.is_none() && plain.hostname.is_none() && plain.path.is_none());
}

#[test]
fn a_redirect_may_sit_on_a_backend_ref() {
    let snap = compile_rules(json!([{
        "matches": [{"path": {"type": "PathPrefix", "value": "/prefix"}}],
        "backendRefs": [{"name": "svc", "port": 80, "filters": [
            {"type": "RequestRedirect", "requestRedirect": {"path": {
                "type": "ReplacePrefixMatch", "replacePrefixMatch": "/redirected"}}}
        ]}]
    }]));
    let svc = snap.service("default", "svc").expect("svc");
    let redirect = snap.routes(svc, 80)[0].backends[0].filters.redirect.clone();
    let path = redirect.and_then(|r| r.path);
    assert_eq!(path, Some(PathRewrite::Prefix("/redirected".into())));
}

/// Each mistake is refused naming the object and the field, with a reason.
#[test]
fn bad_filters_are_refused_naming_the_field() {
    let rules = json!([
        // 0: both paths of a redirect.
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {
            "type": "ReplaceFullPath", "replaceFullPath": "/a", "replacePrefixMatch": "/b"}}}]},
        // 1: a prefix rewrite where a match is exact.
        {"matches": [{"path": {"type": "Exact", "value": "/x"}}],
         "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/y"}}}],
         "backendRefs": backend()},
        // 2: a mirror to a Service that does not exist.
        {"filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "ghost", "port": 80}}}], "backendRefs": backend()},
        // 3: percent and fraction both.
        {"filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "svc", "port": 80}, "percent": 10,
            "fraction": {"numerator": 1}}}], "backendRefs": backend()},
        // 4: an extension this waypoint does not have.
        {"filters": [{"type": "ExtensionRef", "extensionRef": {
            "group": "example.com", "kind": "Magic", "name": "m"}}], "backendRefs": backend()},
        // 5: the field of another type.
        {"filters": [{"type": "RequestHeaderModifier", "urlRewrite": {}}],
         "backendRefs": backend()},
        // 6: a redirect and a rewrite together.
        {"filters": [
            {"type": "RequestRedirect", "requestRedirect": {"hostname": "a.example"}},
            {"type": "URLRewrite", "urlRewrite": {"hostname": "b.example"}}]},
        // 7: the same modifier twice.
        {"filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["a"]}},
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["b"]}}],
         "backendRefs": backend()},
        // 8: CORS on a backendRef.
        {"backendRefs": [{"name": "svc", "port": 80, "filters": [
            {"type": "CORS", "cors": {"allowOrigins": ["*"]}}]}]},
        // 9: an origin that is not one.
        {"filters": [{"type": "CORS", "cors": {"allowOrigins": ["foo.com"]}}],
         "backendRefs": backend()},
        // 10: a status a redirect cannot have.
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 305}}]},
        // 11: a hostname that is not one.
        {"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "bad host"}}],
         "backendRefs": backend()},
        // 12: ExternalAuth.
        {"filters": [{"type": "ExternalAuth", "externalAuth": {
            "protocol": "HTTP", "backendRef": {"name": "svc", "port": 80}}}],
         "backendRefs": backend()},
        // 13: a full path that is not a path.
        {"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplaceFullPath", "replaceFullPath": "x?y"}}}], "backendRefs": backend()}
    ]);
    let errors = must_fail(&with_svc([http_route("default", "r", parent(), rules)]));
    let expected: [&[&str]; 14] = [
        &[
            "spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch",
            "must not be set when type is ReplaceFullPath",
        ],
        &[
            "spec.rules[1].filters[0].urlRewrite.path.type",
            "every match of the rule to be a PathPrefix",
        ],
        &[
            "spec.rules[2].filters[0].requestMirror.backendRef.name",
            "Service default/ghost does not exist",
        ],
        &[
            "spec.rules[3].filters[0].requestMirror",
            "only one of percent and fraction",
        ],
        &[
            "spec.rules[4].filters[0].type",
            "ExtensionRef",
            "example.com/Magic m",
        ],
        &[
            "spec.rules[5].filters[0].urlRewrite",
            "must not be set when type is RequestHeaderModifier",
        ],
        &[
            "spec.rules[6].filters",
            "RequestRedirect and URLRewrite cannot be used together",
        ],
        &[
            "spec.rules[7].filters[1].type",
            "RequestHeaderModifier may appear once",
        ],
        &[
            "spec.rules[8].backendRefs[0].filters[0].type",
            "CORS answers for the whole rule",
        ],
        &[
            "spec.rules[9].filters[0].cors.allowOrigins[0]",
            "is not <scheme>://<host>",
        ],
        &[
            "spec.rules[10].filters[0].requestRedirect.statusCode",
            "305 is not",
        ],
        &[
            "spec.rules[11].filters[0].urlRewrite.hostname",
            "not a valid hostname",
        ],
        &["spec.rules[12].filters[0].type", "ExternalAuth"],
        &[
            "spec.rules[13].filters[0].urlRewrite.path.replaceFullPath",
            "is not a path",
        ],
    ];
    for needles in expected {
        let mut all = vec!["test.yaml", "HTTPRoute default/r"];
        all.extend_from_slice(needles);
        assert_error(&errors, &all);
    }
    // The same filter missing its field.
    let missing = json!([{"filters": [{"type": "RequestMirror"}], "backendRefs": backend()}]);
    let errors = must_fail(&with_svc([http_route("default", "r", parent(), missing)]));
    assert_error(
        &errors,
        &[
            "spec.rules[0].filters[0].requestMirror",
            "required when type is RequestMirror",
        ],
    );
}
