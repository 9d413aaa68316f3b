//! A Service port's rules for one group of callers, in precedence order, indexed by path, so
//! that finding the rules a request could match does not scan them all: exact paths are
//! looked up whole, prefixes by each of the request path's segment boundaries, and only rules
//! with a regex path are tried for every request. The cost of a lookup follows the request's
//! path and the rules that could match it, not how many rules the port has.

use std::collections::HashMap;
use std::sync::Arc;

use crate::route::{PathMatch, RouteRule};

/// Up to this many rules, every rule is tried in order: cheaper than the index.
const SCAN_ALL_UP_TO: usize = 16;

/// Rules in precedence order, with the path index.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<RouteRule>>,
    /// Exact paths → the rules with a match on that path.
    exact: HashMap<String, Vec<usize>>,
    /// Prefixes without their trailing `/` (the root prefix is empty) → the rules with a
    /// match on that prefix.
    prefix: HashMap<String, Vec<usize>>,
    /// Rules with a regex path match: candidates for every path.
    regex: Vec<usize>,
}

impl RuleSet {
    /// Indexes `rules`, already in precedence order.
    pub fn new(rules: Vec<Arc<RouteRule>>) -> Self {
        let mut set = RuleSet {
            rules,
            ..RuleSet::default()
        };
        for (i, rule) in set.rules.iter().enumerate() {
            for m in &rule.matches {
                let slot = match &m.path {
                    PathMatch::Exact(p) => set.exact.entry(p.clone()).or_default(),
                    PathMatch::Prefix(p) => {
                        let key = p.trim_end_matches('/').to_owned();
                        set.prefix.entry(key).or_default()
                    }
                    PathMatch::Regex(_) => &mut set.regex,
                };
                if slot.last() != Some(&i) {
                    slot.push(i);
                }
            }
        }
        set
    }

    /// Every rule, in precedence order.
    pub fn rules(&self) -> &[Arc<RouteRule>] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules whose path condition could hold for `path` (no query string), in precedence
    /// order; a superset of those that match (their other conditions are the caller's to
    /// check). A small set is walked whole, with no allocation.
    pub fn candidates<'s>(&'s self, path: &str) -> Candidates<'s> {
        if self.rules.len() <= SCAN_ALL_UP_TO {
            return Candidates::All(self.rules.iter());
        }
        let mut found: Vec<usize> = self.regex.clone();
        found.extend(self.exact.get(path).into_iter().flatten());
        // Each place a segment ends is a prefix that could match: "", "/a", "/a/b" for "/a/b".
        let ends = (path.match_indices('/').map(|(at, _)| at)).chain([path.len()]);
        for end in ends {
            found.extend(self.prefix.get(&path[..end]).into_iter().flatten());
        }
        found.sort_unstable();
        found.dedup();
        Candidates::Indexed {
            rules: &self.rules,
            found: found.into_iter(),
        }
    }
}

/// The rules [`RuleSet::candidates`] found, in precedence order.
pub enum Candidates<'s> {
    All(std::slice::Iter<'s, Arc<RouteRule>>),
    Indexed {
        rules: &'s [Arc<RouteRule>],
        found: std::vec::IntoIter<usize>,
    },
}

impl<'s> Iterator for Candidates<'s> {
    type Item = &'s Arc<RouteRule>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Candidates::All(rules) => rules.next(),
            Candidates::Indexed { rules, found } => found.next().map(|i| &rules[i]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;
    use crate::route::RouteMatch;

    fn rule(index: usize, path: PathMatch) -> Arc<RouteRule> {
        Arc::new(RouteRule {
            route: ObjectRef::new("default", format!("r{index}")),
            rule_index: 0,
            matches: vec![RouteMatch {
                path,
                ..RouteMatch::default()
            }],
            filters: Default::default(),
            backends: Vec::new(),
            request_timeout: None,
            backend_request_timeout: None,
            retry: None,
        })
    }

    fn names<'s>(c: impl Iterator<Item = &'s Arc<RouteRule>>) -> Vec<String> {
        c.map(|r| r.route.name.clone()).collect()
    }

    /// Past the scan-all size, the candidates are exactly the rules whose path could match, in
    /// precedence order, whatever else the set holds.
    #[test]
    fn candidates_are_the_rules_a_path_could_match_in_order() {
        let mut rules: Vec<_> = (0..40)
            .map(|i| rule(i, PathMatch::Exact(format!("/exact/{i}"))))
            .collect();
        rules.push(rule(40, PathMatch::Prefix("/api/v1/".into())));
        rules.push(rule(
            41,
            PathMatch::Regex(regex::Regex::new("^/re.*$").expect("re")),
        ));
        rules.push(rule(42, PathMatch::Prefix("/api".into())));
        rules.push(rule(43, PathMatch::Prefix("/".into())));
        let set = RuleSet::new(rules);
        assert_eq!(names(set.candidates("/exact/7")), ["r7", "r41", "r43"]);
        assert_eq!(
            names(set.candidates("/api/v1/x")),
            ["r40", "r41", "r42", "r43"]
        );
        assert_eq!(
            names(set.candidates("/api/v1")),
            ["r40", "r41", "r42", "r43"]
        );
        assert_eq!(names(set.candidates("/api/v10")), ["r41", "r42", "r43"]);
        assert_eq!(names(set.candidates("/apiary")), ["r41", "r43"]);
        assert_eq!(set.rules().len(), 44);
    }

    fn path_match(kind: u8, segments: &[u8]) -> PathMatch {
        let path: String = segments.iter().map(|s| format!("/s{s}")).collect();
        match kind {
            0 => PathMatch::Exact(if path.is_empty() { "/".into() } else { path }),
            1 => PathMatch::Prefix(format!("{path}/")),
            2 => PathMatch::Prefix(if path.is_empty() { "/".into() } else { path }),
            _ => PathMatch::Regex(regex::Regex::new(&format!("^{path}.*$")).expect("re")),
        }
    }

    proptest::proptest! {
        /// Whatever the rules and the path, the first rule whose path condition holds is the
        /// same found through the index as by scanning every rule.
        #[test]
        fn the_index_finds_what_a_scan_finds(
            rules in proptest::collection::vec((0u8..4, proptest::collection::vec(0u8..3, 0..3)), 17..60),
            path in proptest::collection::vec(0u8..3, 0..4),
            trailing in proptest::bool::ANY,
        ) {
            let rules: Vec<_> = (rules.iter().enumerate())
                .map(|(i, (kind, segments))| rule(i, path_match(*kind, segments)))
                .collect();
            let set = RuleSet::new(rules.clone());
            let mut path: String = path.iter().map(|s| format!("/s{s}")).collect();
            if path.is_empty() || trailing {
                path.push('/');
            }
            let holds = |r: &&Arc<RouteRule>| r.matches.iter().any(|m| m.path.matches(&path));
            let scanned = rules.iter().find(holds).map(|r| r.route.name.clone());
            let indexed = set.candidates(&path).find(holds).map(|r| r.route.name.clone());
            proptest::prop_assert_eq!(scanned, indexed);
        }
    }

    #[test]
    fn a_small_set_is_scanned_whole() {
        let rules = vec![
            rule(0, PathMatch::Exact("/a".into())),
            rule(1, PathMatch::Exact("/b".into())),
        ];
        assert_eq!(names(RuleSet::new(rules).candidates("/z")), ["r0", "r1"]);
    }
}
