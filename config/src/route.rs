//! Compiled HTTPRoute rules, their match helpers and Gateway API precedence.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::filter::Filters;
use crate::model::{ObjectRef, Service};
use crate::rule_set::RuleSet;

/// A Service port's routes: the producer routes (in the Service's namespace, or attached to
/// its waypoint) and, per namespace, consumer routes, which replace the producer routes for
/// callers from that namespace (GEP-1294).
#[derive(Clone, Debug, Default)]
pub struct PortRoutes {
    pub producer: RuleSet,
    pub consumers: std::collections::BTreeMap<String, RuleSet>,
}

impl PortRoutes {
    /// The rules for a caller from `namespace`: its namespace's consumer routes if it has
    /// any, else the producer routes.
    pub fn for_caller(&self, namespace: &str) -> &RuleSet {
        self.consumers.get(namespace).unwrap_or(&self.producer)
    }
}

/// One HTTPRoute rule, compiled.
#[derive(Clone, Debug)]
pub struct RouteRule {
    pub route: ObjectRef,
    pub rule_index: usize,
    /// Never empty: a rule written without matches gets one `Prefix("/")` match.
    pub matches: Vec<RouteMatch>,
    pub filters: Filters,
    pub backends: Vec<RouteBackend>,
    /// `timeouts.request` (`0s` compiles to `None`: no timeout).
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest` (`0s` compiles to `None`).
    pub backend_request_timeout: Option<Duration>,
    /// `retry` (GEP-1731); `None`: the waypoint's default policy.
    pub retry: Option<RetryPolicy>,
}

/// A rule's `retry`, compiled: connection failures are retried, and responses with `codes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 turns retries off.
    pub attempts: u32,
    /// Response statuses retried (400-599).
    pub codes: Vec<u16>,
    /// The least wait before a retry; `None`: the waypoint's default.
    pub backoff: Option<Duration>,
}

impl RetryPolicy {
    /// Most `attempts` a route may ask for: more multiplies an outage without helping.
    pub const MAX_ATTEMPTS: u32 = 10;
    /// `attempts` when a route's `retry` leaves it out (as Istio).
    pub const DEFAULT_ATTEMPTS: u32 = 2;
}

/// One match: every condition must hold.
#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Upper-case method.
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".to_string()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }
}

/// Path condition. `Regex` is anchored (whole-path match).
#[derive(Clone, Debug)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

impl PathMatch {
    /// Whether `path` (without query string) matches. Prefixes match whole segments:
    /// `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => prefix_matches(p, path),
            Self::Regex(re) => re.is_match(path),
        }
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return path.starts_with('/') || path.is_empty();
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Header condition; `name` is lower-case.
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// Query parameter condition (name compared exactly).
#[derive(Clone, Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// Value condition. `Regex` is anchored (whole-value match).
#[derive(Clone, Debug)]
pub enum ValueMatch {
    Exact(String),
    Regex(regex::Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// One weighted backend of a rule.
#[derive(Clone, Debug)]
pub struct RouteBackend {
    pub name: String,
    pub namespace: String,
    pub port: u16,
    /// Default 1; 0 means never chosen.
    pub weight: u32,
    /// `None`: the Service does not exist; that share of traffic gets 500.
    pub service: Option<Arc<Service>>,
    /// Applied, after the rule's, only to requests this backend serves.
    pub filters: Filters,
}

/// How specific a match is; greater = higher precedence (Gateway API ordering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MatchRank {
    /// Exact 3, regex 2, prefix 1.
    pub path_kind: u8,
    /// Length of the exact path, prefix or regex source.
    pub path_len: usize,
    pub method: bool,
    pub headers: usize,
    pub query: usize,
}

impl RouteMatch {
    /// This match's precedence rank.
    pub fn rank(&self) -> MatchRank {
        let (path_kind, path_len) = match &self.path {
            PathMatch::Exact(p) => (3, p.len()),
            PathMatch::Regex(re) => (2, re.as_str().len()),
            PathMatch::Prefix(p) => (1, p.trim_end_matches('/').len()),
        };
        MatchRank {
            path_kind,
            path_len,
            method: self.method.is_some(),
            headers: self.headers.len(),
            query: self.query.len(),
        }
    }
}

impl RouteRule {
    /// The rank of this rule's most specific match.
    pub fn best_rank(&self) -> MatchRank {
        self.matches
            .iter()
            .map(RouteMatch::rank)
            .max()
            .unwrap_or_else(|| RouteMatch::default().rank())
    }
}

/// A rule with what precedence needs to know about its route.
#[derive(Clone, Debug)]
pub(crate) struct RankedRule {
    pub rule: Arc<RouteRule>,
    /// The route's creationTimestamp (absent sorts as oldest).
    pub created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Gateway API precedence: best match first (exact > regex > prefix, longer first, then method,
/// more headers, more query params), then older route, then namespace/name, then rule order.
pub(crate) fn precedence(a: &RankedRule, b: &RankedRule) -> Ordering {
    b.rule
        .best_rank()
        .cmp(&a.rule.best_rank())
        .then_with(|| a.created.cmp(&b.created))
        .then_with(|| a.rule.route.cmp(&b.rule.route))
        .then_with(|| a.rule.rule_index.cmp(&b.rule.rule_index))
}

/// Sorts rules by precedence.
pub(crate) fn sort_rules(rules: &mut [RankedRule]) {
    rules.sort_by(precedence);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_whole_segments() {
        let p = PathMatch::Prefix("/foo".into());
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        let slash = PathMatch::Prefix("/foo/".into());
        assert!(slash.matches("/foo/bar"));
        assert!(slash.matches("/foo"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn exact_beats_regex_beats_prefix_and_longer_prefix_wins() {
        let exact = RouteMatch {
            path: PathMatch::Exact("/a".into()),
            ..RouteMatch::default()
        };
        let re = RouteMatch {
            path: PathMatch::Regex(regex::Regex::new("^(?:/a.*)$").expect("valid")),
            ..RouteMatch::default()
        };
        let long = RouteMatch {
            path: PathMatch::Prefix("/a/b".into()),
            ..RouteMatch::default()
        };
        let short = RouteMatch {
            path: PathMatch::Prefix("/a".into()),
            method: Some("GET".into()),
            ..RouteMatch::default()
        };
        assert!(exact.rank() > re.rank());
        assert!(re.rank() > long.rank());
        assert!(long.rank() > short.rank());
        assert!(short.rank() > RouteMatch::default().rank());
    }
}
