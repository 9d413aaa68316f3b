//! `status.parents[]` of HTTPRoutes and GRPCRoutes: for each parentRef that is the
//! controller's — a Gateway of its class, or a Service bound to one (GAMMA) — the `Accepted`
//! and `ResolvedRefs` conditions of the compile ([`mesh_config::status`]); a route left out of
//! the config is not accepted, whatever part of it the error is in. Entries of other
//! controllers are kept as they are.

use std::collections::HashMap;

use mesh_config::ConfigError;
use mesh_config::status::{Condition, RouteParents, route_statuses};
use serde_json::{Value, json};

use super::{Ours, StatusUpdate, condition_json, described, find_condition, str_at};
use crate::Report;
use crate::waypoint_deploy::CONTROLLER_NAME;

/// The route kinds whose status the controller writes.
pub const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

/// The routes of `report` whose status is to change.
pub(super) fn updates(report: &Report, ours: &Ours, now: &str) -> Vec<StatusUpdate> {
    let mut problems: HashMap<&str, Problems> = HashMap::new();
    for warning in report.snapshot.warnings() {
        let entry = problems.entry(warning.object.as_str()).or_default();
        entry.warnings.push(warning.clone());
    }
    for error in &report.left_out {
        let entry = problems.entry(error.object.as_str()).or_default();
        entry.left_out.push(error.clone());
    }
    let none = Problems::default();
    (report.objects.iter())
        .filter(|(_, object)| ROUTE_KINDS.iter().any(|kind| object["kind"] == *kind))
        .filter_map(|(_, route)| {
            let found = problems.get(described(route).as_str()).unwrap_or(&none);
            update(route, found, ours, now)
        })
        .collect()
}

/// A route's problems: warnings of the served config, errors that left it out.
#[derive(Default)]
struct Problems {
    warnings: Vec<ConfigError>,
    left_out: Vec<ConfigError>,
}

/// The route's new status, if it differs from the one it has.
fn update(route: &Value, problems: &Problems, ours: &Ours, now: &str) -> Option<StatusUpdate> {
    let meta = &route["metadata"];
    let namespace = str_at(&meta["namespace"]);
    let parent_refs = route["spec"]["parentRefs"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let mine: Vec<bool> = (parent_refs.iter())
        .map(|parent| ours.waypoint(namespace, parent).is_some())
        .collect();
    let existing = route["status"]["parents"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let had_mine = existing
        .iter()
        .any(|entry| entry["controllerName"] == CONTROLLER_NAME);
    if !mine.contains(&true) && !had_mine {
        return None;
    }
    let parents = RouteParents {
        route: described(route),
        parents: vec![String::new(); parent_refs.len()],
    };
    let all: Vec<ConfigError> = (problems.warnings.iter())
        .chain(&problems.left_out)
        .cloned()
        .collect();
    let computed = route_statuses(&[parents], &all).remove(0);
    let mut entries: Vec<Value> = (existing.iter())
        .filter(|entry| entry["controllerName"] != CONTROLLER_NAME)
        .cloned()
        .collect();
    let generation = meta["generation"].clone();
    let on_ours = (parent_refs.iter().zip(computed.parents).zip(&mine))
        .filter_map(|((parent, status), mine)| mine.then_some((parent, status)));
    for (parent, status) in on_ours {
        let mut accepted = status.accepted;
        if let Some(error) = problems.left_out.first().filter(|_| accepted.status) {
            accepted = left_out(error);
        }
        let before = (existing.iter())
            .find(|e| e["controllerName"] == CONTROLLER_NAME && e["parentRef"] == *parent);
        let conditions = [
            ("Accepted", accepted),
            ("ResolvedRefs", status.resolved_refs),
        ]
        .map(|(kind, condition)| {
            let old = before.and_then(|b| find_condition(&b["conditions"], kind));
            let Condition {
                status,
                reason,
                message,
            } = &condition;
            condition_json(kind, *status, reason, message, &generation, old, now)
        });
        entries.push(json!({
            "parentRef": parent,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions,
        }));
    }
    if entries.as_slice() == existing {
        return None;
    }
    let mut status = route.get("status").cloned().unwrap_or_else(|| json!({}));
    status["parents"] = Value::Array(entries);
    Some(StatusUpdate::of(route, status))
}

/// `Accepted: False` for a route left out of the config by `error`, whatever part of the
/// route it is in.
fn left_out(error: &ConfigError) -> Condition {
    let reason = match error.reason.condition() {
        Some(("Accepted", reason)) => reason,
        _ => "Invalid",
    };
    Condition {
        status: false,
        reason,
        message: format!("left out of the config: {}: {}", error.field, error.message),
    }
}

#[cfg(test)]
mod tests {
    use mesh_config::fixtures::*;

    use super::*;
    use crate::statuses::testing::{LATER, NOW, report};
    use crate::waypoint_deploy::CONTROLLER_NAME;

    fn updates(report: &Report, now: &str) -> Vec<StatusUpdate> {
        crate::statuses::updates(report, now)
    }

    fn to_service(name: &str) -> Value {
        json!({"group": "", "kind": "Service", "name": name, "port": 80})
    }

    fn route(name: &str, parents: Value) -> Value {
        let backend = json!([{"backendRefs": [{"name": "reviews", "port": 80}]}]);
        http_route("default", name, parents, backend)
    }

    fn condition<'u>(update: &'u StatusUpdate, parent: usize, kind: &str) -> &'u Value {
        let entry = &update.status["parents"][parent];
        find_condition(&entry["conditions"], kind).expect("the condition")
    }

    #[test]
    fn a_route_on_the_controllers_parents_is_accepted_and_written_once() {
        let on_gateway = json!([{"name": "ours"}]);
        let report_now = report(vec![
            route("a", json!([to_service("reviews")])),
            route("b", on_gateway),
        ]);
        let written = updates(&report_now, NOW);
        assert_eq!(written.len(), 2, "{written:#?}");
        for update in &written {
            let entry = &update.status["parents"][0];
            assert_eq!(entry["controllerName"], CONTROLLER_NAME);
            let accepted = condition(update, 0, "Accepted");
            assert_eq!(accepted["status"], "True", "{accepted}");
            assert_eq!(accepted["observedGeneration"], 3);
            assert_eq!(accepted["lastTransitionTime"], NOW);
            assert_eq!(condition(update, 0, "ResolvedRefs")["status"], "True");
            assert_eq!(update.resource_version, "7");
        }
        assert_eq!(
            written[0].status["parents"][0]["parentRef"],
            to_service("reviews")
        );

        // Once written, the same config writes nothing, later too.
        let mut routes = vec![route("a", json!([to_service("reviews")]))];
        routes[0]["status"] = written[0].status.clone();
        assert_eq!(updates(&report(routes), LATER), []);
    }

    #[test]
    fn a_route_left_out_says_why_and_other_controllers_entries_are_kept() {
        let mut bad = route("bad", json!([to_service("reviews"), to_service("ratings")]));
        bad["spec"]["rules"][0]["sessionPersistence"] = json!({"sessionName": "s"});
        let istio = json!({
            "parentRef": to_service("ratings"),
            "controllerName": "istio.io/mesh-controller",
            "conditions": [],
        });
        bad["status"] = json!({"parents": [istio]});
        let report = report(vec![bad]);
        assert!(!report.left_out.is_empty(), "the route is left out");
        let [update] = &updates(&report, NOW)[..] else {
            panic!("one update")
        };
        let parents = update.status["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2, "Istio's entry and ours: {parents:#?}");
        assert_eq!(parents[0], istio, "another controller's entry is untouched");
        assert_eq!(parents[1]["parentRef"], to_service("reviews"));
        let accepted = condition(update, 1, "Accepted");
        assert_eq!(accepted["status"], "False");
        assert_eq!(accepted["reason"], "UnsupportedValue");
        let message = accepted["message"].as_str().expect("message");
        assert!(message.contains("sessionPersistence"), "{message}");
    }

    #[test]
    fn routes_on_other_parents_are_not_written_and_a_lost_parent_is_cleared() {
        let theirs = route("theirs", json!([to_service("ratings"), {"name": "theirs"}]));
        assert_eq!(updates(&report(vec![theirs.clone()]), NOW), []);

        // Written while its parent was ours; now that it is not, the entry goes.
        let mut moved = theirs;
        moved["status"] = json!({"parents": [{
            "parentRef": to_service("ratings"), "controllerName": CONTROLLER_NAME, "conditions": [],
        }]});
        let [update] = &updates(&report(vec![moved]), NOW)[..] else {
            panic!("one update")
        };
        assert_eq!(update.status["parents"], json!([]));
    }
}
