//! Services → `Service`s (VIP, ports, waypoint binding) and their endpoints.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Labels};
use super::pod_index::PodIndex;
use super::waypoints::{self, Gateways, Traffic};
use super::workloads::NamespaceLabels;
use crate::CLUSTER_DOMAIN;
use crate::error::{Diagnostics, Origin};
use crate::manifest::Doc;
use crate::model::{Endpoint, Service, ServicePort, TargetPort, Workload};

/// What building a Service needs to look up.
pub(crate) struct Context<'a> {
    pub namespaces: &'a NamespaceLabels,
    pub gateways: &'a Gateways,
    pub workloads: &'a [Arc<Workload>],
}

/// Every Service, sorted by namespace/name; VIPs must be unique and not pod IPs.
pub(crate) fn services(
    docs: &[Doc<core::Service>],
    ctx: &Context<'_>,
    diag: &mut Diagnostics,
) -> Vec<Arc<Service>> {
    let pod_ips: HashMap<IpAddr, &Workload> = ctx.workloads.iter().map(|w| (w.ip, &**w)).collect();
    let mut vips: HashMap<IpAddr, String> = HashMap::new();
    let mut out = Vec::new();
    for doc in docs {
        let Some(svc) = service(doc, ctx, diag) else {
            continue;
        };
        if let Some(vip) = svc.vip {
            let clash = match (vips.get(&vip), pod_ips.get(&vip)) {
                (Some(other), _) => Some(other.clone()),
                (None, Some(w)) => Some(format!("Pod {}/{}", w.namespace, w.name)),
                (None, None) => None,
            };
            if let Some(other) = clash {
                let msg = format!("clusterIP {vip} is also used by {other}");
                diag.error(&doc.origin, "spec.clusterIP", msg);
                continue;
            }
            vips.insert(vip, doc.origin.object.clone());
        }
        out.push(Arc::new(svc));
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn service(doc: &Doc<core::Service>, ctx: &Context<'_>, diag: &mut Diagnostics) -> Option<Service> {
    let errors_before = diag.errors.len();
    let labels = doc.obj.metadata.labels.clone().unwrap_or_default();
    let spec = doc.obj.spec.clone().unwrap_or_default();
    for (field, msg) in labels::check_waypoint_labels(&labels) {
        diag.error(&doc.origin, field, msg);
    }
    let selector: Labels = spec.selector.clone().unwrap_or_default();
    for (key, msg) in labels::check_selector(&selector) {
        diag.error(&doc.origin, format!("spec.selector[{key}]"), msg);
    }
    let vip = cluster_ip(&doc.origin, spec.cluster_ip.as_deref(), diag);
    let ports = ports(&doc.origin, &spec, diag);
    let ns_labels = ctx.namespaces.get(&doc.namespace);
    let wanted = labels::requested_waypoint(&labels, &doc.namespace, ns_labels);
    let waypoint = waypoints::gate(wanted, ctx.gateways, Traffic::Service, &doc.origin, diag);
    if diag.errors.len() > errors_before {
        return None;
    }
    Some(Service {
        hostname: format!("{}.{}.svc.{CLUSTER_DOMAIN}", doc.name, doc.namespace),
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        vip,
        ports,
        labels,
        selector,
        waypoint,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    })
}

fn cluster_ip(origin: &Origin, raw: Option<&str>, diag: &mut Diagnostics) -> Option<IpAddr> {
    match raw {
        None | Some("") | Some("None") => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => Some(ip),
            _ => {
                diag.error(origin, "spec.clusterIP", format!("invalid IP {text:?}"));
                None
            }
        },
    }
}

fn ports(origin: &Origin, spec: &core::ServiceSpec, diag: &mut Diagnostics) -> Vec<ServicePort> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let Some(port) = valid_port(p.port) else {
            let msg = format!("invalid port {}: must be 1-65535", p.port);
            diag.error(origin, format!("{field}.port"), msg);
            continue;
        };
        if !seen.insert(port) {
            diag.error(
                origin,
                format!("{field}.port"),
                format!("duplicate port {port}"),
            );
            continue;
        }
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => match valid_port(*n) {
                Some(n) => TargetPort::Number(n),
                None => {
                    let msg = format!("invalid port {n}: must be 1-65535");
                    diag.error(origin, format!("{field}.targetPort"), msg);
                    continue;
                }
            },
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) if n > 0 => TargetPort::Number(n),
                _ if !s.is_empty() && s.len() <= 15 => TargetPort::Name(s.clone()),
                _ => {
                    let msg = format!("invalid targetPort {s:?}");
                    diag.error(origin, format!("{field}.targetPort"), msg);
                    continue;
                }
            },
        };
        out.push(ServicePort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port,
            target_port,
            app_protocol: p.app_protocol.clone(),
        });
    }
    out
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p > 0)
}

/// Whether a Service `selector` selects a pod with `labels` (an empty selector selects nothing).
pub(crate) fn selects(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The endpoints of every port of `service` (ready pods in its namespace matching its
/// selector, or all of them with `publishNotReadyAddresses`; a named targetPort resolves per
/// pod, pods without that port are skipped).
pub(crate) fn endpoints(service: &Service, pods: &PodIndex<'_>) -> HashMap<u16, Vec<Endpoint>> {
    let mut pods = pods.selected(&service.namespace, &service.selector);
    pods.retain(|w| w.ready || service.publish_not_ready);
    let mut out = HashMap::new();
    for sp in &service.ports {
        let list: Vec<Endpoint> = pods
            .iter()
            .filter_map(|w| {
                let port = resolve_target(&sp.target_port, w)?;
                Some(Endpoint {
                    workload: Arc::clone(w),
                    port,
                })
            })
            .collect();
        out.insert(sp.port, list);
    }
    out
}

/// The pod port a `targetPort` means for this pod.
pub fn resolve_target(target: &TargetPort, workload: &Workload) -> Option<u16> {
    match target {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => workload
            .container_ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.port),
    }
}
