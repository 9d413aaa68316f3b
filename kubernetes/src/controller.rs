//! The waypoint controller: for every `Gateway` of [`WAYPOINT_CLASS`] it server-side-applies
//! what the Gateway runs as ([`waypoint_deploy::render`], shaped by Istio-style overlay
//! ConfigMaps) and writes the Gateway's status. It is kube-runtime's `Controller`: Gateways
//! are watched, and so are the Deployments and Services it made (an object edited or deleted
//! by hand is put back) and ConfigMaps (a changed overlay is applied). Each reconcile is
//! idempotent: applying the same objects again changes nothing, and an unchanged status is
//! not written. Beside it, the controller follows the whole cluster's config as the proxies
//! compile it ([`KubeSource`]) and writes the status of the routes and policies attached to
//! its waypoints ([`statuses`]). Decisions are pure ([`gateway_status`], [`waypoint_deploy`],
//! [`overlay`], [`statuses`]); this module is the API calls around them.
//!
//! [`gateway_status`]: crate::gateway_status
//! [`overlay`]: crate::overlay
//! [`statuses`]: crate::statuses

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::gateway_status::{self, Outcome, Refusal};
use crate::overlay::{Overlays, Part};
use crate::statuses::{self, StatusUpdate};
use crate::waypoint_deploy::{
    self, GATEWAY_LABEL, GatewayRef, MANAGED_LABEL, MANAGER, PodSettings, WAYPOINT_CLASS,
};
use crate::{KubeSource, kinds};

/// The label of ConfigMaps (in the system namespace) holding class-wide overlays.
pub const DEFAULTS_LABEL: &str = "gateway.istio.io/defaults-for-class";
/// How often every Gateway is reconciled even when nothing changed.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a reconcile that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// What the controller renders with.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    pub pod: PodSettings,
    /// Where class-wide overlay ConfigMaps live (labelled [`DEFAULTS_LABEL`]).
    pub system_namespace: String,
    /// The cluster's DNS domain, for the addresses written on a Gateway.
    pub cluster_domain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("an object from the Kubernetes API: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}: a kind the controller does not write")]
    UnknownKind(String),
}

struct Context {
    client: kube::Client,
    settings: ControllerSettings,
    /// Every Gateway, as the controller's watch holds them.
    gateways: Store<DynamicObject>,
}

/// Installs the class (the GatewayClass, accepted, and the ClusterRole waypoints read their
/// config with; retried until the API answers), calls `installed`, then reconciles Gateways
/// until `shutdown`.
pub async fn run(
    client: kube::Client,
    settings: ControllerSettings,
    installed: impl FnOnce(),
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    // Until the API answers (it may be starting too), with backoff.
    let mut pause = Duration::from_millis(500);
    while let Err(error) = install_class(&client).await {
        warn!(%error, retry_in = ?pause, "installing the waypoint class failed");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
    installed();
    let resource = |kind: &str| {
        let found = kinds::kind(kind).unwrap_or_else(|| panic!("{kind} is in the kinds table"));
        found.api_resource()
    };
    let gateway = resource("Gateway");
    let all = |kind: &str| Api::<DynamicObject>::all_with(client.clone(), &resource(kind));
    let managed = watcher::Config::default().labels(&format!("{MANAGED_LABEL}={MANAGER}"));
    let controller = Controller::new_with(all("Gateway"), watcher::Config::default(), gateway);
    let gateways = controller.store();
    let system_namespace = settings.system_namespace.clone();
    let overlay_owners = {
        let gateways = gateways.clone();
        move |config_map: DynamicObject| affected_by(&gateways, &config_map, &system_namespace)
    };
    let controller = controller
        .owns_with(all("Deployment"), resource("Deployment"), managed.clone())
        .owns_with(all("Service"), resource("Service"), managed)
        .watches_with(
            all("ConfigMap"),
            resource("ConfigMap"),
            watcher::Config::default(),
            overlay_owners,
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let context = Arc::new(Context {
        client,
        settings,
        gateways,
    });
    info!(class = WAYPOINT_CLASS, "waypoint controller started");
    let statuses = tokio::spawn(write_statuses(context.client.clone(), shutdown.clone()));
    controller
        .run(reconcile, retry_later, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "waypoint controller");
            }
        })
        .await;
    statuses.abort();
    Ok(())
}

/// Follows the cluster's config and, after each compile, writes the statuses (of routes and
/// policies on its waypoints) that changed, until `shutdown`. A write that fails is tried
/// again from the next compile, or after [`RETRY`] (a conflict means the object changed: the
/// next compile has it).
async fn write_statuses(client: kube::Client, shutdown: CancellationToken) {
    let mut pause = RETRY;
    let mut reports = loop {
        let attempt = shutdown.child_token();
        let (source, reports) = KubeSource::new(client.clone()).reporting();
        match source.start(attempt.clone()).await {
            Ok(_) => break reports,
            Err(error) => {
                attempt.cancel();
                warn!(%error, retry_in = ?pause, "reading the cluster's config for statuses failed");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(RESYNC);
    };
    loop {
        let report = reports.borrow_and_update().clone();
        let mut failed = false;
        if let Some(report) = report {
            let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
            for update in statuses::updates(&report, &now) {
                if let Err(error) = write_status_of(&client, &update).await {
                    let object = format!("{} {}/{}", update.kind, update.namespace, update.name);
                    match &error {
                        ControllerError::Api(kube::Error::Api(status)) if status.code == 409 => {
                            debug!(%object, "changed while its status was written");
                        }
                        _ => warn!(%object, %error, "writing the status failed"),
                    }
                    failed = true;
                }
            }
        }
        let retry = async {
            match failed {
                true => tokio::time::sleep(RETRY).await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            () = retry => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Writes `update`'s status, if the object is still at the version it was computed from.
async fn write_status_of(
    client: &kube::Client,
    update: &StatusUpdate,
) -> Result<(), ControllerError> {
    let patch = Patch::Merge(json!({
        "metadata": {"resourceVersion": update.resource_version},
        "status": update.status,
    }));
    (api(client, &update.kind, Some(&update.namespace))?)
        .patch_status(&update.name, &PatchParams::default(), &patch)
        .await?;
    info!(object = %format!("{} {}/{}", update.kind, update.namespace, update.name), "status written");
    Ok(())
}

/// The Gateways an overlay ConfigMap shapes: every one of the class for class-wide defaults,
/// else those whose `parametersRef` names it.
fn affected_by(
    gateways: &Store<DynamicObject>,
    config_map: &DynamicObject,
    system_namespace: &str,
) -> Vec<ObjectRef<DynamicObject>> {
    let namespace = config_map.metadata.namespace.as_deref().unwrap_or("");
    let name = config_map.metadata.name.as_deref().unwrap_or("");
    let labels = config_map.metadata.labels.as_ref();
    let class_wide = namespace == system_namespace
        && labels
            .and_then(|l| l.get(DEFAULTS_LABEL))
            .map(String::as_str)
            == Some(WAYPOINT_CLASS);
    let gateway = kinds::kind("Gateway").map(|k| k.api_resource());
    (gateways.state().iter())
        .filter(|gw| gw.data["spec"]["gatewayClassName"] == WAYPOINT_CLASS)
        .filter(|gw| {
            class_wide
                || (gw.metadata.namespace.as_deref() == Some(namespace)
                    && gw.data["spec"]["infrastructure"]["parametersRef"]["name"] == name)
        })
        .filter_map(|gw| Some(ObjectRef::from_obj_with(gw.as_ref(), gateway.clone()?)))
        .collect()
}

fn retry_later(gateway: Arc<DynamicObject>, error: &ControllerError, _: Arc<Context>) -> Action {
    let name = gateway.metadata.name.as_deref().unwrap_or("");
    let namespace = gateway.metadata.namespace.as_deref().unwrap_or("");
    warn!(gateway = %format!("{namespace}/{name}"), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

async fn reconcile(
    gateway: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, ControllerError> {
    let gateway = serde_json::to_value(gateway.as_ref())?;
    if gateway["spec"]["gatewayClassName"] != WAYPOINT_CLASS {
        return Ok(Action::await_change());
    }
    let outcome = serve(&gateway, &context).await?;
    write_status(&context.client, &gateway, &outcome).await?;
    sweep_bindings(&context).await?;
    Ok(Action::requeue(RESYNC))
}

/// Applies what `gateway` runs as; returns the outcome its status reports.
async fn serve(gateway: &Value, context: &Context) -> Result<Outcome, ControllerError> {
    let meta = &gateway["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("").to_string();
    let name = meta["name"].as_str().unwrap_or("").to_string();
    let parameters = match gateway_status::check(gateway) {
        Ok(parameters) => parameters,
        Err(refusal) => return Ok(Outcome::Refused(refusal)),
    };
    let overlays = match overlays(context, &namespace, parameters.as_deref()).await? {
        Ok(overlays) => overlays,
        Err(refusal) => return Ok(Outcome::Refused(refusal)),
    };
    let uid = meta["uid"].as_str().map(str::to_string);
    let mut target = GatewayRef::new(&namespace, &name, WAYPOINT_CLASS, uid);
    let infrastructure = &gateway["spec"]["infrastructure"];
    for (field, into) in [
        ("labels", &mut target.labels),
        ("annotations", &mut target.annotations),
    ] {
        if let Some(values) = infrastructure[field].as_object() {
            into.clone_from(values);
        }
    }
    let objects = match waypoint_deploy::render(&target, &context.settings.pod, &overlays) {
        Ok(objects) => objects,
        Err(error) => {
            return Ok(Outcome::Refused(Refusal::new(
                "InvalidParameters",
                error.to_string(),
            )));
        }
    };
    // An object of the same name that something else made is never taken over.
    for object in &objects {
        if let Some(existing) = get(&context.client, object).await?
            && existing["metadata"]["labels"][MANAGED_LABEL] != MANAGER
        {
            return Ok(Outcome::NotProgrammed(Refusal::new(
                "Invalid",
                format!(
                    "{} {} exists and is not managed by {MANAGER}; it is not adopted",
                    object["kind"].as_str().unwrap_or(""),
                    object["metadata"]["name"].as_str().unwrap_or("")
                ),
            )));
        }
    }
    let mut service = None;
    for object in &objects {
        let applied = apply(&context.client, object).await?;
        if object["kind"] == "Service" {
            service = Some(applied);
        }
    }
    // An HPA or PDB no overlay asks for any more goes.
    for part in [Part::HorizontalPodAutoscaler, Part::PodDisruptionBudget] {
        if !objects.iter().any(|o| o["kind"] == part.kind()) {
            delete_managed(&context.client, part.kind(), &namespace, &name).await?;
        }
    }
    let domain = &context.settings.cluster_domain;
    let addresses = service
        .map(|s| gateway_status::addresses(&s, domain))
        .unwrap_or_default();
    if addresses.is_empty() {
        return Ok(Outcome::NotProgrammed(Refusal::new(
            "AddressNotAssigned",
            "the waypoint's Service has no cluster IP yet",
        )));
    }
    info!(gateway = %format!("{namespace}/{name}"), "waypoint programmed");
    Ok(Outcome::Programmed {
        service: format!("{name}.{namespace}.svc.{domain}"),
        addresses,
    })
}

/// The overlays for a Gateway in `namespace`: class-wide defaults, then its parameters.
async fn overlays(
    context: &Context,
    namespace: &str,
    parameters: Option<&str>,
) -> Result<Result<Overlays, Refusal>, ControllerError> {
    let config_maps = |ns: &str| api(&context.client, "ConfigMap", Some(ns));
    let invalid = |message: String| Ok(Err(Refusal::new("InvalidParameters", message)));
    let mut overlays = Overlays::default();
    let selector = ListParams::default().labels(&format!("{DEFAULTS_LABEL}={WAYPOINT_CLASS}"));
    let mut defaults = config_maps(&context.settings.system_namespace)?
        .list(&selector)
        .await?
        .items;
    defaults.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for config_map in defaults {
        if let Err(error) = overlays.add_config_map(&serde_json::to_value(config_map)?) {
            return invalid(format!("class defaults: {error}"));
        }
    }
    if let Some(name) = parameters {
        let Some(config_map) = config_maps(namespace)?.get_opt(name).await? else {
            return invalid(format!(
                "spec.infrastructure.parametersRef: ConfigMap {namespace}/{name} not found"
            ));
        };
        if let Err(error) = overlays.add_config_map(&serde_json::to_value(config_map)?) {
            return invalid(format!("spec.infrastructure.parametersRef: {error}"));
        }
    }
    Ok(Ok(overlays))
}

/// Writes `gateway`'s status for `outcome`, unless it already says that.
async fn write_status(
    client: &kube::Client,
    gateway: &Value,
    outcome: &Outcome,
) -> Result<(), ControllerError> {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut status = gateway_status::status(gateway, outcome, &now);
    if gateway.get("status") == Some(&status) {
        return Ok(());
    }
    if status.get("addresses").is_none() {
        // A merge patch keeps what it does not name: the old addresses are removed by name.
        status["addresses"] = Value::Null;
    }
    let namespace = gateway["metadata"]["namespace"].as_str();
    let name = gateway["metadata"]["name"].as_str().unwrap_or("");
    let patch = Patch::Merge(json!({"status": status}));
    (api(client, "Gateway", namespace)?)
        .patch_status(name, &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

/// Deletes the config-reading bindings of Gateways that are gone (a cluster-scoped object
/// cannot be owned by a Gateway, so garbage collection does not remove them).
async fn sweep_bindings(context: &Context) -> Result<(), ControllerError> {
    let served: HashSet<(String, String)> = (context.gateways.state().iter())
        .filter(|gw| gw.data["spec"]["gatewayClassName"] == WAYPOINT_CLASS)
        .map(|gw| {
            let meta = &gw.metadata;
            (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let bindings = api(&context.client, "ClusterRoleBinding", None)?;
    let selector = ListParams::default().labels(&format!("{MANAGED_LABEL}={MANAGER}"));
    for binding in bindings.list(&selector).await?.items {
        let data = serde_json::to_value(&binding)?;
        let gateway = (
            data["subjects"][0]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            data["metadata"]["labels"][GATEWAY_LABEL]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        if !served.contains(&gateway) {
            let name = binding.metadata.name.as_deref().unwrap_or("");
            info!(binding = name, "the waypoint is gone; removing its binding");
            bindings.delete(name, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

/// Applies the GatewayClass (and marks it accepted) and the ClusterRole of waypoints.
async fn install_class(client: &kube::Client) -> Result<(), ControllerError> {
    let class = apply(client, &waypoint_deploy::gateway_class()).await?;
    let generation = class["metadata"]["generation"].clone();
    let accepted = json!({"status": {"conditions": [{
        "type": "Accepted", "status": "True", "reason": "Accepted",
        "message": "handled by the mesh's waypoint controller",
        "observedGeneration": generation,
        "lastTransitionTime": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    }]}});
    let already = (class["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten())
    .any(|c| c["type"] == "Accepted" && c["status"] == "True");
    if !already {
        (api(client, "GatewayClass", None)?)
            .patch_status(
                WAYPOINT_CLASS,
                &PatchParams::default(),
                &Patch::Merge(accepted),
            )
            .await?;
    }
    apply(client, &waypoint_deploy::config_reader()).await?;
    info!(class = WAYPOINT_CLASS, "GatewayClass installed");
    Ok(())
}

/// The API of `kind`, in `namespace` (or cluster-wide).
fn api(
    client: &kube::Client,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>, ControllerError> {
    let found = kinds::kind(kind).ok_or_else(|| ControllerError::UnknownKind(kind.into()))?;
    Ok(found.api(client, namespace))
}

fn api_of(client: &kube::Client, object: &Value) -> Result<Api<DynamicObject>, ControllerError> {
    let kind = object["kind"].as_str().unwrap_or("");
    api(client, kind, object["metadata"]["namespace"].as_str())
}

/// The object as the API has it now, if it exists.
async fn get(client: &kube::Client, object: &Value) -> Result<Option<Value>, ControllerError> {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    match api_of(client, object)?.get_opt(name).await? {
        Some(found) => Ok(Some(serde_json::to_value(found)?)),
        None => Ok(None),
    }
}

/// Server-side apply, forced, as the controller's one field manager; returns the result.
async fn apply(client: &kube::Client, object: &Value) -> Result<Value, ControllerError> {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let params = PatchParams::apply(MANAGER).force();
    let applied = (api_of(client, object)?)
        .patch(name, &params, &Patch::Apply(object))
        .await?;
    Ok(serde_json::to_value(applied)?)
}

/// Deletes `kind` `namespace/name` if it exists and the controller made it.
async fn delete_managed(
    client: &kube::Client,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<(), ControllerError> {
    let objects = api(client, kind, Some(namespace))?;
    let Some(existing) = objects.get_opt(name).await? else {
        return Ok(());
    };
    let labels = existing.metadata.labels.unwrap_or_default();
    if labels.get(MANAGED_LABEL).map(String::as_str) == Some(MANAGER) {
        info!(kind, object = %format!("{namespace}/{name}"), "no longer asked for; deleting");
        objects.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}
