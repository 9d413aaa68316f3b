//! What `mesh waypoint apply` does against the API, as `istioctl waypoint apply` does: the
//! waypoint Gateway applied, its namespace optionally enrolled (`istio.io/use-waypoint`), and
//! optionally a wait until a controller has programmed it.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::kinds;

/// The field manager of what the CLI writes.
pub const CLI_MANAGER: &str = "mesh-cli";

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("an object from the Kubernetes API: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Gateway {gateway} was not programmed within {waited:?}; its conditions: {conditions}")]
    NotProgrammed {
        gateway: String,
        waited: Duration,
        conditions: String,
    },
}

fn api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let found = kinds::kind(kind).unwrap_or_else(|| panic!("{kind} is in the kinds table"));
    found.api(client, namespace)
}

/// Applies `gateway` (server-side, as [`CLI_MANAGER`]).
pub async fn apply_gateway(client: &kube::Client, gateway: &Value) -> Result<(), EnrollError> {
    let meta = &gateway["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    let params = PatchParams::apply(CLI_MANAGER).force();
    (api(client, "Gateway", meta["namespace"].as_str()))
        .patch(name, &params, &Patch::Apply(gateway))
        .await?;
    Ok(())
}

/// Labels `namespace` so its Services use waypoint `name`.
pub async fn enroll_namespace(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), EnrollError> {
    let patch = json!({"metadata": {"labels": {"istio.io/use-waypoint": name}}});
    (api(client, "Namespace", None))
        .patch(namespace, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// Waits until Gateway `namespace/name` is `Programmed`; returns its addresses.
pub async fn wait_programmed(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>, EnrollError> {
    let gateways = api(client, "Gateway", Some(namespace));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = match gateways.get_opt(name).await? {
            Some(gateway) => serde_json::to_value(gateway)?["status"].clone(),
            None => Value::Null,
        };
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        let programmed =
            (conditions.iter()).any(|c| c["type"] == "Programmed" && c["status"] == "True");
        if programmed {
            let addresses = (status["addresses"].as_array().into_iter().flatten())
                .filter_map(|a| a["value"].as_str().map(str::to_string))
                .collect();
            return Ok(addresses);
        }
        if tokio::time::Instant::now() >= deadline {
            let conditions: Vec<String> = (conditions.iter())
                .map(|c| {
                    format!(
                        "{}={} ({}: {})",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            return Err(EnrollError::NotProgrammed {
                gateway: format!("{namespace}/{name}"),
                waited: timeout,
                conditions: match conditions.is_empty() {
                    true => "none (is the waypoint controller running?)".into(),
                    false => conditions.join("; "),
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
