//! The `WaypointAccepted` condition of AuthorizationPolicies, as Istio writes it for the
//! policies its waypoints enforce: for a policy whose `targetRefs` name the controller's
//! waypoints (a Gateway of its class, a Service bound to one, or the class itself), `True`
//! and "bound to ns/name", or `False` with the error that left it out of the config. Other
//! conditions (Istio's `ZtunnelAccepted`) are kept as they are.

use serde_json::{Value, json};

use super::{Ours, StatusUpdate, condition_json, described, find_condition, str_at};
use crate::Report;
use crate::waypoint_deploy::WAYPOINT_CLASS;

/// The condition this module writes.
pub const WAYPOINT_ACCEPTED: &str = "WaypointAccepted";

/// The AuthorizationPolicies of `report` whose status is to change.
pub(super) fn updates(report: &Report, ours: &Ours, now: &str) -> Vec<StatusUpdate> {
    (report.objects.iter())
        .map(|(_, object)| object)
        .filter(|object| object["kind"] == "AuthorizationPolicy")
        .filter_map(|policy| update(report, policy, ours, now))
        .collect()
}

/// What the controller's waypoints are among the policy's targets, described.
fn bound_to(policy: &Value, ours: &Ours) -> Vec<String> {
    let namespace = str_at(&policy["metadata"]["namespace"]);
    let spec = &policy["spec"];
    let targets = (spec["targetRefs"].as_array().into_iter().flatten())
        .chain(Some(&spec["targetRef"]).filter(|t| t.is_object()));
    let mut bound: Vec<String> = targets
        .filter_map(|target| {
            let class = target["kind"] == "GatewayClass" && target["name"] == WAYPOINT_CLASS;
            match class {
                true => Some(format!("every waypoint of class {WAYPOINT_CLASS}")),
                false => {
                    (ours.waypoint(namespace, target)).map(|(ns, name)| format!("{ns}/{name}"))
                }
            }
        })
        .collect();
    bound.dedup();
    bound
}

fn update(report: &Report, policy: &Value, ours: &Ours, now: &str) -> Option<StatusUpdate> {
    let bound = bound_to(policy, ours);
    if bound.is_empty() {
        return None;
    }
    let object = described(policy);
    let left_out = (report.left_out.iter()).find(|error| error.object == object);
    let (accepted, reason, message) = match left_out {
        Some(error) => (
            false,
            "Invalid",
            format!("left out of the config: {}: {}", error.field, error.message),
        ),
        None => {
            let warnings = (report.snapshot.warnings().iter())
                .filter(|warning| warning.object == object)
                .map(|warning| format!("; {}: {}", warning.field, warning.message));
            let message = format!("bound to {}", bound.join(", "));
            (true, "Accepted", warnings.fold(message, |all, w| all + &w))
        }
    };
    let existing = &policy["status"]["conditions"];
    let old = find_condition(existing, WAYPOINT_ACCEPTED);
    let generation = &policy["metadata"]["generation"];
    let condition = condition_json(
        WAYPOINT_ACCEPTED,
        accepted,
        reason,
        &message,
        generation,
        old,
        now,
    );
    if old == Some(&condition) {
        return None;
    }
    let mut conditions: Vec<Value> = (existing.as_array().into_iter().flatten())
        .filter(|c| c["type"] != WAYPOINT_ACCEPTED)
        .cloned()
        .collect();
    conditions.push(condition);
    let mut status = policy.get("status").cloned().unwrap_or_else(|| json!({}));
    status["conditions"] = Value::Array(conditions);
    Some(StatusUpdate::of(policy, status))
}

#[cfg(test)]
mod tests {
    use mesh_config::fixtures::*;

    use super::*;
    use crate::statuses::testing::{LATER, NOW, report};

    fn updates(report: &Report, now: &str) -> Vec<StatusUpdate> {
        crate::statuses::updates(report, now)
    }

    fn allow(name: &str, targets: Value) -> Value {
        let rules = json!([{"to": [{"operation": {"methods": ["GET"]}}]}]);
        policy(
            "default",
            name,
            json!({"targetRefs": targets, "action": "ALLOW", "rules": rules}),
        )
    }

    fn waypoint_accepted(update: &StatusUpdate) -> &Value {
        find_condition(&update.status["conditions"], WAYPOINT_ACCEPTED).expect("the condition")
    }

    #[test]
    fn a_policy_on_the_controllers_waypoint_is_accepted_and_says_where() {
        let on_service = allow(
            "reviews",
            json!([{"kind": "Service", "group": "", "name": "reviews"}]),
        );
        let gateway =
            json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "ours"}]);
        let mut on_gateway = allow("gateway", gateway);
        let ztunnel = json!({"type": "ZtunnelAccepted", "status": "True", "reason": "Accepted"});
        on_gateway["status"] = json!({"conditions": [ztunnel]});
        let theirs = allow(
            "theirs",
            json!([{"kind": "Service", "group": "", "name": "ratings"}]),
        );
        let written = updates(&report(vec![on_service, on_gateway, theirs]), NOW);
        assert_eq!(
            written.len(),
            2,
            "the policy on Istio's waypoint is not written: {written:#?}"
        );
        for update in &written {
            let condition = waypoint_accepted(update);
            assert_eq!(condition["status"], "True");
            assert_eq!(condition["message"], "bound to default/ours");
            assert_eq!(condition["lastTransitionTime"], NOW);
        }
        assert_eq!(
            written[1].status["conditions"][0], ztunnel,
            "Istio's condition is kept"
        );

        // Written once: the same config writes nothing.
        let mut again = allow(
            "reviews",
            json!([{"kind": "Service", "group": "", "name": "reviews"}]),
        );
        again["status"] = written[0].status.clone();
        assert_eq!(updates(&report(vec![again]), LATER), []);
    }

    #[test]
    fn a_policy_left_out_says_why() {
        let mut bad = allow(
            "bad",
            json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "ours"}]),
        );
        bad["spec"]["rules"][0]["when"] = json!([{"key": "request.nonsense", "values": ["a"]}]);
        let report = report(vec![bad]);
        assert!(!report.left_out.is_empty(), "the policy is left out");
        let [update] = &updates(&report, NOW)[..] else {
            panic!("one update")
        };
        let condition = waypoint_accepted(update);
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "Invalid");
        let message = condition["message"].as_str().expect("message");
        assert!(
            message.starts_with("left out of the config: spec.rules[0].when[0]"),
            "{message}"
        );
    }

    #[test]
    fn a_policy_on_the_class_binds_every_waypoint_of_it() {
        let class = json!([{"kind": "GatewayClass", "group": "gateway.networking.k8s.io",
                            "name": WAYPOINT_CLASS}]);
        let mut everywhere = allow("everywhere", class);
        everywhere["metadata"]["namespace"] = json!("istio-system");
        let [update] = &updates(&report(vec![everywhere]), NOW)[..] else {
            panic!("one update")
        };
        assert_eq!(update.namespace, "istio-system");
        let message = &waypoint_accepted(update)["message"];
        assert_eq!(*message, "bound to every waypoint of class mesh-waypoint");
    }
}
