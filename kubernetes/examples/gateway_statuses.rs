//! Prints (YAML documents) the GatewayClass and Gateways with the status the
//! waypoint controller writes — programmed, not programmed, refused — so `scripts/check-charts`
//! can validate them against the Gateway API's CRD schemas.

use mesh_kubernetes::gateway_status::{self, Outcome, Refusal};
use mesh_kubernetes::waypoint_deploy;
use serde_json::json;

fn main() {
    let now = "2026-12-02T10:00:00Z";
    let mut class = waypoint_deploy::gateway_class();
    class["status"] = json!({"conditions": [{"type": "Accepted", "status": "True",
        "reason": "Accepted", "message": "handled by the mesh's waypoint controller",
        "observedGeneration": 1, "lastTransitionTime": now}]});
    print(&class);
    let service = json!({"metadata": {"name": "waypoint", "namespace": "shop"},
                         "spec": {"clusterIPs": ["10.96.0.9", "fd00::9"]}});
    let outcomes = [
        Outcome::Programmed {
            service: "waypoint.shop.svc.cluster.local".into(),
            addresses: gateway_status::addresses(&service, "cluster.local"),
        },
        Outcome::NotProgrammed(Refusal::new("AddressNotAssigned", "no cluster IP yet")),
        Outcome::Refused(Refusal::new(
            "InvalidParameters",
            "ConfigMap shop/p not found",
        )),
    ];
    for outcome in outcomes {
        let mut gateway = waypoint_deploy::gateway("shop", "waypoint", "service");
        gateway["metadata"]["generation"] = json!(2);
        gateway["spec"]["listeners"]
            .as_array_mut()
            .expect("listeners")
            .push(json!({"name": "http", "port": 80, "protocol": "HTTP"}));
        gateway["status"] = gateway_status::status(&gateway, &outcome, now);
        print(&gateway);
    }
}

fn print(object: &serde_json::Value) {
    let yaml = serde_norway::to_string(object).expect("YAML");
    println!("---\n{yaml}");
}
