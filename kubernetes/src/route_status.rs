//! What the controller writes in the `status.parents[]` of HTTPRoutes and GRPCRoutes: for
//! each parentRef that is the controller's — a Gateway of [`WAYPOINT_CLASS`], or a Service
//! bound to one (GAMMA) — the `Accepted` and `ResolvedRefs` conditions of the last compile
//! ([`mesh_config::status`]), so a route left out of the config, or served with problems, says
//! why where its author looks. Entries of other controllers are kept as they are. Pure.

use std::collections::{HashMap, HashSet};

use mesh_config::status::{Condition, RouteParents, route_statuses};
use mesh_config::{ConfigError, Snapshot};
use serde_json::{Value, json};

use crate::Report;
use crate::waypoint_deploy::{CONTROLLER_NAME, WAYPOINT_CLASS};

/// The route kinds whose status the controller writes.
pub const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

/// The Gateway API's bound on a condition's message.
const MAX_MESSAGE: usize = 32_768;

/// A route whose status is to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The version the status was computed from (a write to a newer one is refused).
    pub resource_version: String,
    /// The whole new `status`.
    pub status: Value,
}

/// The routes of `report` whose status differs from what it should say; `now` stamps
/// conditions that change.
pub fn updates(report: &Report, now: &str) -> Vec<StatusUpdate> {
    let ours = OurParents::new(report);
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
            update(route, found, &ours, now)
        })
        .collect()
}

/// A route's problems: warnings of the served config, errors that left it out.
#[derive(Default)]
struct Problems {
    warnings: Vec<ConfigError>,
    left_out: Vec<ConfigError>,
}

/// `HTTPRoute ns/name`, as problems name their object.
fn described(object: &Value) -> String {
    let meta = &object["metadata"];
    let (namespace, name) = (str_at(&meta["namespace"]), str_at(&meta["name"]));
    format!("{} {namespace}/{name}", str_at(&object["kind"]))
}

fn str_at(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Which parentRefs are the controller's.
struct OurParents<'r> {
    /// The Gateways of the controller's class, by namespace and name.
    gateways: HashSet<(&'r str, &'r str)>,
    snapshot: &'r Snapshot,
}

impl<'r> OurParents<'r> {
    fn new(report: &'r Report) -> Self {
        let gateways = (report.objects.iter())
            .map(|(_, object)| object)
            .filter(|object| object["kind"] == "Gateway")
            .filter(|gateway| gateway["spec"]["gatewayClassName"] == WAYPOINT_CLASS)
            .map(|gateway| {
                let meta = &gateway["metadata"];
                (str_at(&meta["namespace"]), str_at(&meta["name"]))
            })
            .collect();
        OurParents {
            gateways,
            snapshot: &report.snapshot,
        }
    }

    /// Whether `parent`, a parentRef of a route in `namespace`, is the controller's.
    fn contains(&self, namespace: &str, parent: &Value) -> bool {
        let namespace = parent["namespace"].as_str().unwrap_or(namespace);
        let name = str_at(&parent["name"]);
        let group = parent["group"]
            .as_str()
            .unwrap_or("gateway.networking.k8s.io");
        match (group, parent["kind"].as_str().unwrap_or("Gateway")) {
            ("gateway.networking.k8s.io", "Gateway") => self.gateways.contains(&(namespace, name)),
            ("" | "core", "Service") => (self.snapshot.service(namespace, name))
                .and_then(|service| service.waypoint.as_ref())
                .is_some_and(|waypoint| {
                    let key = (waypoint.namespace.as_str(), waypoint.name.as_str());
                    self.gateways.contains(&key)
                }),
            _ => false,
        }
    }
}

/// The route's new status, if it differs from the one it has.
fn update(
    route: &Value,
    problems: &Problems,
    ours: &OurParents,
    now: &str,
) -> Option<StatusUpdate> {
    let meta = &route["metadata"];
    let namespace = str_at(&meta["namespace"]);
    let parent_refs = route["spec"]["parentRefs"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let mine: Vec<bool> = (parent_refs.iter())
        .map(|parent| ours.contains(namespace, parent))
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
    for ((parent, status), _) in (parent_refs.iter().zip(computed.parents))
        .zip(&mine)
        .filter(|(_, m)| **m)
    {
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
            condition_json(kind, &condition, &generation, old, now)
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
    Some(StatusUpdate {
        kind: str_at(&route["kind"]).to_string(),
        namespace: namespace.to_string(),
        name: str_at(&meta["name"]).to_string(),
        resource_version: str_at(&meta["resourceVersion"]).to_string(),
        status,
    })
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

fn find_condition<'v>(conditions: &'v Value, kind: &str) -> Option<&'v Value> {
    (conditions.as_array()?.iter()).find(|c| c["type"] == kind)
}

/// One condition as the API writes it; its transition time is kept while its status is.
fn condition_json(
    kind: &str,
    condition: &Condition,
    generation: &Value,
    old: Option<&Value>,
    now: &str,
) -> Value {
    let status = if condition.status { "True" } else { "False" };
    let since = old
        .filter(|old| old["status"] == status)
        .and_then(|old| old["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let mut message = condition.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    json!({
        "type": kind,
        "status": status,
        "reason": condition.reason,
        "message": message,
        "observedGeneration": generation.as_i64().unwrap_or(0),
        "lastTransitionTime": since,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_config::Location;
    use mesh_config::fixtures::*;

    use super::*;

    const NOW: &str = "2026-12-02T10:00:00Z";
    const LATER: &str = "2026-12-02T11:00:00Z";

    /// A mesh of one namespace: `ours` (class mesh-waypoint) binding Service `reviews`,
    /// `theirs` (class istio-waypoint) binding Service `ratings`, and `routes`.
    fn report(routes: Vec<Value>) -> Report {
        let mut ours = waypoint_gateway("default", "ours", None);
        ours["spec"]["gatewayClassName"] = json!(WAYPOINT_CLASS);
        let mut objects = nodes();
        objects.extend([
            namespace("default", json!({})),
            ours,
            waypoint_pod("default", "ours", "127.0.1.50"),
            waypoint_gateway("default", "theirs", None),
            waypoint_pod("default", "theirs", "127.0.1.51"),
            pod(
                "default",
                "reviews-v1",
                "127.0.1.10",
                json!({"app": "reviews"}),
            ),
        ]);
        for (name, vip, waypoint) in [
            ("reviews", "127.0.100.1", "ours"),
            ("ratings", "127.0.100.2", "theirs"),
        ] {
            let mut service = service("default", name, vip, json!({"app": "reviews"}));
            service["metadata"]["labels"] = json!({"istio.io/use-waypoint": waypoint});
            objects.push(service);
        }
        objects.extend(routes);
        let objects: Vec<(Location, Value)> = (objects.into_iter().enumerate())
            .map(|(i, mut object)| {
                object["metadata"]["uid"] = json!(format!("uid-{i}"));
                object["metadata"]["resourceVersion"] = json!("7");
                object["metadata"]["generation"] = json!(3);
                let location = Location::Kube {
                    uid: format!("uid-{i}"),
                    resource_version: "7".into(),
                };
                (location, object)
            })
            .collect();
        let compiled = mesh_config::compile_objects(&objects).expect("compiles");
        Report {
            objects,
            snapshot: Arc::new(compiled.snapshot),
            left_out: compiled.left_out,
        }
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
