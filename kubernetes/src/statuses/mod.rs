//! What the controller writes in the status of the objects that attach to its waypoints, from
//! each compile of the cluster's config ([`Report`]): `status.parents[]` of HTTPRoutes and
//! GRPCRoutes ([`routes`]), and the `WaypointAccepted` condition of AuthorizationPolicies
//! ([`policies`]), so an object left out of the config, or served with problems, says why
//! where its author looks. What other controllers wrote is kept. Pure.

pub mod policies;
pub mod routes;

use std::collections::HashSet;

use mesh_config::Snapshot;
use mesh_config::policy::{GATEWAY_GROUP, reference_group};
use serde_json::{Value, json};

use crate::Report;
use crate::waypoint_deploy::WAYPOINT_CLASS;

/// The Gateway API's bound on a condition's message.
const MAX_MESSAGE: usize = 32_768;

/// An object whose status is to be written.
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

impl StatusUpdate {
    /// For `object`, whose status becomes `status`.
    fn of(object: &Value, status: Value) -> Self {
        let meta = &object["metadata"];
        StatusUpdate {
            kind: str_at(&object["kind"]).to_string(),
            namespace: str_at(&meta["namespace"]).to_string(),
            name: str_at(&meta["name"]).to_string(),
            resource_version: str_at(&meta["resourceVersion"]).to_string(),
            status,
        }
    }
}

/// Every object of `report` whose status differs from what it should say; `now` stamps
/// conditions that change.
pub fn updates(report: &Report, now: &str) -> Vec<StatusUpdate> {
    let ours = Ours::new(report);
    let mut all = routes::updates(report, &ours, now);
    all.extend(policies::updates(report, &ours, now));
    all
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

/// Which references (parentRefs, targetRefs) are the controller's.
struct Ours<'r> {
    /// The Gateways of the controller's class, by namespace and name.
    gateways: HashSet<(&'r str, &'r str)>,
    snapshot: &'r Snapshot,
}

impl<'r> Ours<'r> {
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
        Ours {
            gateways,
            snapshot: &report.snapshot,
        }
    }

    /// The waypoint of the controller's class that `reference` (from an object in
    /// `namespace`) means: a Gateway of the class, or a Service bound to one. `None` when it
    /// is not the controller's.
    fn waypoint(&self, namespace: &str, reference: &Value) -> Option<(String, String)> {
        let namespace = reference["namespace"].as_str().unwrap_or(namespace);
        let name = str_at(&reference["name"]);
        let kind = reference["kind"].as_str().unwrap_or("Gateway");
        let gateway = match (reference_group(kind, reference["group"].as_str()), kind) {
            (GATEWAY_GROUP, "Gateway") => (namespace, name),
            ("", "Service") => {
                let service = self.snapshot.service(namespace, name)?;
                let waypoint = service.waypoint.as_ref()?;
                (waypoint.namespace.as_str(), waypoint.name.as_str())
            }
            _ => return None,
        };
        (self.gateways.contains(&gateway)).then(|| (gateway.0.to_string(), gateway.1.to_string()))
    }
}

fn find_condition<'v>(conditions: &'v Value, kind: &str) -> Option<&'v Value> {
    (conditions.as_array()?.iter()).find(|c| c["type"] == kind)
}

/// One condition as the API writes it; its transition time is kept from `old` while its
/// status is.
fn condition_json(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: &Value,
    old: Option<&Value>,
    now: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let since = old
        .filter(|old| old["status"] == status)
        .and_then(|old| old["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": &message[..end],
        "observedGeneration": generation.as_i64().unwrap_or(0),
        "lastTransitionTime": since,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use mesh_config::Location;
    use mesh_config::fixtures::*;
    use serde_json::{Value, json};

    use crate::Report;
    use crate::waypoint_deploy::WAYPOINT_CLASS;

    pub const NOW: &str = "2026-12-02T10:00:00Z";
    pub const LATER: &str = "2026-12-02T11:00:00Z";

    /// A mesh of one namespace: `ours` (class mesh-waypoint) binding Service `reviews`,
    /// `theirs` (class istio-waypoint) binding Service `ratings`, and `routes` (or any objects).
    pub fn report(routes: Vec<Value>) -> Report {
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
}
