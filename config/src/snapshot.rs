//! The immutable, indexed result of one compile.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::authn::{JwksUri, Keys, RequestAuthentication};
use crate::error::ConfigError;
use crate::ext_authz::ExtAuthzProvider;
use crate::model::{Endpoint, Node, ObjectRef, Service, Waypoint, Workload};
use crate::peer_authn::{MtlsMode, PeerAuthentication};
use crate::policy::{AuthorizationPolicy, GATEWAY_GROUP, PolicyScope, PolicyTargetRef};
use crate::route::{PortRoutes, RouteRule};
use crate::rule_set::RuleSet;
use crate::status::{self, RouteParents, RouteStatus};
use crate::telemetry::{Telemetry, TelemetrySettings};
use crate::traces::{TracingOverride, TracingProvider};
use crate::traffic::TrafficPolicy;
use crate::{DEFAULT_TRUST_DOMAIN, ROOT_NAMESPACE};

/// Everything known about one Service.
#[derive(Debug)]
struct ServiceEntry {
    endpoints: HashMap<u16, Vec<Endpoint>>,
    routes: HashMap<u16, PortRoutes>,
    traffic: Option<Arc<TrafficPolicy>>,
}

/// The compiled pieces a snapshot is indexed from.
pub(crate) struct Parts {
    /// The mesh config's `trustDomain`, or the default.
    pub trust_domain: String,
    pub warnings: Vec<ConfigError>,
    pub nodes: Vec<Node>,
    pub workloads: Vec<Arc<Workload>>,
    pub services: Vec<Arc<Service>>,
    pub endpoints: HashMap<ObjectRef, HashMap<u16, Vec<Endpoint>>>,
    pub routes: HashMap<ObjectRef, HashMap<u16, PortRoutes>>,
    /// Every route and the parents it names, for their status.
    pub route_parents: Vec<RouteParents>,
    /// From DestinationRules, by Service.
    pub traffic: HashMap<ObjectRef, Arc<TrafficPolicy>>,
    pub waypoints: Vec<Arc<Waypoint>>,
    /// Gateway class of each waypoint.
    pub waypoint_classes: BTreeMap<ObjectRef, String>,
    pub policies: Vec<Arc<AuthorizationPolicy>>,
    pub authentications: Vec<Arc<RequestAuthentication>>,
    /// The mesh config's ext_authz providers, by name.
    pub providers: HashMap<String, Arc<ExtAuthzProvider>>,
    /// The mesh config's OpenTelemetry providers, by name, and its default ones.
    pub tracing_providers: BTreeMap<String, Arc<TracingProvider>>,
    pub default_tracing: Vec<String>,
    pub telemetries: Vec<Arc<Telemetry>>,
    pub peer_authentications: Vec<Arc<PeerAuthentication>>,
}

/// Immutable mesh configuration with lookup indexes. Built by [`crate::compile`].
#[derive(Debug, Default)]
pub struct Snapshot {
    version: u64,
    /// `None`: the default.
    trust_domain: Option<String>,
    warnings: Vec<ConfigError>,
    route_parents: Vec<RouteParents>,
    nodes: Vec<Node>,
    workloads: Vec<Arc<Workload>>,
    workloads_by_ip: HashMap<IpAddr, Arc<Workload>>,
    services: Vec<Arc<Service>>,
    services_by_name: HashMap<String, HashMap<String, (Arc<Service>, ServiceEntry)>>,
    services_by_vip: HashMap<IpAddr, Arc<Service>>,
    services_by_host: HashMap<String, Arc<Service>>,
    waypoints: Vec<Arc<Waypoint>>,
    waypoints_by_ref: BTreeMap<ObjectRef, Arc<Waypoint>>,
    waypoints_by_ip: HashMap<IpAddr, Arc<Waypoint>>,
    waypoint_classes: BTreeMap<ObjectRef, String>,
    policies: Vec<Arc<AuthorizationPolicy>>,
    waypoint_policies: HashMap<ObjectRef, Attached<AuthorizationPolicy>>,
    authentications: Vec<Arc<RequestAuthentication>>,
    providers: HashMap<String, Arc<ExtAuthzProvider>>,
    tracing_providers: BTreeMap<String, Arc<TracingProvider>>,
    default_tracing: Vec<String>,
    /// What each waypoint records: for pod-addressed traffic (and Services no Telemetry
    /// targets), and per Service hostname.
    waypoint_telemetry: HashMap<ObjectRef, (TelemetrySettings, HashMap<String, TelemetrySettings>)>,
    waypoint_authentications: HashMap<ObjectRef, Attached<RequestAuthentication>>,
    /// Each pod's L4 policies, by pod IP.
    l4_policies: HashMap<IpAddr, Vec<Arc<AuthorizationPolicy>>>,
    peer_authentications: Vec<Arc<PeerAuthentication>>,
}

/// The policies (AuthorizationPolicies, RequestAuthentications) one waypoint applies, per
/// destination, found once per snapshot so the request path scans nothing.
#[derive(Debug)]
struct Attached<T> {
    /// Targeting the waypoint's Gateway or GatewayClass: every request (pod-addressed too).
    gateway: Vec<Arc<T>>,
    /// For each Service some policy targets (by hostname): the above plus those targeting
    /// the Service, in policy order.
    services: HashMap<String, Vec<Arc<T>>>,
}

impl<T> Attached<T> {
    /// Those that apply to traffic to `service` (pod-addressed traffic when `None`).
    fn to(&self, service: Option<&Service>) -> &[Arc<T>] {
        service
            .and_then(|s| self.services.get(&s.hostname))
            .unwrap_or(&self.gateway)
    }
}

/// A policy that attaches to waypoints by `targetRefs`.
trait Targeting {
    fn namespace(&self) -> &str;
    fn scope(&self) -> &PolicyScope;
}

impl Targeting for AuthorizationPolicy {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn scope(&self) -> &PolicyScope {
        &self.scope
    }
}

impl Targeting for Telemetry {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn scope(&self) -> &PolicyScope {
        &self.scope
    }
}

impl Targeting for RequestAuthentication {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn scope(&self) -> &PolicyScope {
        &self.scope
    }
}

impl Snapshot {
    pub(crate) fn build(mut parts: Parts) -> Self {
        let mut snap = Snapshot {
            workloads_by_ip: parts
                .workloads
                .iter()
                .map(|w| (w.ip, Arc::clone(w)))
                .collect(),
            ..Snapshot::default()
        };
        for svc in &parts.services {
            let key = ObjectRef::new(&svc.namespace, &svc.name);
            let entry = ServiceEntry {
                endpoints: parts.endpoints.remove(&key).unwrap_or_default(),
                routes: parts.routes.remove(&key).unwrap_or_default(),
                traffic: parts.traffic.remove(&key),
            };
            let by_ns = snap.services_by_name.entry(key.namespace).or_default();
            by_ns.insert(key.name, (Arc::clone(svc), entry));
            if let Some(vip) = svc.vip {
                snap.services_by_vip.insert(vip, Arc::clone(svc));
            }
            for host in host_forms(svc) {
                snap.services_by_host.insert(host, Arc::clone(svc));
            }
        }
        for wp in &parts.waypoints {
            snap.waypoints_by_ref
                .insert(wp.object_ref(), Arc::clone(wp));
            for pod in &wp.pods {
                snap.waypoints_by_ip.insert(pod.ip, Arc::clone(wp));
            }
        }
        snap.trust_domain = Some(parts.trust_domain);
        snap.warnings = parts.warnings;
        snap.route_parents = parts.route_parents;
        snap.nodes = parts.nodes;
        snap.workloads = parts.workloads;
        snap.services = parts.services;
        snap.waypoints = parts.waypoints;
        snap.waypoint_classes = parts.waypoint_classes;
        snap.policies = parts.policies;
        snap.authentications = parts.authentications;
        snap.providers = parts.providers;
        snap.tracing_providers = parts.tracing_providers;
        snap.default_tracing = parts.default_tracing;
        snap.peer_authentications = parts.peer_authentications;
        snap.waypoint_telemetry = (snap.waypoints.iter())
            .map(|wp| (wp.object_ref(), snap.telemetry_of(&parts.telemetries, wp)))
            .collect();
        snap.waypoint_policies = (snap.waypoints.iter())
            .map(|wp| (wp.object_ref(), snap.attached(&snap.policies, wp)))
            .collect();
        snap.waypoint_authentications = (snap.waypoints.iter())
            .map(|wp| (wp.object_ref(), snap.attached(&snap.authentications, wp)))
            .collect();
        snap.l4_policies = snap.l4_index();
        snap
    }

    /// What `waypoint` records, layered as Istio layers Telemetry: the root namespace's
    /// (without selector), the waypoint's namespace's, then those targeting its Gateway, class
    /// or (per Service) the Service.
    fn telemetry_of(
        &self,
        all: &[Arc<Telemetry>],
        waypoint: &Waypoint,
    ) -> (TelemetrySettings, HashMap<String, TelemetrySettings>) {
        type Layers = (TelemetrySettings, TracingOverride);
        let layer = |(settings, tracing): Layers, t: &Arc<Telemetry>| -> Layers {
            (
                settings.with(&t.overrides),
                tracing.then(&t.overrides.tracing),
            )
        };
        let base = (all.iter())
            .filter(|t| matches!(t.scope, PolicyScope::Global))
            .chain(all.iter().filter(|t| {
                matches!(t.scope, PolicyScope::Namespace) && t.namespace == waypoint.namespace
            }))
            .fold(Layers::default(), layer);
        let attached = self.attached(all, waypoint);
        let layered = |targeted: &[Arc<Telemetry>]| -> TelemetrySettings {
            let (settings, tracing) = targeted.iter().fold(base.clone(), layer);
            TelemetrySettings {
                tracing: tracing.resolve(&self.tracing_providers, &self.default_tracing),
                ..settings
            }
        };
        let services = (attached.services.iter())
            .map(|(host, targeted)| (host.clone(), layered(targeted)))
            .collect();
        (layered(&attached.gateway), services)
    }

    /// Which of `all` apply at `waypoint`, per destination.
    fn attached<T: Targeting>(&self, all: &[Arc<T>], waypoint: &Waypoint) -> Attached<T> {
        let me = waypoint.object_ref();
        let class = self.waypoint_classes.get(&me).map(String::as_str);
        let targeting = |service: Option<&Service>| -> Vec<Arc<T>> {
            (all.iter())
                .filter(|p| match p.scope() {
                    PolicyScope::TargetRefs(refs) => refs
                        .iter()
                        .any(|r| targets(r, p.namespace(), waypoint, service, class)),
                    _ => false,
                })
                .cloned()
                .collect()
        };
        let targeted = (all.iter()).flat_map(|p| match p.scope() {
            PolicyScope::TargetRefs(refs) => refs.as_slice(),
            _ => &[],
        });
        let services = targeted
            .filter(|r| r.group.is_empty() && r.kind == "Service")
            .filter_map(|r| self.service(&r.namespace, &r.name))
            .map(|s| (s.hostname.clone(), targeting(Some(s))))
            .collect();
        Attached {
            gateway: targeting(None),
            services,
        }
    }

    pub(crate) fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Set by the `Store` (0 for a snapshot not yet stored).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The SPIFFE trust domain of the workloads' identities (the mesh config's
    /// `trustDomain`).
    pub fn trust_domain(&self) -> &str {
        self.trust_domain.as_deref().unwrap_or(DEFAULT_TRUST_DOMAIN)
    }

    /// References to missing objects and ignored objects found while compiling.
    pub fn warnings(&self) -> &[ConfigError] {
        &self.warnings
    }

    /// Each route's `status.parents[]` as a controller would write it.
    pub fn route_statuses(&self) -> Vec<RouteStatus> {
        status::route_statuses(&self.route_parents, &self.warnings)
    }

    /// Sorted by name.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Sorted by namespace/name.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.iter()
    }

    pub fn workloads_on_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Workload>> {
        self.workloads.iter().filter(move |w| w.node == node)
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_by_ip.get(&ip)
    }

    /// Sorted by namespace/name.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.iter()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.entry(namespace, name).map(|(svc, _)| svc)
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.services_by_vip.get(&ip)
    }

    /// `name.ns.svc.cluster.local`, `name.ns.svc` or `name.ns` (case-insensitive, trailing dot ok).
    pub fn service_by_host(&self, host: &str) -> Option<&Arc<Service>> {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self.services_by_host.get(host) {
            Some(svc) => Some(svc),
            None => self.services_by_host.get(&host.to_ascii_lowercase()),
        }
    }

    /// The pods serving `port` of `service`, with the resolved target port; empty if none.
    /// The traffic policy a DestinationRule gives `service`, if one does.
    pub fn traffic_policy(&self, service: &Service) -> Option<&Arc<TrafficPolicy>> {
        self.entry(&service.namespace, &service.name)
            .and_then(|(_, e)| e.traffic.as_ref())
    }

    pub fn endpoints(&self, service: &Service, port: u16) -> &[Endpoint] {
        self.entry(&service.namespace, &service.name)
            .and_then(|(_, e)| e.endpoints.get(&port))
            .map_or(&[], Vec::as_slice)
    }

    /// Sorted by namespace/name.
    pub fn waypoints(&self) -> impl Iterator<Item = &Arc<Waypoint>> {
        self.waypoints.iter()
    }

    pub fn waypoint(&self, r: &ObjectRef) -> Option<&Arc<Waypoint>> {
        self.waypoints_by_ref.get(r)
    }

    /// The waypoint one of whose pods has address `ip`.
    pub fn waypoint_by_ip(&self, ip: IpAddr) -> Option<&Arc<Waypoint>> {
        self.waypoints_by_ip.get(&ip)
    }

    /// The producer rules for `port` of `service` in precedence order; empty = default route.
    pub fn routes(&self, service: &Service, port: u16) -> &[Arc<RouteRule>] {
        self.port_routes(service, port)
            .map_or(&[], |r| r.producer.rules())
    }

    /// The rules for `port` of `service` that a caller from `namespace` gets (its consumer
    /// routes, else the producer routes); empty = default route.
    pub fn routes_for(&self, service: &Service, port: u16, namespace: &str) -> &[Arc<RouteRule>] {
        self.rule_set_for(service, port, namespace)
            .map_or(&[], RuleSet::rules)
    }

    /// As [`Snapshot::routes_for`], with the index that finds a request's candidate rules.
    pub fn rule_set_for(&self, service: &Service, port: u16, namespace: &str) -> Option<&RuleSet> {
        self.port_routes(service, port)
            .map(|r| r.for_caller(namespace))
    }

    fn port_routes(&self, service: &Service, port: u16) -> Option<&PortRoutes> {
        self.entry(&service.namespace, &service.name)
            .and_then(|(_, e)| e.routes.get(&port))
    }

    /// Every policy, sorted by namespace/name.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<AuthorizationPolicy>> {
        self.policies.iter()
    }

    /// Policies ztunnel enforces for `workload`: global, its namespace's, and selector policies
    /// matching its labels (from its namespace or the root namespace). Never targetRef policies.
    /// Found once per snapshot for the pods it has (by the pod at `workload`'s address, so with
    /// its current labels); computed on the spot for a pod the snapshot no longer has.
    /// Whether `workload` takes plaintext on `port` (PeerAuthentication), and which policy
    /// decided (none: the default, PERMISSIVE).
    pub fn mtls_mode(
        &self,
        workload: &Workload,
        port: u16,
    ) -> (MtlsMode, Option<&PeerAuthentication>) {
        crate::peer_authn::mtls_mode(&self.peer_authentications, workload, port)
    }

    pub fn l4_policies(&self, workload: &Workload) -> Cow<'_, [Arc<AuthorizationPolicy>]> {
        let current = self.workloads_by_ip.get(&workload.ip);
        let same_pod =
            current.is_some_and(|w| w.name == workload.name && w.namespace == workload.namespace);
        match self.l4_policies.get(&workload.ip) {
            Some(found) if same_pod => Cow::Borrowed(found),
            _ => Cow::Owned(
                (self.policies.iter())
                    .filter(|p| applies_at_l4(p, workload))
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// Every pod's L4 policies, scanning each namespace's candidates once.
    fn l4_index(&self) -> HashMap<IpAddr, Vec<Arc<AuthorizationPolicy>>> {
        let mut candidates: HashMap<&str, Vec<&Arc<AuthorizationPolicy>>> = HashMap::new();
        for w in &self.workloads {
            candidates.entry(&w.namespace).or_insert_with(|| {
                (self.policies.iter())
                    .filter(|p| l4_in_scope(p, &w.namespace))
                    .collect()
            });
        }
        (self.workloads.iter())
            .map(|w| {
                let all = &candidates[w.namespace.as_str()];
                let applying = (all.iter()).filter(|p| applies_at_l4(p, w));
                (w.ip, applying.map(|p| Arc::clone(p)).collect())
            })
            .collect()
    }

    /// Policies `waypoint` enforces for traffic to `service` (pod-addressed traffic when
    /// `None`): targetRefs naming the waypoint's Gateway, the Service, or (root namespace) its
    /// GatewayClass. A Service the waypoint does not serve gets only the Gateway-wide ones.
    pub fn waypoint_policies(
        &self,
        waypoint: &ObjectRef,
        service: Option<&Service>,
    ) -> &[Arc<AuthorizationPolicy>] {
        (self.waypoint_policies.get(waypoint)).map_or(&[], |found| found.to(service))
    }

    /// RequestAuthentications `waypoint` applies to traffic to `service` (pod-addressed when
    /// `None`), attached as [`Snapshot::waypoint_policies`] are.
    pub fn waypoint_authentications(
        &self,
        waypoint: &ObjectRef,
        service: Option<&Service>,
    ) -> &[Arc<RequestAuthentication>] {
        (self.waypoint_authentications.get(waypoint)).map_or(&[], |found| found.to(service))
    }

    /// Every `jwksUri` a RequestAuthentication applied at `waypoint` names (for its key
    /// fetcher), each once.
    pub fn waypoint_jwks_uris(&self, waypoint: &ObjectRef) -> Vec<JwksUri> {
        let Some(found) = self.waypoint_authentications.get(waypoint) else {
            return Vec::new();
        };
        let all = (found.gateway.iter()).chain(found.services.values().flatten());
        let mut uris: Vec<JwksUri> = all
            .flat_map(|a| a.rules.iter())
            .filter_map(|rule| match &rule.keys {
                Keys::Remote(uri) => Some(uri.clone()),
                Keys::Inline(_) => None,
            })
            .collect();
        uris.sort_by_key(|u| u.uri.to_string());
        uris.dedup_by(|a, b| a.uri == b.uri);
        uris
    }

    /// What `waypoint` records for traffic to `service` (pod-addressed when `None`).
    pub fn waypoint_telemetry(
        &self,
        waypoint: &ObjectRef,
        service: Option<&Service>,
    ) -> &TelemetrySettings {
        let Some((gateway, services)) = self.waypoint_telemetry.get(waypoint) else {
            static DEFAULT: TelemetrySettings = TelemetrySettings::DEFAULT;
            return &DEFAULT;
        };
        service
            .and_then(|s| services.get(&s.hostname))
            .unwrap_or(gateway)
    }

    /// The OpenTelemetry providers `waypoint` sends spans to, for any destination.
    pub fn waypoint_tracing_providers(&self, waypoint: &ObjectRef) -> Vec<Arc<TracingProvider>> {
        let Some((gateway, services)) = self.waypoint_telemetry.get(waypoint) else {
            return Vec::new();
        };
        let mut providers: Vec<Arc<TracingProvider>> = std::iter::once(gateway)
            .chain(services.values())
            .filter_map(|s| s.tracing.as_ref())
            .filter(|t| t.report_spans)
            .map(|t| t.provider.clone())
            .collect();
        providers.sort_by(|a, b| a.name.cmp(&b.name));
        providers.dedup_by(|a, b| a.name == b.name);
        providers
    }

    /// The ext_authz provider `name` of the mesh config, if it has one.
    pub fn ext_authz_provider(&self, name: &str) -> Option<&Arc<ExtAuthzProvider>> {
        self.providers.get(name)
    }

    pub fn authentications(&self) -> impl Iterator<Item = &Arc<RequestAuthentication>> {
        self.authentications.iter()
    }

    fn entry(&self, namespace: &str, name: &str) -> Option<&(Arc<Service>, ServiceEntry)> {
        self.services_by_name.get(namespace)?.get(name)
    }
}

/// Whether ztunnel enforces `p` for `workload`.
fn applies_at_l4(p: &AuthorizationPolicy, workload: &Workload) -> bool {
    l4_in_scope(p, &workload.namespace)
        && match &p.scope {
            PolicyScope::Selector(sel) => {
                sel.iter().all(|(k, v)| workload.labels.get(k) == Some(v))
            }
            _ => true,
        }
}

/// Whether `p` can apply at L4 to a pod of `namespace`, its labels aside.
fn l4_in_scope(p: &AuthorizationPolicy, namespace: &str) -> bool {
    match &p.scope {
        PolicyScope::Global => true,
        PolicyScope::Namespace => p.namespace == namespace,
        PolicyScope::Selector(_) => p.namespace == namespace || p.namespace == ROOT_NAMESPACE,
        PolicyScope::TargetRefs(_) => false,
    }
}

fn targets(
    r: &PolicyTargetRef,
    policy_ns: &str,
    waypoint: &Waypoint,
    service: Option<&Service>,
    class: Option<&str>,
) -> bool {
    match (r.group.as_str(), r.kind.as_str()) {
        (GATEWAY_GROUP, "Gateway") => r.name == waypoint.name && r.namespace == waypoint.namespace,
        ("", "Service") => service.is_some_and(|s| r.name == s.name && r.namespace == s.namespace),
        (GATEWAY_GROUP, "GatewayClass") => {
            policy_ns == ROOT_NAMESPACE
                && match class {
                    Some(c) => r.name == c,
                    None => crate::WAYPOINT_CLASSES.contains(&r.name.as_str()),
                }
        }
        _ => false,
    }
}

fn host_forms(svc: &Service) -> [String; 3] {
    let short = format!("{}.{}", svc.name, svc.namespace).to_ascii_lowercase();
    [
        svc.hostname.to_ascii_lowercase(),
        format!("{short}.svc"),
        short,
    ]
}
