//! HTTPRoute matching and weighted backend choice. Pure functions over the compiled rules; the
//! snapshot already orders rules by Gateway API precedence, so the first match wins.

use std::sync::Arc;

use mesh_config::{RouteBackend, RouteMatch, RouteRule};

use crate::request::attrs::RequestAttrs;

/// A rule that matched a request, and its match that held (the most specific, when several
/// do: a prefix rewrite replaces what it matched).
#[derive(Clone, Copy, Debug)]
pub struct Selected<'r> {
    pub rule: &'r Arc<RouteRule>,
    pub matched: &'r RouteMatch,
}

/// The first of `rules` (in precedence order) with a match that holds.
pub fn select_rule<'r>(
    rules: impl IntoIterator<Item = &'r Arc<RouteRule>>,
    req: &RequestAttrs<'_>,
) -> Option<Selected<'r>> {
    rules.into_iter().find_map(|rule| {
        let held = rule.matches.iter().filter(|m| matches(m, req));
        let matched = held.max_by_key(|m| m.rank())?;
        Some(Selected { rule, matched })
    })
}

/// All conditions of one match hold.
pub fn matches(m: &RouteMatch, req: &RequestAttrs<'_>) -> bool {
    m.path.matches(req.path)
        && m.method
            .as_deref()
            .is_none_or(|method| method.eq_ignore_ascii_case(req.method))
        && m.headers.iter().all(|h| {
            req.headers
                .get_all(h.name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| h.value.matches(v))
        })
        && m.query
            .iter()
            .all(|q| query_values(req.query, &q.name).any(|v| q.value.matches(v)))
}

fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = &'q str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The outcome of choosing among weighted backends.
#[derive(Debug)]
pub enum BackendChoice {
    /// The index of the chosen backendRef.
    Chosen(usize),
    /// Every weight is zero: Gateway API says 500.
    NoWeight,
}

/// Weighted choice; `roll` is uniform in `0..u64::MAX` (the caller supplies the randomness).
pub fn choose_backend(backends: &[RouteBackend], roll: u64) -> BackendChoice {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return BackendChoice::NoWeight;
    }
    let mut point = roll % total;
    for (index, backend) in backends.iter().enumerate() {
        let weight = u64::from(backend.weight);
        if point < weight {
            return BackendChoice::Chosen(index);
        }
        point -= weight;
    }
    BackendChoice::NoWeight
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use mesh_config::{Filters, HeaderMatch, ObjectRef, PathMatch, QueryMatch, ValueMatch};

    fn rule(matches: Vec<RouteMatch>) -> Arc<RouteRule> {
        Arc::new(RouteRule {
            route: ObjectRef {
                namespace: "default".into(),
                name: "r".into(),
            },
            rule_index: 0,
            matches,
            filters: Filters::default(),
            backends: Vec::new(),
            request_timeout: None,
            backend_request_timeout: None,
            retry: None,
        })
    }

    fn path(p: PathMatch) -> RouteMatch {
        RouteMatch {
            path: p,
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    fn backend(name: &str, weight: u32) -> RouteBackend {
        RouteBackend {
            name: name.into(),
            namespace: "default".into(),
            port: 9080,
            weight,
            service: None,
            filters: Filters::default(),
        }
    }

    #[test]
    fn all_conditions_of_a_match_must_hold() {
        let headers_ok: HeaderMap = [(
            http::header::HeaderName::from_static("x-user"),
            http::HeaderValue::from_static("jason"),
        )]
        .into_iter()
        .collect();
        let m = RouteMatch {
            path: PathMatch::Prefix("/api".into()),
            method: Some("GET".into()),
            headers: vec![HeaderMatch {
                name: "x-user".into(),
                value: ValueMatch::Exact("jason".into()),
            }],
            query: vec![QueryMatch {
                name: "v".into(),
                value: ValueMatch::Regex(regex::Regex::new("^(?:[0-9]+)$").expect("regex")),
            }],
        };
        let empty = HeaderMap::new();
        assert!(matches(
            &m,
            &RequestAttrs::new("GET", "/api/x?v=12", "", &headers_ok)
        ));
        assert!(!matches(
            &m,
            &RequestAttrs::new("POST", "/api/x?v=12", "", &headers_ok)
        ));
        assert!(!matches(
            &m,
            &RequestAttrs::new("GET", "/api/x?v=12", "", &empty)
        ));
        assert!(!matches(
            &m,
            &RequestAttrs::new("GET", "/api/x?v=abc", "", &headers_ok)
        ));
        assert!(!matches(
            &m,
            &RequestAttrs::new("GET", "/apix?v=1", "", &headers_ok)
        ));
    }

    #[test]
    fn first_rule_in_order_wins() {
        let rules = vec![
            rule(vec![path(PathMatch::Exact("/login".into()))]),
            rule(vec![path(PathMatch::Prefix("/".into()))]),
        ];
        let h = HeaderMap::new();
        let chosen =
            select_rule(&rules, &RequestAttrs::new("GET", "/login", "", &h)).expect("match");
        assert!(Arc::ptr_eq(chosen.rule, &rules[0]));
        let chosen = select_rule(&rules, &RequestAttrs::new("GET", "/x", "", &h)).expect("match");
        assert!(Arc::ptr_eq(chosen.rule, &rules[1]));
        assert!(select_rule(&rules[..1], &RequestAttrs::new("GET", "/x", "", &h)).is_none());
    }

    #[test]
    fn the_most_specific_match_that_holds_is_the_one_reported() {
        let rules = vec![rule(vec![
            path(PathMatch::Prefix("/foo".into())),
            path(PathMatch::Prefix("/foo/bar".into())),
        ])];
        let h = HeaderMap::new();
        let request = RequestAttrs::new("GET", "/foo/bar/x", "", &h);
        let chosen = select_rule(&rules, &request).expect("match");
        assert!(matches!(&chosen.matched.path, PathMatch::Prefix(p) if p == "/foo/bar"));
        let request = RequestAttrs::new("GET", "/foo/x", "", &h);
        let chosen = select_rule(&rules, &request).expect("match");
        assert!(matches!(&chosen.matched.path, PathMatch::Prefix(p) if p == "/foo"));
    }

    #[test]
    fn weights_split_the_roll_space() {
        let backends = vec![backend("v1", 90), backend("v2", 10)];
        let pick = |roll| match choose_backend(&backends, roll) {
            BackendChoice::Chosen(i) => backends[i].name.clone(),
            BackendChoice::NoWeight => "none".into(),
        };
        assert_eq!(pick(0), "v1");
        assert_eq!(pick(89), "v1");
        assert_eq!(pick(90), "v2");
        assert_eq!(pick(99), "v2");
        assert_eq!(pick(100), "v1");
        let v2 = (0..1000u64).filter(|r| pick(*r) == "v2").count();
        assert_eq!(v2, 100);
    }

    #[test]
    fn zero_weights_are_an_error() {
        let backends = vec![backend("v1", 0), backend("v2", 0)];
        assert!(matches!(
            choose_backend(&backends, 7),
            BackendChoice::NoWeight
        ));
        assert!(matches!(choose_backend(&[], 7), BackendChoice::NoWeight));
    }
}
