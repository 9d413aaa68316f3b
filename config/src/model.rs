//! The compiled mesh model: nodes, workloads, services, endpoints and waypoints.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use mesh_core::Identity;
pub use mesh_core::ObjectRef;

/// A node: where its ztunnel serves metrics and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
}

/// A port declared by one of a pod's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

/// One pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub ip: IpAddr,
    pub node: String,
    pub service_account: String,
    /// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub identity: Identity,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub container_ports: Vec<ContainerPort>,
    /// Label `service.istio.io/canonical-name`, else `app`, else the pod name.
    pub canonical_service: String,
    /// Label `service.istio.io/canonical-revision`, else `version`, else `latest`.
    pub canonical_revision: String,
    /// The waypoint that workload-addressed traffic to this pod goes through.
    pub waypoint: Option<ObjectRef>,
    /// Whether new connections may go to this pod as a Service endpoint or waypoint pod
    /// (an EndpointSlice's `ready`); a pod that is not still takes what reaches it.
    pub ready: bool,
}

/// A Service's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
}

/// One Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `<name>.<ns>.svc.cluster.local`.
    pub hostname: String,
    pub vip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    /// The waypoint that traffic addressed to this Service goes through.
    pub waypoint: Option<ObjectRef>,
    /// `spec.publishNotReadyAddresses`: pods that are not ready are endpoints too.
    pub publish_not_ready: bool,
}

impl Service {
    /// The port entry for `port`, if the Service has it.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// A pod serving a Service port, with the resolved target port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub workload: Arc<Workload>,
    pub port: u16,
}

/// What kind of traffic a waypoint serves (label `istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaypointFor {
    Service,
    Workload,
    All,
    None,
}

impl WaypointFor {
    /// Parses the label value (`service|workload|all|none`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "service" => Some(Self::Service),
            "workload" => Some(Self::Workload),
            "all" => Some(Self::All),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// Whether Service-addressed traffic may be sent to this waypoint.
    pub fn serves_services(self) -> bool {
        matches!(self, Self::Service | Self::All)
    }

    /// Whether workload-addressed traffic may be sent to this waypoint.
    pub fn serves_workloads(self) -> bool {
        matches!(self, Self::Workload | Self::All)
    }
}

/// A waypoint: a Gateway of class `istio-waypoint`/`mesh-waypoint` and its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waypoint {
    pub name: String,
    pub namespace: String,
    pub waypoint_for: WaypointFor,
    /// Every pod of the waypoint, ready or not.
    pub pods: Vec<Arc<Workload>>,
    /// The pods new connections go to: those of `pods` that are ready.
    pub ready_pods: Vec<Arc<Workload>>,
}

impl Waypoint {
    /// This waypoint's name as a reference.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(&self.namespace, &self.name)
    }
}
