//! What the waypoint controller decides about a Gateway of its class, and the status it
//! writes (pure): whether the Gateway can be served (`Accepted`), whether it runs and has an
//! address (`Programmed`, `status.addresses` — Istio ignores a waypoint until they are set),
//! and each listener's conditions, in the Gateway API's reasons.

use serde_json::{Value, json};

/// The one listener a waypoint has: HBONE on 15008.
pub const HBONE_PORT: u64 = 15008;

/// Why a condition is false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The Gateway API's reason (`ListenersNotValid`, `InvalidParameters`, ...).
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// Where a reconcile ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not served (`Accepted=False`): nothing is applied for it.
    Refused(Refusal),
    /// Accepted, but not running as asked (`Programmed=False`).
    NotProgrammed(Refusal),
    /// Running behind `service`, reachable at `addresses` (Gateway API address objects).
    Programmed {
        service: String,
        addresses: Vec<Value>,
    },
}

/// Checks what the controller can serve of `gateway`'s spec: HBONE listeners on 15008 only,
/// no requested addresses (a waypoint's address is its Service's), parameters in a ConfigMap.
/// Returns the parameters ConfigMap's name, if any.
pub fn check(gateway: &Value) -> Result<Option<String>, Refusal> {
    let spec = &gateway["spec"];
    let listeners = spec["listeners"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if listeners.is_empty() {
        return Err(Refusal::new(
            "ListenersNotValid",
            "a waypoint has one listener: {name: mesh, port: 15008, protocol: HBONE}",
        ));
    }
    let invalid: Vec<String> = (listeners.iter())
        .filter(|l| listener_refusal(l).is_some())
        .map(|l| l["name"].as_str().unwrap_or("").to_string())
        .collect();
    if !invalid.is_empty() {
        return Err(Refusal::new(
            "ListenersNotValid",
            format!("listeners {invalid:?}: a waypoint serves HBONE on port {HBONE_PORT} only"),
        ));
    }
    if spec["addresses"].as_array().is_some_and(|a| !a.is_empty()) {
        return Err(Refusal::new(
            "UnsupportedAddress",
            "spec.addresses: a waypoint's address is its Service's and cannot be requested",
        ));
    }
    let Some(parameters) = spec["infrastructure"].get("parametersRef") else {
        return Ok(None);
    };
    let group = parameters["group"].as_str().unwrap_or("");
    let kind = parameters["kind"].as_str().unwrap_or("");
    match (group, kind, parameters["name"].as_str()) {
        ("" | "core", "ConfigMap", Some(name)) => Ok(Some(name.to_string())),
        _ => Err(Refusal::new(
            "InvalidParameters",
            format!(
                "spec.infrastructure.parametersRef: a ConfigMap in the Gateway's namespace \
                 (group \"\", kind ConfigMap), not {group:?}/{kind:?}"
            ),
        )),
    }
}

/// Why `listener` cannot be served, if it cannot.
fn listener_refusal(listener: &Value) -> Option<Refusal> {
    let protocol = listener["protocol"].as_str().unwrap_or("");
    let port = listener["port"].as_u64();
    match (protocol, port) {
        ("HBONE", Some(HBONE_PORT)) => None,
        ("HBONE", _) => Some(Refusal::new(
            "PortUnavailable",
            format!("HBONE is served on port {HBONE_PORT}"),
        )),
        _ => Some(Refusal::new(
            "UnsupportedProtocol",
            format!("protocol {protocol:?}: a waypoint serves HBONE only"),
        )),
    }
}

/// The status to write on `gateway` for `outcome`; a condition that keeps its status keeps
/// its `lastTransitionTime` (so an unchanged Gateway gets an unchanged status, and no write).
pub fn status(gateway: &Value, outcome: &Outcome, now: &str) -> Value {
    let generation = gateway["metadata"]["generation"].as_i64();
    let previous = &gateway["status"];
    let condition = |kind: &str, old: &Value, ok: bool, reason: &str, message: &str| {
        let status = if ok { "True" } else { "False" };
        let old = (old.as_array().into_iter().flatten()).find(|c| c["type"] == kind);
        let since = match old {
            Some(old) if old["status"] == status => old["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        let mut condition = json!({"type": kind, "status": status, "reason": reason,
                                   "message": message, "lastTransitionTime": since});
        if let Some(generation) = generation {
            condition["observedGeneration"] = json!(generation);
        }
        condition
    };
    let (accepted, programmed): ((bool, &str, String), (bool, &str, String)) = match outcome {
        Outcome::Refused(refusal) => (
            (false, refusal.reason, refusal.message.clone()),
            (false, "Invalid", "not accepted".to_string()),
        ),
        Outcome::NotProgrammed(refusal) => (
            (
                true,
                "Accepted",
                "accepted by the mesh's waypoint controller".into(),
            ),
            (false, refusal.reason, refusal.message.clone()),
        ),
        Outcome::Programmed { service, .. } => (
            (
                true,
                "Accepted",
                "accepted by the mesh's waypoint controller".into(),
            ),
            (
                true,
                "Programmed",
                format!("assigned to service(s) {service}:{HBONE_PORT}"),
            ),
        ),
    };
    let old_conditions = &previous["conditions"];
    let conditions = json!([
        condition(
            "Accepted",
            old_conditions,
            accepted.0,
            accepted.1,
            &accepted.2
        ),
        condition(
            "Programmed",
            old_conditions,
            programmed.0,
            programmed.1,
            &programmed.2
        ),
    ]);
    let listeners: Vec<Value> = (gateway["spec"]["listeners"].as_array().into_iter())
        .flatten()
        .map(|listener| {
            let name = listener["name"].as_str().unwrap_or("");
            let old = (previous["listeners"].as_array().into_iter().flatten())
                .find(|l| l["name"] == name)
                .map(|l| &l["conditions"])
                .unwrap_or(&Value::Null);
            let refusal = listener_refusal(listener);
            let (ok, reason, message) = match &refusal {
                Some(refusal) => (false, refusal.reason, refusal.message.as_str()),
                None => (true, "Accepted", "HBONE, served by the waypoint"),
            };
            let running = ok && programmed.0;
            let (programmed_reason, programmed_message) = match running {
                true => ("Programmed", "served"),
                false => ("Invalid", "not served"),
            };
            json!({
                "name": name,
                "supportedKinds": [],
                "attachedRoutes": 0,
                "conditions": [
                    condition("Accepted", old, ok, reason, message),
                    condition("Programmed", old, running, programmed_reason, programmed_message),
                    condition("ResolvedRefs", old, true, "ResolvedRefs", "no references"),
                ]
            })
        })
        .collect();
    let mut status = json!({"conditions": conditions, "listeners": listeners});
    if let Outcome::Programmed { addresses, .. } = outcome {
        status["addresses"] = json!(addresses);
    }
    status
}

/// The addresses a waypoint is reached at: its Service's cluster IPs and its DNS name.
pub fn addresses(service: &Value, cluster_domain: &str) -> Vec<Value> {
    let spec = &service["spec"];
    let mut ips: Vec<&str> = (spec["clusterIPs"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    if ips.is_empty()
        && let Some(ip) = spec["clusterIP"].as_str()
    {
        ips.push(ip);
    }
    let mut addresses: Vec<Value> = (ips.into_iter())
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(|ip| json!({"type": "IPAddress", "value": ip}))
        .collect();
    if addresses.is_empty() {
        return addresses;
    }
    let meta = &service["metadata"];
    let host = format!(
        "{}.{}.svc.{cluster_domain}",
        meta["name"].as_str().unwrap_or(""),
        meta["namespace"].as_str().unwrap_or("")
    );
    addresses.push(json!({"type": "Hostname", "value": host}));
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(listeners: Value, extra: Value) -> Value {
        let mut spec = json!({"gatewayClassName": "mesh-waypoint", "listeners": listeners});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        json!({"metadata": {"name": "waypoint", "namespace": "shop", "generation": 3},
               "spec": spec})
    }

    fn hbone() -> Value {
        json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}])
    }

    #[test]
    fn only_hbone_on_15008_is_served() {
        assert_eq!(check(&gateway(hbone(), json!({}))), Ok(None));
        for (listeners, wanted) in [
            (json!([]), "one listener"),
            (
                json!([{"name": "http", "port": 80, "protocol": "HTTP"}]),
                "[\"http\"]",
            ),
            (
                json!([{"name": "mesh", "port": 15009, "protocol": "HBONE"}]),
                "[\"mesh\"]",
            ),
        ] {
            let refusal = check(&gateway(listeners, json!({}))).expect_err("refused");
            assert_eq!(refusal.reason, "ListenersNotValid");
            assert!(refusal.message.contains(wanted), "{refusal:?}");
        }
    }

    #[test]
    fn addresses_and_foreign_parameters_are_refused_with_their_reason() {
        let asked = gateway(
            hbone(),
            json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.1"}]}),
        );
        assert_eq!(
            check(&asked).expect_err("refused").reason,
            "UnsupportedAddress"
        );
        let secret = gateway(
            hbone(),
            json!({"infrastructure": {"parametersRef": {"group": "", "kind": "Secret", "name": "p"}}}),
        );
        assert_eq!(
            check(&secret).expect_err("refused").reason,
            "InvalidParameters"
        );
        let config_map = gateway(
            hbone(),
            json!({"infrastructure": {"parametersRef": {"group": "", "kind": "ConfigMap", "name": "p"}}}),
        );
        assert_eq!(check(&config_map), Ok(Some("p".into())));
    }

    #[test]
    fn a_programmed_waypoint_has_its_addresses_and_keeps_its_transition_times() {
        let service = json!({"metadata": {"name": "waypoint", "namespace": "shop"},
                             "spec": {"clusterIP": "10.96.0.9"}});
        let outcome = Outcome::Programmed {
            service: "waypoint.shop.svc.cluster.local".into(),
            addresses: addresses(&service, "cluster.local"),
        };
        let mut gw = gateway(hbone(), json!({}));
        let first = status(&gw, &outcome, "2026-12-02T10:00:00Z");
        assert_eq!(first["conditions"][1]["type"], "Programmed");
        assert_eq!(first["conditions"][1]["status"], "True");
        assert_eq!(first["conditions"][1]["observedGeneration"], 3);
        assert_eq!(
            first["addresses"],
            json!([{"type": "IPAddress", "value": "10.96.0.9"},
                   {"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"}])
        );
        assert_eq!(first["listeners"][0]["conditions"][0]["status"], "True");
        gw["status"] = first.clone();
        assert_eq!(
            status(&gw, &outcome, "2026-12-02T11:00:00Z"),
            first,
            "unchanged"
        );
        let pending = Outcome::NotProgrammed(Refusal::new("AddressNotAssigned", "no IP yet"));
        let later = status(&gw, &pending, "2026-12-02T12:00:00Z");
        assert_eq!(
            later["conditions"][0]["lastTransitionTime"],
            "2026-12-02T10:00:00Z"
        );
        assert_eq!(
            later["conditions"][1]["lastTransitionTime"],
            "2026-12-02T12:00:00Z"
        );
        assert!(later.get("addresses").is_none());
    }

    #[test]
    fn a_service_without_an_ip_gives_no_address() {
        let headless = json!({"metadata": {"name": "w", "namespace": "s"},
                              "spec": {"clusterIP": "None"}});
        assert!(addresses(&headless, "cluster.local").is_empty());
    }
}
