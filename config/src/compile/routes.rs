//! HTTPRoute rules → `RouteRule`s (matches, filters, backends, timeouts), with validation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HeaderType,
    HttpRouteRulesMatchesPathType as PathType, HttpRouteRulesMatchesQueryParamsType as QueryType,
    HttpRouteRulesRetry,
};
use regex::Regex;

use super::filters::{FilterScope, Level};
use crate::error::{Diagnostics, Origin, Reason};
use crate::filter::Filters;
use crate::manifest::Doc;
use crate::model::{ObjectRef, Service};
use crate::route::{
    HeaderMatch, PathMatch, QueryMatch, RetryPolicy, RouteBackend, RouteMatch, RouteRule,
    ValueMatch,
};

/// Largest weight Gateway API allows.
const MAX_WEIGHT: i32 = 1_000_000;

/// Services by namespace/name.
pub(crate) type ServiceMap = BTreeMap<ObjectRef, Arc<Service>>;

/// Compiles every rule of one route; `None` for rules with errors (reported to `diag`).
pub(crate) fn compile_route(
    doc: &Doc<HttpRoute>,
    services: &ServiceMap,
    diag: &mut Diagnostics,
) -> Vec<Arc<RouteRule>> {
    let route = ObjectRef::new(&doc.namespace, &doc.name);
    let rules = doc.obj.spec.rules.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut cx = RuleCx {
            origin: &doc.origin,
            prefix: format!("spec.rules[{i}]"),
            diag: &mut *diag,
            failed: false,
        };
        let compiled = cx.rule(&route, i, rule, services);
        if !cx.failed {
            out.push(Arc::new(compiled));
        }
    }
    out
}

pub(super) struct RuleCx<'a> {
    origin: &'a Origin,
    prefix: String,
    diag: &'a mut Diagnostics,
    failed: bool,
}

impl RuleCx<'_> {
    pub(super) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.error_because(Reason::Invalid, field, message);
    }

    pub(super) fn error_because(
        &mut self,
        reason: Reason,
        field: &str,
        message: impl Into<String>,
    ) {
        self.failed = true;
        let field = format!("{}.{field}", self.prefix);
        self.diag.error_because(reason, self.origin, field, message);
    }

    fn rule(
        &mut self,
        route: &ObjectRef,
        index: usize,
        rule: &HttpRouteRules,
        services: &ServiceMap,
    ) -> RouteRule {
        let mut matches: Vec<RouteMatch> = (rule.matches.iter().flatten().enumerate())
            .map(|(j, m)| self.route_match(j, m))
            .collect();
        if matches.is_empty() {
            matches.push(RouteMatch::default());
        }
        let scope = FilterScope {
            level: Level::Rule,
            matches: &matches,
            namespace: &route.namespace,
            services,
        };
        let filters = self.filters(
            "filters",
            rule.filters.as_deref().unwrap_or_default(),
            &scope,
        );
        let backends = (rule.backend_refs.iter().flatten().enumerate())
            .filter_map(|(j, b)| self.backend(j, b, &scope))
            .collect();
        let timeouts = rule.timeouts.as_ref();
        let request = timeouts.and_then(|t| t.request.as_deref());
        let backend = timeouts.and_then(|t| t.backend_request.as_deref());
        let request_timeout = self.duration("timeouts.request", request);
        let backend_request_timeout = self.duration("timeouts.backendRequest", backend);
        if let (Some(r), Some(b)) = (request_timeout, backend_request_timeout)
            && b > r
        {
            self.error(
                "timeouts.backendRequest",
                "must not exceed timeouts.request",
            );
        }
        let retry = rule.retry.as_ref().and_then(|r| self.retry(r));
        if rule.session_persistence.is_some() {
            self.error_because(
                Reason::UnsupportedValue,
                "sessionPersistence",
                "session persistence is not supported",
            );
        }
        RouteRule {
            route: route.clone(),
            rule_index: index,
            matches,
            filters,
            backends,
            request_timeout,
            backend_request_timeout,
            retry,
        }
    }

    /// `retry`: attempts within `0..=MAX_ATTEMPTS`, codes within 400-599 (as the Gateway API
    /// schema), a valid backoff.
    fn retry(&mut self, retry: &HttpRouteRulesRetry) -> Option<RetryPolicy> {
        let mut valid = true;
        let attempts = retry
            .attempts
            .unwrap_or(RetryPolicy::DEFAULT_ATTEMPTS.into());
        if !(0..=i64::from(RetryPolicy::MAX_ATTEMPTS)).contains(&attempts) {
            let max = RetryPolicy::MAX_ATTEMPTS;
            self.error(
                "retry.attempts",
                format!("{attempts} is not within 0..={max}"),
            );
            valid = false;
        }
        let mut codes = Vec::new();
        for (k, &code) in retry.codes.iter().flatten().enumerate() {
            match u16::try_from(code) {
                Ok(code) if (400..=599).contains(&code) => codes.push(code),
                _ => {
                    let field = format!("retry.codes[{k}]");
                    self.error(&field, format!("{code} is not a status within 400-599"));
                    valid = false;
                }
            }
        }
        let backoff = match retry.backoff.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                let text = retry.backoff.as_deref().unwrap_or_default();
                self.error("retry.backoff", format!("invalid duration {text:?}: {e}"));
                valid = false;
                None
            }
        };
        valid.then(|| RetryPolicy {
            attempts: u32::try_from(attempts).unwrap_or(0),
            codes,
            backoff,
        })
    }

    fn route_match(&mut self, j: usize, m: &HttpRouteRulesMatches) -> RouteMatch {
        let base = format!("matches[{j}]");
        let path = self.path(&base, m);
        let method = m.method.as_ref().map(|method| {
            let text = serde_json::to_value(method).ok();
            text.and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{method:?}").to_uppercase())
        });
        let mut headers = Vec::new();
        for (k, h) in m.headers.iter().flatten().enumerate() {
            let field = format!("{base}.headers[{k}]");
            if !valid_header_name(&h.name) {
                self.error(
                    &format!("{field}.name"),
                    format!("invalid header name {:?}", h.name),
                );
            }
            let regex = matches!(h.r#type, Some(HeaderType::RegularExpression));
            if let Some(value) = self.value(&format!("{field}.value"), &h.value, regex) {
                let name = h.name.to_ascii_lowercase();
                headers.push(HeaderMatch { name, value });
            }
        }
        let mut query = Vec::new();
        for (k, q) in m.query_params.iter().flatten().enumerate() {
            let field = format!("{base}.queryParams[{k}]");
            if q.name.is_empty() {
                self.error(&format!("{field}.name"), "must not be empty");
            }
            let regex = matches!(q.r#type, Some(QueryType::RegularExpression));
            if let Some(value) = self.value(&format!("{field}.value"), &q.value, regex) {
                query.push(QueryMatch {
                    name: q.name.clone(),
                    value,
                });
            }
        }
        RouteMatch {
            path,
            method,
            headers,
            query,
        }
    }

    fn path(&mut self, base: &str, m: &HttpRouteRulesMatches) -> PathMatch {
        let default = PathMatch::Prefix("/".to_string());
        let Some(path) = m.path.as_ref() else {
            return default;
        };
        let value = path.value.clone().unwrap_or_else(|| "/".to_string());
        let field = format!("{base}.path.value");
        match path.r#type.as_ref().unwrap_or(&PathType::PathPrefix) {
            PathType::RegularExpression => match anchored(&value) {
                Ok(re) => PathMatch::Regex(re),
                Err(e) => {
                    self.error(&field, format!("invalid regex {value:?}: {e}"));
                    default
                }
            },
            _ if !value.starts_with('/') => {
                self.error(&field, format!("path {value:?} must start with '/'"));
                default
            }
            PathType::Exact => PathMatch::Exact(value),
            PathType::PathPrefix => PathMatch::Prefix(value),
        }
    }

    fn value(&mut self, field: &str, value: &str, regex: bool) -> Option<ValueMatch> {
        if !regex {
            return Some(ValueMatch::Exact(value.to_string()));
        }
        match anchored(value) {
            Ok(re) => Some(ValueMatch::Regex(re)),
            Err(e) => {
                self.error(field, format!("invalid regex {value:?}: {e}"));
                None
            }
        }
    }

    fn backend(
        &mut self,
        j: usize,
        b: &HttpRouteRulesBackendRefs,
        rule: &FilterScope,
    ) -> Option<RouteBackend> {
        let field = format!("backendRefs[{j}]");
        let group = b.group.as_deref().unwrap_or("");
        let kind = b.kind.as_deref().unwrap_or("Service");
        if !matches!(group, "" | "core") || kind != "Service" {
            let msg = format!("unsupported backendRef kind {group:?}/{kind:?}");
            self.error_because(Reason::InvalidKind, &format!("{field}.kind"), msg);
            return None;
        }
        let filters = self.backend_filters(&format!("{field}.filters"), b, rule);
        let weight = b.weight.unwrap_or(1);
        if !(0..=MAX_WEIGHT).contains(&weight) {
            let msg = format!("invalid weight {weight}: must be 0-{MAX_WEIGHT}");
            self.error(&format!("{field}.weight"), msg);
        }
        let port = match b.port {
            None => {
                self.error(&format!("{field}.port"), "required for a Service backend");
                None
            }
            Some(p) => self.port(&format!("{field}.port"), p),
        };
        let namespace = (b.namespace.clone()).unwrap_or_else(|| rule.namespace.to_string());
        let key = ObjectRef::new(&namespace, &b.name);
        let service = rule.services.get(&key).cloned();
        match (&service, port) {
            (None, _) => {
                let msg = format!("Service {key} does not exist: its share of traffic gets 500");
                let field = format!("{}.{field}.name", self.prefix);
                (self.diag).warn_because(Reason::BackendNotFound, self.origin, field, msg);
            }
            (Some(svc), Some(p)) if svc.port(p).is_none() => {
                let msg = format!("Service {key} has no port {p}");
                let field = format!("{}.{field}.port", self.prefix);
                (self.diag).warn_because(Reason::BackendNotFound, self.origin, field, msg);
            }
            _ => {}
        }
        Some(RouteBackend {
            name: b.name.clone(),
            namespace,
            port: port?,
            weight: u32::try_from(weight).ok()?,
            service,
            filters,
        })
    }

    /// A backendRef's filters: the same schema as a rule's under another type name, read as a
    /// rule's; CORS is refused there.
    fn backend_filters(
        &mut self,
        field: &str,
        b: &HttpRouteRulesBackendRefs,
        rule: &FilterScope,
    ) -> Filters {
        let Some(list) = b.filters.as_ref().filter(|l| !l.is_empty()) else {
            return Filters::default();
        };
        let read = serde_json::to_value(list)
            .and_then(serde_json::from_value::<Vec<HttpRouteRulesFilters>>);
        match read {
            Ok(list) => {
                let scope = FilterScope {
                    level: Level::Backend,
                    ..*rule
                };
                self.filters(field, &list, &scope)
            }
            Err(e) => {
                self.error(field, format!("unreadable filters: {e}"));
                Filters::default()
            }
        }
    }

    pub(super) fn port(&mut self, field: &str, port: i32) -> Option<u16> {
        match u16::try_from(port) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(field, format!("invalid port {port}: must be 1-65535"));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, text: Option<&str>) -> Option<Duration> {
        let text = text?;
        match parse_duration(text) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                self.error(field, format!("invalid duration {text:?}: {e}"));
                None
            }
        }
    }
}

/// Parses a Gateway API duration (GEP-2257: `10s`, `500ms`, `1h30m`; no fractions, no
/// other units, no sign).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim().is_empty() {
        return Err("empty".to_string());
    }
    let parsed: gateway_api::Duration = text.parse()?;
    Ok(Duration::new(parsed.as_secs(), parsed.subsec_nanos()))
}

/// Compiles a regex that must match the whole value.
pub(crate) fn anchored(src: &str) -> Result<Regex, regex::Error> {
    Regex::new(src)?;
    Regex::new(&format!("^(?:{src})$"))
}

/// HTTP header name token characters.
pub(crate) fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        // GEP-2257 allows h, m, s, ms only, integers only.
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("2 weeks").is_err());
    }

    #[test]
    fn regexes_are_anchored() {
        let re = anchored("/api/v[0-9]+").expect("valid");
        assert!(re.is_match("/api/v2"));
        assert!(!re.is_match("/x/api/v2/y"));
        assert!(anchored("a|b").expect("valid").is_match("b"));
        assert!(anchored("(unclosed").is_err());
    }

    #[test]
    fn header_names() {
        assert!(valid_header_name("x-mesh-route"));
        assert!(!valid_header_name("bad header"));
        assert!(!valid_header_name(""));
    }
}
