//! GRPCRoute → the HTTPRoute it means: a gRPC call is an HTTP/2 POST to
//! `/<package.Service>/<Method>`, so each service/method match becomes a path match (exact
//! where both are exact, else an anchored regex), and headers, filters and backendRefs carry
//! over as they are (GRPCRoute's are a subset of HTTPRoute's, field for field). The HTTPRoute
//! compilation, attachment, precedence and status then serve both kinds; problems found here
//! name the GRPCRoute's own fields.

use gateway_api::experimental::grpcroutes::{
    GrpcRoute, GrpcRouteRulesMatches, GrpcRouteRulesMatchesMethodType as MethodType,
};
use gateway_api::experimental::httproutes::HttpRoute;
use serde_json::{Value, json};

use crate::error::Diagnostics;
use crate::manifest::Doc;

/// The HTTPRoute `doc` means, keeping its origin and its rules' order (so problems still name
/// the GRPCRoute's fields). A match that cannot be expressed is reported to `diag`, which
/// refuses the config; the rest of the route is still translated, so it is checked too.
pub(crate) fn as_http_route(
    doc: &Doc<GrpcRoute>,
    diag: &mut Diagnostics,
) -> Option<Doc<HttpRoute>> {
    let spec = &doc.obj.spec;
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let mut matches = Vec::new();
        for (j, m) in rule.matches.iter().flatten().enumerate() {
            let field = format!("spec.rules[{i}].matches[{j}]");
            match http_match(m) {
                Ok(m) => matches.push(m),
                Err((at, message)) => diag.error(&doc.origin, format!("{field}.{at}"), message),
            }
        }
        let mut http_rule = json!({
            "filters": rule.filters,
            "backendRefs": rule.backend_refs,
            "sessionPersistence": rule.session_persistence,
            "name": rule.name,
        });
        if !matches.is_empty() {
            http_rule["matches"] = Value::Array(matches);
        }
        rules.push(strip_nulls(http_rule));
    }
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": doc.obj.metadata,
        "spec": strip_nulls(json!({
            "parentRefs": spec.parent_refs,
            "hostnames": spec.hostnames,
            "useDefaultGateways": spec.use_default_gateways,
            "rules": rules,
        })),
    });
    match serde_json::from_value::<HttpRoute>(route) {
        Ok(obj) => Some(Doc {
            origin: doc.origin.clone(),
            namespace: doc.namespace.clone(),
            name: doc.name.clone(),
            obj,
        }),
        Err(e) => {
            diag.error(
                &doc.origin,
                "spec",
                format!("cannot be read as a route: {e}"),
            );
            None
        }
    }
}

/// One GRPCRoute match as an HTTPRoute match; `Err((field, message))` when it cannot be.
fn http_match(m: &GrpcRouteRulesMatches) -> Result<Value, (String, String)> {
    let mut out = json!({});
    if let Some(headers) = &m.headers {
        out["headers"] = json!(headers);
    }
    let Some(method) = &m.method else {
        return Ok(out);
    };
    let service = method.service.as_deref().filter(|s| !s.is_empty());
    let name = method.method.as_deref().filter(|s| !s.is_empty());
    if service.is_none() && name.is_none() {
        let msg = "at least one of service and method must be set".to_owned();
        return Err(("method".to_owned(), msg));
    }
    let path = match method.r#type.as_ref().unwrap_or(&MethodType::Exact) {
        MethodType::Exact => {
            check(service, "service", valid_service)?;
            check(name, "method", valid_method)?;
            match (service, name) {
                (Some(s), Some(m)) => json!({"type": "Exact", "value": format!("/{s}/{m}")}),
                (s, m) => {
                    let part = |p: Option<&str>| p.map_or("[^/]+".to_owned(), regex::escape);
                    let value = format!("/{}/{}", part(s), part(m));
                    json!({"type": "RegularExpression", "value": value})
                }
            }
        }
        MethodType::RegularExpression => {
            for (at, re) in [("service", service), ("method", name)] {
                if let Some(re) = re
                    && let Err(e) = regex::Regex::new(re)
                {
                    return Err((format!("method.{at}"), format!("invalid regex {re:?}: {e}")));
                }
            }
            let part = |p: Option<&str>| p.map_or("[^/]+".to_owned(), |re| format!("(?:{re})"));
            let value = format!("/{}/{}", part(service), part(name));
            json!({"type": "RegularExpression", "value": value})
        }
    };
    out["path"] = path;
    Ok(out)
}

/// An exact service or method name: what GRPCRoute's schema allows.
fn check(value: Option<&str>, at: &str, valid: fn(&str) -> bool) -> Result<(), (String, String)> {
    match value {
        Some(v) if !valid(v) => Err((format!("method.{at}"), format!("invalid {at} name {v:?}"))),
        _ => Ok(()),
    }
}

/// `package.Service` (dot-separated identifiers, an optional leading dot).
fn valid_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(valid_method)
}

/// An identifier: a letter or `_`, then letters, digits or `_`.
fn valid_method(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Drops `null` fields (left-out optional fields), so the HTTPRoute reads as written.
fn strip_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::experimental::grpcroutes::GrpcRouteRulesMatchesMethod;

    fn method(
        kind: MethodType,
        service: Option<&str>,
        name: Option<&str>,
    ) -> GrpcRouteRulesMatches {
        GrpcRouteRulesMatches {
            headers: None,
            method: Some(GrpcRouteRulesMatchesMethod {
                method: name.map(str::to_owned),
                service: service.map(str::to_owned),
                r#type: Some(kind),
            }),
        }
    }

    fn path(m: GrpcRouteRulesMatches) -> Result<(String, String), String> {
        let v = http_match(&m).map_err(|(field, msg)| format!("{field}: {msg}"))?;
        let kind = v["path"]["type"].as_str().unwrap_or_default().to_owned();
        Ok((
            kind,
            v["path"]["value"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    #[test]
    fn service_and_method_become_the_grpc_path() {
        let exact = method(
            MethodType::Exact,
            Some("grpc.health.v1.Health"),
            Some("Check"),
        );
        assert_eq!(
            path(exact),
            Ok(("Exact".into(), "/grpc.health.v1.Health/Check".into()))
        );
        let service_only = method(MethodType::Exact, Some("pkg.Svc"), None);
        assert_eq!(
            path(service_only),
            Ok(("RegularExpression".into(), r"/pkg\.Svc/[^/]+".into()))
        );
        let method_only = method(MethodType::Exact, None, Some("Watch"));
        assert_eq!(
            path(method_only),
            Ok(("RegularExpression".into(), "/[^/]+/Watch".into()))
        );
        let regex = method(
            MethodType::RegularExpression,
            Some(r"pkg\.v[0-9]+\..*"),
            None,
        );
        assert_eq!(
            path(regex),
            Ok((
                "RegularExpression".into(),
                r"/(?:pkg\.v[0-9]+\..*)/[^/]+".into()
            ))
        );
    }

    #[test]
    fn bad_matches_name_their_field() {
        let neither = method(MethodType::Exact, None, None);
        assert!(path(neither).is_err_and(|e| e.starts_with("method: at least one")));
        let bad_service = method(MethodType::Exact, Some("pkg/Svc"), Some("M"));
        assert!(path(bad_service).is_err_and(|e| e.starts_with("method.service: invalid")));
        let bad_regex = method(MethodType::RegularExpression, None, Some("(open"));
        assert!(path(bad_regex).is_err_and(|e| e.starts_with("method.method: invalid regex")));
    }
}
