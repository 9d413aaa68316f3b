//! Gateways: which are waypoints, what they serve, their pods; gating of waypoint bindings.

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_api::gateways::{Gateway, GatewayListenersAllowedRoutesNamespacesFrom as From};

use super::labels::{self, GATEWAY_NAME, USE_WAYPOINT, WAYPOINT_FOR};
use super::pod_index::PodIndex;
use crate::error::{Diagnostics, Origin};
use crate::manifest::Doc;
use crate::model::{ObjectRef, Waypoint, WaypointFor, Workload};

/// Gateway classes whose Gateways are waypoints.
pub const WAYPOINT_CLASSES: [&str; 2] = ["istio-waypoint", "mesh-waypoint"];

/// What the compiler needs to know about one Gateway.
#[derive(Clone, Debug)]
pub(crate) struct GatewayInfo {
    pub class: String,
    pub is_waypoint: bool,
    pub waypoint_for: WaypointFor,
    /// A listener admits routes from all namespaces (`allowedRoutes.namespaces.from: All`).
    pub routes_from_all: bool,
    /// Each listener's name and port (what a route's `sectionName` and `port` may name).
    pub listeners: Vec<(String, i32)>,
}

pub(crate) type Gateways = BTreeMap<ObjectRef, GatewayInfo>;

/// Which traffic a binding is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Traffic {
    Service,
    Workload,
}

/// Reads every Gateway; non-waypoint classes are kept (for diagnostics) but flagged.
pub(crate) fn classify(docs: &[Doc<Gateway>], diag: &mut Diagnostics) -> Gateways {
    let mut out = Gateways::new();
    for doc in docs {
        let spec = &doc.obj.spec;
        let labels = doc.obj.metadata.labels.clone().unwrap_or_default();
        for (field, msg) in labels::check_waypoint_labels(&labels) {
            diag.error(&doc.origin, field, msg);
        }
        for (i, l) in spec.listeners.iter().enumerate() {
            if !(1..=65535).contains(&l.port) {
                let msg = format!("invalid port {}: must be 1-65535", l.port);
                diag.error(&doc.origin, format!("spec.listeners[{i}].port"), msg);
            }
        }
        let class = spec.gateway_class_name.clone();
        let is_waypoint = WAYPOINT_CLASSES.contains(&class.as_str());
        if !is_waypoint {
            let msg = format!("ignored: gatewayClassName {class:?} is not a waypoint class");
            diag.warn(&doc.origin, "spec.gatewayClassName", msg);
        }
        let waypoint_for = labels
            .get(WAYPOINT_FOR)
            .and_then(|v| WaypointFor::parse(v))
            .unwrap_or(WaypointFor::Service);
        let routes_from_all = spec.listeners.iter().any(|l| {
            let from = l
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref());
            matches!(from.and_then(|n| n.from.as_ref()), Some(From::All))
        });
        let listeners = (spec.listeners.iter())
            .map(|l| (l.name.clone(), l.port))
            .collect();
        let info = GatewayInfo {
            class,
            is_waypoint,
            waypoint_for,
            routes_from_all,
            listeners,
        };
        out.insert(ObjectRef::new(&doc.namespace, &doc.name), info);
    }
    out
}

/// True when the pod with these labels in `namespace` is a pod of a waypoint Gateway.
pub(crate) fn is_waypoint_pod(
    gateways: &Gateways,
    namespace: &str,
    labels: &labels::Labels,
) -> bool {
    labels.get(GATEWAY_NAME).is_some_and(|name| {
        let key = ObjectRef::new(namespace, name);
        gateways.get(&key).is_some_and(|g| g.is_waypoint)
    })
}

/// Keeps a requested binding only if the Gateway exists, is a waypoint, and serves `traffic`.
/// Missing or non-waypoint Gateways are warnings, not errors.
pub(crate) fn gate(
    requested: Option<ObjectRef>,
    gateways: &Gateways,
    traffic: Traffic,
    origin: &Origin,
    diag: &mut Diagnostics,
) -> Option<ObjectRef> {
    let wanted = requested?;
    let field = labels::label_field(USE_WAYPOINT);
    let Some(info) = gateways.get(&wanted) else {
        diag.warn(
            origin,
            field,
            format!("waypoint Gateway {wanted} does not exist"),
        );
        return None;
    };
    if !info.is_waypoint {
        let msg = format!(
            "Gateway {wanted} is not a waypoint (class {:?})",
            info.class
        );
        diag.warn(origin, field, msg);
        return None;
    }
    let serves = match traffic {
        Traffic::Service => info.waypoint_for.serves_services(),
        Traffic::Workload => info.waypoint_for.serves_workloads(),
    };
    serves.then_some(wanted)
}

/// Builds the waypoints with their pods (indexed from workloads sorted by namespace/name).
pub(crate) fn build(
    docs: &[Doc<Gateway>],
    gateways: &Gateways,
    pods: &PodIndex<'_>,
    diag: &mut Diagnostics,
) -> Vec<Arc<Waypoint>> {
    let mut out = Vec::new();
    for doc in docs {
        let key = ObjectRef::new(&doc.namespace, &doc.name);
        let Some(info) = gateways.get(&key).filter(|g| g.is_waypoint) else {
            continue;
        };
        let pods: Vec<Arc<Workload>> = (pods.labelled(&key.namespace, GATEWAY_NAME, &key.name))
            .iter()
            .map(|w| Arc::clone(w))
            .collect();
        if pods.is_empty() {
            let msg = format!("no Pod labelled {GATEWAY_NAME}: {}", key.name);
            diag.warn(&doc.origin, "metadata.name", msg);
        }
        let ready_pods = (pods.iter()).filter(|w| w.ready).cloned().collect();
        out.push(Arc::new(Waypoint {
            name: key.name,
            namespace: key.namespace,
            waypoint_for: info.waypoint_for,
            pods,
            ready_pods,
        }));
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}
