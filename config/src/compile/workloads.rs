//! Namespaces, Nodes and Pods → namespace labels, `Node`s and `Workload`s.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;

use super::labels::{self, Labels};
use super::waypoints::{self, Gateways, Traffic};
use mesh_core::Identity;

use crate::error::Diagnostics;
use crate::manifest::Doc;
use crate::model::{ContainerPort, Node, Workload};

/// Namespace name → its labels.
pub(crate) type NamespaceLabels = BTreeMap<String, Labels>;

/// The labels of every declared Namespace; checks its waypoint labels.
pub(crate) fn namespaces(docs: &[Doc<core::Namespace>], diag: &mut Diagnostics) -> NamespaceLabels {
    let mut out = NamespaceLabels::new();
    for doc in docs {
        let labels = doc.obj.metadata.labels.clone().unwrap_or_default();
        for (field, msg) in labels::check_waypoint_labels(&labels) {
            diag.error(&doc.origin, field, msg);
        }
        out.insert(doc.name.clone(), labels);
    }
    out
}

/// Every Node with its InternalIP.
pub(crate) fn nodes(docs: &[Doc<core::Node>], diag: &mut Diagnostics) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for doc in docs {
        let addresses = doc.obj.status.as_ref().and_then(|s| s.addresses.as_ref());
        let internal = addresses
            .into_iter()
            .flatten()
            .enumerate()
            .find(|(_, a)| a.type_ == "InternalIP");
        let Some((i, addr)) = internal else {
            diag.error(&doc.origin, "status.addresses", "no InternalIP address");
            continue;
        };
        let field = format!("status.addresses[{i}].address");
        let Ok(address) = addr.address.parse::<IpAddr>() else {
            diag.error(&doc.origin, field, format!("invalid IP {:?}", addr.address));
            continue;
        };
        if let Some(other) = out.iter().find(|n| n.address == address) {
            let msg = format!("InternalIP {address} is also used by Node {}", other.name);
            diag.error(&doc.origin, field, msg);
            continue;
        }
        out.push(Node {
            name: doc.name.clone(),
            address,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What building a workload needs to look up.
pub(crate) struct Context<'a> {
    /// The trust domain of the workloads' identities.
    pub trust_domain: &'a str,
    pub namespaces: &'a NamespaceLabels,
    pub nodes: &'a [Node],
    pub gateways: &'a Gateways,
}

/// Every Pod as a `Workload`, sorted by namespace/name; pod IPs must be unique.
pub(crate) fn workloads(
    docs: &[Doc<core::Pod>],
    ctx: &Context<'_>,
    diag: &mut Diagnostics,
) -> Vec<Arc<Workload>> {
    let mut by_ip: HashMap<IpAddr, String> = HashMap::new();
    let mut out = Vec::new();
    for doc in docs {
        let Some(w) = workload(doc, ctx, diag) else {
            continue;
        };
        if let Some(other) = by_ip.get(&w.ip) {
            let msg = format!("duplicate pod IP {} (also used by {other})", w.ip);
            diag.error(&doc.origin, "status.podIP", msg);
            continue;
        }
        by_ip.insert(w.ip, doc.origin.object.clone());
        out.push(Arc::new(w));
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn workload(doc: &Doc<core::Pod>, ctx: &Context<'_>, diag: &mut Diagnostics) -> Option<Workload> {
    let meta = &doc.obj.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let no_spec = core::PodSpec::default();
    let spec = doc.obj.spec.as_ref().unwrap_or(&no_spec);
    let errors_before = diag.errors.len();
    for (field, msg) in labels::check_waypoint_labels(&labels) {
        diag.error(&doc.origin, field, msg);
    }
    let ip = pod_ip(doc, diag);
    let node = match spec.node_name.as_deref() {
        None | Some("") => {
            diag.error(&doc.origin, "spec.nodeName", "required");
            None
        }
        Some(n) if !ctx.nodes.iter().any(|node| node.name == n) => {
            diag.error(
                &doc.origin,
                "spec.nodeName",
                format!("names no Node: {n:?}"),
            );
            None
        }
        Some(n) => Some(n.to_string()),
    };
    let container_ports = container_ports(doc, spec, diag);
    let waypoint = if waypoints::is_waypoint_pod(ctx.gateways, &doc.namespace, &labels) {
        None
    } else {
        let ns_labels = ctx.namespaces.get(&doc.namespace);
        let wanted = labels::requested_waypoint(&labels, &doc.namespace, ns_labels);
        waypoints::gate(wanted, ctx.gateways, Traffic::Workload, &doc.origin, diag)
    };
    if diag.errors.len() > errors_before {
        return None;
    }
    let service_account = (spec.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let identity = identity(ctx.trust_domain, &doc.namespace, &service_account);
    if let Err(e) = identity.to_string().parse::<Identity>() {
        diag.error(&doc.origin, "spec.serviceAccountName", e.to_string());
        return None;
    }
    Some(Workload {
        identity,
        canonical_service: canonical_service(&labels, &doc.name),
        canonical_revision: canonical_revision(&labels),
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        ip: ip?,
        node: node?,
        service_account,
        labels,
        annotations,
        container_ports,
        waypoint,
        ready: is_ready(&doc.obj),
    })
}

/// Whether a pod takes new connections, as Kubernetes decides an EndpointSlice's `ready`:
/// not being deleted, not finished, and not reported unready. A pod written by hand, with
/// no status conditions, is ready.
fn is_ready(pod: &core::Pod) -> bool {
    let status = pod.status.as_ref();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let unready = (conditions.iter()).any(|c| c.type_ == "Ready" && c.status != "True");
    !(terminating || finished || unready)
}

/// `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
pub fn identity(trust_domain: &str, namespace: &str, service_account: &str) -> Identity {
    Identity::new(trust_domain, namespace, service_account)
}

fn pod_ip(doc: &Doc<core::Pod>, diag: &mut Diagnostics) -> Option<IpAddr> {
    let raw = doc.obj.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    match raw {
        None | Some("") => {
            diag.error(&doc.origin, "status.podIP", "required");
            None
        }
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => Some(ip),
            _ => {
                diag.error(&doc.origin, "status.podIP", format!("invalid IP {text:?}"));
                None
            }
        },
    }
}

fn container_ports(
    doc: &Doc<core::Pod>,
    spec: &core::PodSpec,
    diag: &mut Diagnostics,
) -> Vec<ContainerPort> {
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let field = format!("spec.containers[{i}].ports[{j}].containerPort");
            match u16::try_from(p.container_port) {
                Ok(port) if port > 0 => out.push(ContainerPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port,
                }),
                _ => {
                    let msg = format!("invalid port {}: must be 1-65535", p.container_port);
                    diag.error(&doc.origin, field, msg);
                }
            }
        }
    }
    out
}

fn canonical_service(labels: &Labels, pod_name: &str) -> String {
    labels
        .get("service.istio.io/canonical-name")
        .or_else(|| labels.get("app"))
        .cloned()
        .unwrap_or_else(|| pod_name.to_string())
}

fn canonical_revision(labels: &Labels) -> String {
    labels
        .get("service.istio.io/canonical-revision")
        .or_else(|| labels.get("version"))
        .cloned()
        .unwrap_or_else(|| "latest".to_string())
}
