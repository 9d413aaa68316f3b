//! RequestAuthentication manifests → `RequestAuthentication`, with validation: an issuer, one
//! source of keys (an inline JWKS parsed now, or a `jwksUri`), token locations and output
//! headers that are valid header names.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::policies::{Attachment, Cx};
use crate::authn::{
    ClaimHeader, JwksUri, JwtRule, KeySet, Keys, RequestAuthentication, TokenLocation, claim_path,
};
use crate::error::{Diagnostics, Reason};
use crate::manifest::authn::JwtRuleSpec;
use crate::manifest::{AuthnObject, Doc};
use crate::policy::PolicyScope;

/// Envoy's default for fetching a remote JWKS (Istio's `timeout` unset).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Compiles every RequestAuthentication, sorted by namespace/name.
pub(crate) fn authentications(
    docs: &[Doc<AuthnObject>],
    diag: &mut Diagnostics,
) -> Vec<Arc<RequestAuthentication>> {
    let mut out = Vec::new();
    for doc in docs {
        let mut cx = Cx::new(&doc.origin, diag);
        let spec = &doc.obj.spec;
        let attachment = Attachment::of(&spec.selector, &spec.target_ref, &spec.target_refs);
        let scope = cx.scope(&doc.namespace, &attachment);
        if !matches!(scope, PolicyScope::TargetRefs(_)) {
            let msg = "only a waypoint validates JWTs, and it applies the RequestAuthentications \
                       whose targetRefs name its Gateway, GatewayClass or a Service it serves: \
                       without targetRefs this one has no effect";
            let field = match scope {
                PolicyScope::Selector(_) => "spec.selector",
                _ => "spec",
            };
            (cx.diag).warn_because(Reason::NoEffect, cx.origin, field, msg);
        }
        let rules = (spec.jwt_rules.iter().enumerate())
            .filter_map(|(i, rule)| jwt_rule(&mut cx, &format!("spec.jwtRules[{i}]"), rule))
            .map(Arc::new)
            .collect();
        if !cx.failed {
            out.push(Arc::new(RequestAuthentication {
                namespace: doc.namespace.clone(),
                name: doc.name.clone(),
                scope,
                rules,
            }));
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn jwt_rule(cx: &mut Cx<'_>, field: &str, spec: &JwtRuleSpec) -> Option<JwtRule> {
    let failed_before = cx.failed;
    cx.failed = false;
    if spec.issuer.is_empty() {
        cx.error(format!("{field}.issuer"), "required");
    }
    let keys = keys(cx, field, spec);
    let header = |cx: &mut Cx<'_>, field: String, name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| cx.error(field, format!("{name:?} is not a header name")))
            .ok()
    };
    let mut locations = Vec::new();
    for (i, h) in spec.from_headers.iter().enumerate() {
        if let Some(name) = header(cx, format!("{field}.fromHeaders[{i}].name"), &h.name) {
            let prefix = h.prefix.clone();
            locations.push(TokenLocation::Header { name, prefix });
        }
    }
    for (i, param) in spec.from_params.iter().enumerate() {
        match param.is_empty() {
            true => cx.error(format!("{field}.fromParams[{i}]"), "empty"),
            false => locations.push(TokenLocation::Param(param.clone())),
        }
    }
    for (i, cookie) in spec.from_cookies.iter().enumerate() {
        match cookie.is_empty() {
            true => cx.error(format!("{field}.fromCookies[{i}]"), "empty"),
            false => locations.push(TokenLocation::Cookie(cookie.clone())),
        }
    }
    if locations.is_empty() {
        locations = TokenLocation::defaults();
    }
    let output_payload_to_header = (spec.output_payload_to_header.as_deref())
        .filter(|name| !name.is_empty())
        .and_then(|name| header(cx, format!("{field}.outputPayloadToHeader"), name));
    let mut output_claim_to_headers = Vec::new();
    for (i, c) in spec.output_claim_to_headers.iter().enumerate() {
        let at = format!("{field}.outputClaimToHeaders[{i}]");
        if c.claim.is_empty() {
            cx.error(format!("{at}.claim"), "required");
        }
        if let Some(header) = header(cx, format!("{at}.header"), &c.header) {
            let claim = claim_path(&c.claim);
            output_claim_to_headers.push(ClaimHeader { header, claim });
        }
    }
    let failed = cx.failed;
    cx.failed |= failed_before;
    if failed {
        return None;
    }
    Some(JwtRule {
        issuer: spec.issuer.clone(),
        audiences: spec.audiences.clone(),
        keys: keys?,
        locations,
        output_payload_to_header,
        output_claim_to_headers,
        forward_original_token: spec.forward_original_token,
    })
}

/// The rule's keys: `jwks` parsed now, or `jwksUri` (http or https) to fetch.
fn keys(cx: &mut Cx<'_>, field: &str, spec: &JwtRuleSpec) -> Option<Keys> {
    let timeout = match spec.timeout.as_deref() {
        None => DEFAULT_JWKS_TIMEOUT,
        Some(text) => match super::istio_duration(text) {
            Ok(timeout) => timeout,
            Err(e) => {
                cx.error(format!("{field}.timeout"), e);
                return None;
            }
        },
    };
    match (spec.jwks.as_deref(), spec.jwks_uri.as_deref()) {
        (Some(_), Some(_)) => {
            cx.error(format!("{field}.jwks"), "give jwks or jwksUri, not both");
            None
        }
        (Some(jwks), None) => match KeySet::parse(jwks) {
            Ok(set) => Some(Keys::Inline(Arc::new(set))),
            Err(e) => {
                cx.error(format!("{field}.jwks"), e);
                None
            }
        },
        (None, Some(uri)) => match jwks_uri(uri) {
            Ok(uri) => Some(Keys::Remote(JwksUri {
                uri,
                discovery: false,
                timeout,
            })),
            Err(e) => {
                cx.error(format!("{field}.jwksUri"), e);
                None
            }
        },
        // Neither: the keys are found as Istio finds them, through the issuer's OpenID
        // discovery document, which needs an issuer that is a URL.
        (None, None) => {
            let document = format!(
                "{}/.well-known/openid-configuration",
                spec.issuer.trim_end_matches('/')
            );
            match jwks_uri(&document) {
                Ok(uri) => Some(Keys::Remote(JwksUri {
                    uri,
                    discovery: true,
                    timeout,
                })),
                Err(_) => {
                    let msg = format!(
                        "jwks or jwksUri is required: the issuer {:?} is not an http(s) URL, \
                         so its keys cannot be found through OpenID discovery",
                        spec.issuer
                    );
                    cx.error(format!("{field}.jwksUri"), msg);
                    None
                }
            }
        }
    }
}

/// A `jwksUri`: `http` or `https` with a host (fetched through the mesh, over HBONE, when the
/// host is a Service of the mesh).
fn jwks_uri(text: &str) -> Result<http::Uri, String> {
    let not_http = || format!("{text:?} is not an http:// or https:// URL with a host");
    let uri: http::Uri = text.parse().map_err(|e| format!("{}: {e}", not_http()))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(not_http()),
    }
}
