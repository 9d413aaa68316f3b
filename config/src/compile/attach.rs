//! Route attachment: which (Service, port) each HTTPRoute applies to, for which callers (a
//! route in another namespace than its parent Service is a consumer route: it applies to
//! callers from its own namespace only), and precedence order. Where GRPCRoutes and HTTPRoutes
//! bind to the same Service port for the same callers, the GRPCRoutes win and the HTTPRoutes
//! are ignored there, `Conflicted` (GEP-1426, "Route types").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteUseDefaultGateways as UseDefaultGateways,
};

use super::routes::ServiceMap;
use super::waypoints::Gateways;
use crate::error::Diagnostics;
use crate::error::Reason::{
    Conflicted, NoEffect, NoMatchingParent as NoParent, NotAllowedByListeners as NotAllowed,
};
use crate::manifest::Doc;
use crate::model::ObjectRef;
use crate::route::{self, PortRoutes, RankedRule, RouteRule};
use crate::rule_set::RuleSet;
use crate::status::RouteParents;

/// Ordered rules per Service, per service port.
pub(crate) type RouteTable = HashMap<ObjectRef, HashMap<u16, PortRoutes>>;

/// A Service port, and the consumer namespace the route is for (`None`: a producer route).
type Target = (ObjectRef, u16, Option<String>);

/// The targets of one route, each with the index of the first parentRef that names it.
type Targets = BTreeMap<Target, usize>;

/// The kind a route was written as (a GRPCRoute is compiled as the HTTPRoute it means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
}

/// Attaches each route's compiled rules (`compiled[i]` belongs to `docs[i]`, written as
/// `kinds[i]`) and orders them.
pub(crate) fn attach(
    docs: &[Doc<HttpRoute>],
    kinds: &[RouteKind],
    compiled: &[Vec<Arc<RouteRule>>],
    services: &ServiceMap,
    gateways: &Gateways,
    diag: &mut Diagnostics,
) -> RouteTable {
    let targets: Vec<Targets> = (docs.iter())
        .map(|doc| targets(doc, services, gateways, diag))
        .collect();
    // The GRPCRoute that first takes each target, by which the HTTPRoutes there are ignored.
    let mut grpc_owner: BTreeMap<&Target, &str> = BTreeMap::new();
    for ((doc, kind), targets) in docs.iter().zip(kinds).zip(&targets) {
        if *kind == RouteKind::Grpc {
            for target in targets.keys() {
                grpc_owner.entry(target).or_insert(&doc.origin.object);
            }
        }
    }
    let mut ranked: BTreeMap<&Target, Vec<RankedRule>> = BTreeMap::new();
    for (((doc, kind), rules), targets) in docs.iter().zip(kinds).zip(compiled).zip(&targets) {
        let created = doc.obj.metadata.creation_timestamp.clone();
        for (target, parent) in targets {
            if let (RouteKind::Http, Some(owner)) = (kind, grpc_owner.get(target)) {
                let (service, port, _) = target;
                let msg = format!(
                    "{owner} binds Service {service} port {port} too, and a GRPCRoute takes \
                     precedence over an HTTPRoute (GEP-1426): this route is ignored there"
                );
                let field = format!("spec.parentRefs[{parent}]");
                diag.warn_because(Conflicted, &doc.origin, field, msg);
                continue;
            }
            let entry = ranked.entry(target).or_default();
            entry.extend(rules.iter().map(|rule| RankedRule {
                rule: Arc::clone(rule),
                created: created.clone(),
            }));
        }
    }
    let mut table = RouteTable::new();
    for ((service, port, consumer), mut rules) in ranked {
        let (service, port, consumer) = (service.clone(), *port, consumer.clone());
        route::sort_rules(&mut rules);
        let ordered = RuleSet::new(rules.into_iter().map(|r| r.rule).collect());
        let routes = table.entry(service).or_default().entry(port).or_default();
        match consumer {
            None => routes.producer = ordered,
            Some(namespace) => {
                routes.consumers.insert(namespace, ordered);
            }
        }
    }
    table
}

/// The route and its parents, described for its status.
pub(crate) fn parents(doc: &Doc<HttpRoute>) -> RouteParents {
    let parents = doc.obj.spec.parent_refs.as_deref().unwrap_or_default();
    let described = parents.iter().map(|p| {
        let namespace = p.namespace.as_deref().unwrap_or(&doc.namespace);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        let port = p.port.map_or(String::new(), |port| format!(" port {port}"));
        format!("{kind} {namespace}/{}{port}", p.name)
    });
    RouteParents {
        route: doc.origin.object.clone(),
        parents: described.collect(),
    }
}

fn targets(
    doc: &Doc<HttpRoute>,
    services: &ServiceMap,
    gateways: &Gateways,
    diag: &mut Diagnostics,
) -> Targets {
    let mut out = Targets::new();
    let parents = doc.obj.spec.parent_refs.as_deref().unwrap_or_default();
    if parents.is_empty() {
        diag.warn(
            &doc.origin,
            "spec.parentRefs",
            "no parentRefs: the route applies to nothing",
        );
    }
    let to_service = |p: &&HttpRouteParentRefs| p.kind.as_deref() == Some("Service");
    let hostnames = doc.obj.spec.hostnames.as_deref().unwrap_or_default();
    if !hostnames.is_empty() && parents.iter().any(|p| to_service(&p)) {
        let msg = "hostnames have no effect on a mesh route (GEP-1294): the Service the caller \
                   addressed selects it; to route by host, match the Host header";
        diag.warn_because(NoEffect, &doc.origin, "spec.hostnames", msg);
    }
    if doc.obj.spec.use_default_gateways == Some(UseDefaultGateways::All) {
        let msg = "useDefaultGateways: All has no effect: a waypoint is not a default Gateway; \
                   name the parents in parentRefs";
        diag.warn_because(NoEffect, &doc.origin, "spec.useDefaultGateways", msg);
    }
    for (i, parent) in parents.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let group = parent
            .group
            .as_deref()
            .unwrap_or("gateway.networking.k8s.io");
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        match (group, kind) {
            ("" | "core", "Service") => {
                let found = service_parent(doc, parent, &field, services, diag);
                found
                    .into_iter()
                    .for_each(|t| _ = out.entry(t).or_insert(i));
            }
            ("gateway.networking.k8s.io", "Gateway") => {
                let found = gateway_parent(doc, parent, &field, services, gateways, diag);
                found
                    .into_iter()
                    .for_each(|t| _ = out.entry(t).or_insert(i));
            }
            _ => {
                let msg = format!("unsupported parentRef kind {group:?}/{kind:?}: ignored");
                diag.warn_because(NoParent, &doc.origin, format!("{field}.kind"), msg);
            }
        }
    }
    out
}

fn service_parent(
    doc: &Doc<HttpRoute>,
    parent: &HttpRouteParentRefs,
    field: &str,
    services: &ServiceMap,
    diag: &mut Diagnostics,
) -> Vec<Target> {
    let namespace = parent.namespace.as_deref().unwrap_or(&doc.namespace);
    let key = ObjectRef::new(namespace, &parent.name);
    let port = match parent.port {
        None => None,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                let msg = format!("invalid port {p}: must be 1-65535");
                diag.error(&doc.origin, format!("{field}.port"), msg);
                return Vec::new();
            }
        },
    };
    // A parent in another namespace makes a consumer route: for callers from the route's own.
    let consumer = (namespace != doc.namespace).then(|| doc.namespace.clone());
    let Some(service) = services.get(&key) else {
        let msg = format!("parent Service {key} does not exist");
        diag.warn_because(NoParent, &doc.origin, format!("{field}.name"), msg);
        return Vec::new();
    };
    // `sectionName` names a port of the Service; with `port` too, both must name the same one.
    let section = parent.section_name.as_deref();
    let chosen: Vec<u16> = (service.ports.iter())
        .filter(|sp| port.is_none_or(|p| sp.port == p))
        .filter(|sp| section.is_none_or(|name| sp.name.as_deref() == Some(name)))
        .map(|sp| sp.port)
        .collect();
    if chosen.is_empty() {
        let (at, what) = match (port, section) {
            (Some(p), None) => ("port", format!("port {p}")),
            (None, Some(name)) => ("sectionName", format!("port named {name:?}")),
            (Some(p), Some(name)) => ("sectionName", format!("port {p} named {name:?}")),
            (None, None) => ("name", "port".to_owned()),
        };
        let msg = format!("Service {key} has no {what}");
        diag.warn_because(NoParent, &doc.origin, format!("{field}.{at}"), msg);
    }
    (chosen.into_iter())
        .map(|p| (key.clone(), p, consumer.clone()))
        .collect()
}

fn gateway_parent(
    doc: &Doc<HttpRoute>,
    parent: &HttpRouteParentRefs,
    field: &str,
    services: &ServiceMap,
    gateways: &Gateways,
    diag: &mut Diagnostics,
) -> Vec<Target> {
    let namespace = parent.namespace.as_deref().unwrap_or(&doc.namespace);
    let key = ObjectRef::new(namespace, &parent.name);
    let Some(info) = gateways.get(&key) else {
        let msg = format!("parent Gateway {key} does not exist");
        diag.warn_because(NoParent, &doc.origin, format!("{field}.name"), msg);
        return Vec::new();
    };
    if !info.is_waypoint {
        let msg = format!("parent Gateway {key} is not a waypoint: ignored");
        diag.warn_because(NoParent, &doc.origin, format!("{field}.name"), msg);
        return Vec::new();
    }
    // `sectionName` and `port` name one of the Gateway's listeners (the waypoint's HBONE one).
    let section = parent.section_name.as_deref();
    let listener = (info.listeners.iter()).any(|(name, port)| {
        section.is_none_or(|s| s == name) && parent.port.is_none_or(|p| p == *port)
    });
    if !listener {
        let msg = format!("Gateway {key} has no such listener");
        let at = if section.is_some() {
            "sectionName"
        } else {
            "port"
        };
        diag.warn_because(NoParent, &doc.origin, format!("{field}.{at}"), msg);
        return Vec::new();
    }
    if namespace != doc.namespace && !info.routes_from_all {
        let msg = format!(
            "waypoint {key} does not admit routes from namespace {}",
            doc.namespace
        );
        diag.warn_because(NotAllowed, &doc.origin, format!("{field}.namespace"), msg);
        return Vec::new();
    }
    (services.iter())
        .filter(|(_, service)| service.waypoint.as_ref() == Some(&key))
        .flat_map(|(svc_key, service)| {
            (service.ports.iter()).map(|sp| (svc_key.clone(), sp.port, None))
        })
        .collect()
}
