//! What a Gateway API controller would write in each route's `status.parents[]`: for every
//! parentRef, the `Accepted` and `ResolvedRefs` conditions, derived from the problems found
//! while compiling (no API server runs locally; `mesh validate` prints these and `mesh up`
//! logs them on each reload). Pure.

use std::fmt;

use crate::error::ConfigError;

/// A route and the parents it names, as compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteParents {
    /// `HTTPRoute default/reviews`, as problems name their object.
    pub route: String,
    /// Each parentRef, described (`Service default/reviews port 9080`).
    pub parents: Vec<String>,
}

/// One condition: `status`, `reason`, and the message of the problem that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// One parentRef's conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentStatus {
    pub parent: String,
    pub accepted: Condition,
    pub resolved_refs: Condition,
}

/// A route's `status.parents[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStatus {
    pub route: String,
    pub parents: Vec<ParentStatus>,
}

impl RouteStatus {
    /// Whether every parent accepted the route with every reference resolved.
    pub fn is_clean(&self) -> bool {
        (self.parents.iter()).all(|p| p.accepted.status && p.resolved_refs.status)
    }
}

/// The statuses of `routes`, given the `problems` (warnings; a config with errors is not
/// served) found while compiling them: a problem under `spec.parentRefs[i]` sets that
/// parent's conditions, any other problem of the route sets every parent's.
pub fn route_statuses(routes: &[RouteParents], problems: &[ConfigError]) -> Vec<RouteStatus> {
    routes
        .iter()
        .map(|r| {
            let own: Vec<&ConfigError> = problems.iter().filter(|p| p.object == r.route).collect();
            let parents = (r.parents.iter().enumerate())
                .map(|(i, parent)| {
                    let prefix = format!("spec.parentRefs[{i}]");
                    let applies = |p: &&&ConfigError| {
                        !p.field.starts_with("spec.parentRefs") || p.field.starts_with(&prefix)
                    };
                    let relevant: Vec<&ConfigError> = own.iter().filter(applies).copied().collect();
                    ParentStatus {
                        parent: parent.clone(),
                        accepted: condition(&relevant, "Accepted"),
                        resolved_refs: condition(&relevant, "ResolvedRefs"),
                    }
                })
                .collect();
            RouteStatus {
                route: r.route.clone(),
                parents,
            }
        })
        .collect()
}

/// `kind` is `True` (reason `kind`) unless one of `problems` sets it `False`.
fn condition(problems: &[&ConfigError], kind: &'static str) -> Condition {
    let failed =
        (problems.iter()).find_map(|p| Some((p, p.reason.condition().filter(|c| c.0 == kind)?.1)));
    match failed {
        Some((p, reason)) => Condition {
            status: false,
            reason,
            message: format!("{}: {}", p.field, p.message),
        },
        None => Condition {
            status: true,
            reason: kind,
            message: String::new(),
        },
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.status { "True" } else { "False" };
        match self.message.is_empty() {
            true => write!(f, "{status} ({})", self.reason),
            false => write!(f, "{status} ({}: {})", self.reason, self.message),
        }
    }
}

impl fmt::Display for RouteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.route)?;
        if self.parents.is_empty() {
            write!(f, ": no parentRefs")?;
        }
        for p in &self.parents {
            write!(
                f,
                "\n  parent {}: Accepted={}, ResolvedRefs={}",
                p.parent, p.accepted, p.resolved_refs
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Location, Reason};

    fn problem(field: &str, reason: Reason) -> ConfigError {
        ConfigError {
            location: Location::file("t.yaml"),
            object: "HTTPRoute default/r".into(),
            field: field.into(),
            message: "why".into(),
            reason,
        }
    }

    #[test]
    fn problems_set_the_conditions_of_the_parents_they_concern() {
        let routes = [RouteParents {
            route: "HTTPRoute default/r".into(),
            parents: vec!["Service default/a".into(), "Service default/b".into()],
        }];
        let problems = [
            problem("spec.parentRefs[1].name", Reason::NoMatchingParent),
            problem("spec.rules[0].backendRefs[0].name", Reason::BackendNotFound),
        ];
        let status = &route_statuses(&routes, &problems)[0];
        let [a, b] = &status.parents[..] else {
            panic!("two parents")
        };
        assert!(a.accepted.status);
        assert_eq!(a.accepted.reason, "Accepted");
        assert!(!b.accepted.status);
        assert_eq!(b.accepted.reason, "NoMatchingParent");
        for p in [a, b] {
            assert!(!p.resolved_refs.status);
            assert_eq!(p.resolved_refs.reason, "BackendNotFound");
        }
        assert!(!status.is_clean());
        let clean = &route_statuses(&routes, &[])[0];
        assert!(clean.is_clean());
        assert_eq!(
            clean.to_string(),
            "HTTPRoute default/r\n  parent Service default/a: Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)\n  parent Service default/b: Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)"
        );
    }
}
