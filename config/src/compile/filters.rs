//! HTTPRoute filters, a rule's and a backendRef's → [`Filters`], with validation: each filter
//! carries the field its `type` names and no other, appears once (mirrors excepted), and
//! refers only to what exists.

use gateway_api::experimental::httproutes::{
    HttpRouteRulesFilters as Filter, HttpRouteRulesFiltersCors, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestRedirect, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePathType,
};
use http::{HeaderName, HeaderValue};

use super::routes::{RuleCx, ServiceMap, valid_header_name};
use crate::error::Reason;
use crate::filter::{
    Cors, Filters, HeaderModifier, Mirror, OriginPattern, PathRewrite, Redirect, Rewrite, Scheme,
};
use crate::model::ObjectRef;
use crate::route::{PathMatch, RouteMatch};

/// Where a filter list is written: CORS answers preflights for the whole rule, before a
/// backend is chosen, so it belongs on the rule only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    Rule,
    Backend,
}

/// What filters are checked against: the rule's matches (a prefix rewrite needs prefix
/// matches), the route's namespace and the Services (a mirror's backend).
pub(super) struct FilterScope<'a> {
    pub level: Level,
    pub matches: &'a [RouteMatch],
    pub namespace: &'a str,
    pub services: &'a ServiceMap,
}

/// A header modifier's lists as (name, value) pairs.
type Pairs = Vec<(String, String)>;

/// The `set`, `add` and `remove` lists of a request or a response header modifier (two types
/// that differ only in name), as [`Pairs`].
macro_rules! modifier_lists {
    ($modifier:expr) => {{
        let m = $modifier;
        let set: Option<Pairs> = (m.and_then(|m| m.set.as_ref())).map(|l| {
            l.iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect()
        });
        let add: Option<Pairs> = (m.and_then(|m| m.add.as_ref())).map(|l| {
            l.iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect()
        });
        (set, add, m.and_then(|m| m.remove.clone()))
    }};
}

impl RuleCx<'_> {
    /// Compiles `list`, written at `base` (e.g. `filters` or `backendRefs[0].filters`).
    pub(super) fn filters(&mut self, base: &str, list: &[Filter], scope: &FilterScope) -> Filters {
        let mut out = Filters::default();
        for (j, f) in list.iter().enumerate() {
            self.filter(&format!("{base}[{j}]"), f, scope, &mut out);
        }
        if out.redirect.is_some() && out.rewrite.is_some() {
            let msg = "RequestRedirect and URLRewrite cannot be used together";
            self.error(base, msg);
        }
        out
    }

    fn filter(&mut self, field: &str, f: &Filter, scope: &FilterScope, out: &mut Filters) {
        let kind = type_name(&f.r#type);
        let present = [
            ("requestHeaderModifier", f.request_header_modifier.is_some()),
            (
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            ("requestRedirect", f.request_redirect.is_some()),
            ("urlRewrite", f.url_rewrite.is_some()),
            ("requestMirror", f.request_mirror.is_some()),
            ("cors", f.cors.is_some()),
            ("extensionRef", f.extension_ref.is_some()),
            ("externalAuth", f.external_auth.is_some()),
        ];
        let own = field_of(&f.r#type);
        for (name, _) in present.iter().filter(|(name, set)| *set && *name != own) {
            self.error(
                &format!("{field}.{name}"),
                format!("must not be set when type is {kind}"),
            );
        }
        if !present.iter().any(|(name, set)| *set && *name == own) {
            self.error(
                &format!("{field}.{own}"),
                format!("required when type is {kind}"),
            );
            return;
        }
        let field_own = format!("{field}.{own}");
        let once = |cx: &mut Self, taken: bool| {
            if taken {
                let msg = format!("{kind} may appear once in a filter list");
                cx.error(&format!("{field}.type"), msg);
            }
        };
        let rule_only = |cx: &mut Self| {
            if scope.level == Level::Backend {
                let msg = format!("{kind} answers for the whole rule: set it on the rule");
                cx.error_because(Reason::UnsupportedValue, &format!("{field}.type"), msg);
            }
        };
        match f.r#type {
            FilterType::RequestHeaderModifier => {
                once(self, out.request_headers.is_some());
                let (set, add, remove) = modifier_lists!(f.request_header_modifier.as_ref());
                out.request_headers = Some(self.modifier(&field_own, set, add, remove));
            }
            FilterType::ResponseHeaderModifier => {
                once(self, out.response_headers.is_some());
                let (set, add, remove) = modifier_lists!(f.response_header_modifier.as_ref());
                out.response_headers = Some(self.modifier(&field_own, set, add, remove));
            }
            FilterType::RequestRedirect => {
                once(self, out.redirect.is_some());
                if let Some(r) = &f.request_redirect {
                    out.redirect = self.redirect(&field_own, r, scope);
                }
            }
            FilterType::UrlRewrite => {
                once(self, out.rewrite.is_some());
                if let Some(r) = &f.url_rewrite {
                    out.rewrite = Some(self.rewrite(&field_own, r, scope));
                }
            }
            FilterType::RequestMirror => {
                if let Some(m) = &f.request_mirror {
                    out.mirrors.extend(self.mirror(&field_own, m, scope));
                }
            }
            FilterType::Cors => {
                rule_only(self);
                once(self, out.cors.is_some());
                if let Some(c) = &f.cors {
                    out.cors = Some(self.cors(&field_own, c));
                }
            }
            FilterType::ExtensionRef => {
                let target = f.extension_ref.as_ref().map_or(String::new(), |e| {
                    format!(" ({}/{} {})", e.group, e.kind, e.name)
                });
                let msg = format!(
                    "ExtensionRef names an implementation-specific filter{target}; this \
                     waypoint defines none"
                );
                self.error_because(Reason::UnsupportedValue, &format!("{field}.type"), msg);
            }
            FilterType::ExternalAuth => {
                let msg = "ExternalAuth is not supported; authorize with an AuthorizationPolicy";
                self.error_because(Reason::UnsupportedValue, &format!("{field}.type"), msg);
            }
        }
    }

    /// Header names and values are parsed here, once, so applying the filter per request
    /// parses nothing.
    fn modifier(
        &mut self,
        field: &str,
        set: Option<Pairs>,
        add: Option<Pairs>,
        remove: Option<Vec<String>>,
    ) -> HeaderModifier {
        let mut pairs = |list: Option<Pairs>, key: &str| -> Vec<(HeaderName, HeaderValue)> {
            let mut out = Vec::new();
            for (i, (name, value)) in list.into_iter().flatten().enumerate() {
                let name = self.header_name(&format!("{field}.{key}[{i}].name"), &name);
                let value = match HeaderValue::from_str(&value) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        let msg = format!("invalid header value {value:?}");
                        self.error(&format!("{field}.{key}[{i}].value"), msg);
                        None
                    }
                };
                out.extend(name.zip(value));
            }
            out
        };
        let set = pairs(set, "set");
        let add = pairs(add, "add");
        let remove = (remove.into_iter().flatten().enumerate())
            .filter_map(|(i, name)| self.header_name(&format!("{field}.remove[{i}]"), &name))
            .collect();
        HeaderModifier { set, add, remove }
    }

    fn header_name(&mut self, field: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) if valid_header_name(name.as_str()) => Some(name),
            _ => {
                self.error(field, format!("invalid header name {name:?}"));
                None
            }
        }
    }

    fn redirect(
        &mut self,
        field: &str,
        r: &HttpRouteRulesFiltersRequestRedirect,
        scope: &FilterScope,
    ) -> Option<Redirect> {
        let scheme = r.scheme.as_ref().map(|s| match s {
            HttpRouteRulesFiltersRequestRedirectScheme::Http => Scheme::Http,
            HttpRouteRulesFiltersRequestRedirectScheme::Https => Scheme::Https,
        });
        let hostname =
            (r.hostname.as_deref()).and_then(|h| self.hostname(&format!("{field}.hostname"), h));
        let port = r.port.and_then(|p| self.port(&format!("{field}.port"), p));
        let path = r.path.as_ref().and_then(|p| {
            let prefix =
                p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch;
            self.path_rewrite(
                &format!("{field}.path"),
                prefix,
                p.replace_full_path.as_deref(),
                p.replace_prefix_match.as_deref(),
                scope,
            )
        });
        let status = r.status_code.unwrap_or(302);
        let Some(status) = u16::try_from(status)
            .ok()
            .filter(|s| [301, 302, 303, 307, 308].contains(s))
        else {
            let msg = format!("{status} is not 301, 302, 303, 307 or 308");
            self.error(&format!("{field}.statusCode"), msg);
            return None;
        };
        // A part that failed is reported; the rule is dropped with it.
        Some(Redirect {
            scheme,
            hostname,
            port,
            path,
            status,
        })
    }

    fn rewrite(
        &mut self,
        field: &str,
        r: &HttpRouteRulesFiltersUrlRewrite,
        scope: &FilterScope,
    ) -> Rewrite {
        let hostname = r
            .hostname
            .as_deref()
            .and_then(|h| self.hostname(&format!("{field}.hostname"), h));
        let path = r.path.as_ref().and_then(|p| {
            let prefix = p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch;
            self.path_rewrite(
                &format!("{field}.path"),
                prefix,
                p.replace_full_path.as_deref(),
                p.replace_prefix_match.as_deref(),
                scope,
            )
        });
        Rewrite { hostname, path }
    }

    /// A path modifier: the field its type names, and no other; a prefix replacement only
    /// where every match of the rule is a `PathPrefix` (else there is no prefix to replace).
    fn path_rewrite(
        &mut self,
        field: &str,
        prefix: bool,
        full: Option<&str>,
        replacement: Option<&str>,
        scope: &FilterScope,
    ) -> Option<PathRewrite> {
        let (own, other, own_value, other_value) = match prefix {
            true => ("replacePrefixMatch", "replaceFullPath", replacement, full),
            false => ("replaceFullPath", "replacePrefixMatch", full, replacement),
        };
        let kind = if prefix {
            "ReplacePrefixMatch"
        } else {
            "ReplaceFullPath"
        };
        if other_value.is_some() {
            let msg = format!("must not be set when type is {kind}");
            self.error(&format!("{field}.{other}"), msg);
        }
        let Some(value) = own_value else {
            self.error(
                &format!("{field}.{own}"),
                format!("required when type is {kind}"),
            );
            return None;
        };
        let starts_right = value.starts_with('/') || (prefix && value.is_empty());
        let clean = value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !starts_right || !clean {
            let msg = format!("{value:?} is not a path (starts with '/', no query, no spaces)");
            self.error(&format!("{field}.{own}"), msg);
            return None;
        }
        if prefix {
            for (k, m) in scope.matches.iter().enumerate() {
                if !matches!(m.path, PathMatch::Prefix(_)) {
                    let msg = format!(
                        "ReplacePrefixMatch needs every match of the rule to be a PathPrefix \
                         match; matches[{k}] is not"
                    );
                    self.error(&format!("{field}.type"), msg);
                    return None;
                }
            }
            return Some(PathRewrite::Prefix(value.to_string()));
        }
        Some(PathRewrite::Full(value.to_string()))
    }

    /// A DNS name (RFC 1123), stored lower-case.
    fn hostname(&mut self, field: &str, host: &str) -> Option<String> {
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.len() > 253 || !host.split('.').all(valid_label) {
            self.error(field, format!("{host:?} is not a valid hostname"));
            return None;
        }
        Some(host.to_ascii_lowercase())
    }

    fn mirror(
        &mut self,
        field: &str,
        m: &HttpRouteRulesFiltersRequestMirror,
        scope: &FilterScope,
    ) -> Option<Mirror> {
        let b = &m.backend_ref;
        let group = b.group.as_deref().unwrap_or("");
        let kind = b.kind.as_deref().unwrap_or("Service");
        if !matches!(group, "" | "core") || kind != "Service" {
            let msg = format!("unsupported backendRef kind {group:?}/{kind:?}");
            let field = format!("{field}.backendRef.kind");
            self.error_because(Reason::InvalidKind, &field, msg);
            return None;
        }
        let (numerator, denominator) = match (m.percent, &m.fraction) {
            (Some(_), Some(_)) => {
                self.error(field, "only one of percent and fraction may be set");
                return None;
            }
            (Some(p), None) if (0..=100).contains(&p) => (p, 100),
            (Some(p), None) => {
                let msg = format!("{p} is not within 0-100");
                self.error(&format!("{field}.percent"), msg);
                return None;
            }
            (None, Some(f)) => {
                let denominator = f.denominator.unwrap_or(100);
                if denominator < 1 || f.numerator < 0 || f.numerator > denominator {
                    let msg = format!(
                        "{}/{denominator} is not a fraction within 0..=1",
                        f.numerator
                    );
                    self.error(&format!("{field}.fraction"), msg);
                    return None;
                }
                (f.numerator, denominator)
            }
            (None, None) => (100, 100),
        };
        let Some(port) = b.port else {
            let field = format!("{field}.backendRef.port");
            self.error(&field, "required for a Service backend");
            return None;
        };
        let port = self.port(&format!("{field}.backendRef.port"), port)?;
        let namespace = b.namespace.as_deref().unwrap_or(scope.namespace);
        let key = ObjectRef::new(namespace, &b.name);
        let Some(service) = scope.services.get(&key) else {
            let msg = format!("Service {key} does not exist");
            let field = format!("{field}.backendRef.name");
            self.error_because(Reason::BackendNotFound, &field, msg);
            return None;
        };
        if service.port(port).is_none() {
            let msg = format!("Service {key} has no port {port}");
            let field = format!("{field}.backendRef.port");
            self.error_because(Reason::BackendNotFound, &field, msg);
            return None;
        }
        Some(Mirror {
            service: service.clone(),
            port,
            numerator: u32::try_from(numerator).ok()?,
            denominator: u32::try_from(denominator).ok()?,
        })
    }

    fn cors(&mut self, field: &str, c: &HttpRouteRulesFiltersCors) -> Cors {
        let mut allow_origins = Vec::new();
        for (i, origin) in c.allow_origins.iter().flatten().enumerate() {
            match OriginPattern::parse(origin) {
                Ok(pattern) => allow_origins.push(pattern),
                Err(e) => self.error(&format!("{field}.allowOrigins[{i}]"), e),
            }
        }
        let mut names = |key: &str, list: &Option<Vec<String>>| -> Vec<String> {
            let mut out = Vec::new();
            for (i, name) in list.iter().flatten().enumerate() {
                if name == "*" || valid_header_name(name) {
                    out.push(name.to_ascii_lowercase());
                } else {
                    let msg = format!("invalid header name {name:?}");
                    self.error(&format!("{field}.{key}[{i}]"), msg);
                }
            }
            out
        };
        let allow_headers = names("allowHeaders", &c.allow_headers);
        let expose_headers = names("exposeHeaders", &c.expose_headers);
        let mut allow_methods = Vec::new();
        for (i, method) in c.allow_methods.iter().flatten().enumerate() {
            if method == "*" || http::Method::from_bytes(method.as_bytes()).is_ok() {
                allow_methods.push(method.clone());
            } else {
                let msg = format!("invalid method {method:?}");
                self.error(&format!("{field}.allowMethods[{i}]"), msg);
            }
        }
        let max_age = match c.max_age {
            None => Cors::DEFAULT_MAX_AGE,
            Some(age) => u32::try_from(age).unwrap_or_else(|_| {
                self.error(&format!("{field}.maxAge"), format!("{age} is negative"));
                0
            }),
        };
        Cors {
            allow_origins,
            allow_credentials: c.allow_credentials.unwrap_or(false),
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
        }
    }
}

/// The manifest's spelling of a filter type.
fn type_name(kind: &FilterType) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// The field a filter of this type carries.
fn field_of(kind: &FilterType) -> &'static str {
    match kind {
        FilterType::RequestHeaderModifier => "requestHeaderModifier",
        FilterType::ResponseHeaderModifier => "responseHeaderModifier",
        FilterType::RequestMirror => "requestMirror",
        FilterType::RequestRedirect => "requestRedirect",
        FilterType::UrlRewrite => "urlRewrite",
        FilterType::ExtensionRef => "extensionRef",
        FilterType::Cors => "cors",
        FilterType::ExternalAuth => "externalAuth",
    }
}
