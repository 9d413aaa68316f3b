//! Outbound: where a connection from a local pod goes. `plan_outbound` is pure; `connect` dials.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use mesh_config::{Service, Snapshot, Waypoint, Workload};
use mesh_hbone::{ConnectRequest, HboneError, HboneStream, Identity, Pool, PoolKey};

use crate::socks5::Target;

/// The port every ztunnel and waypoint accepts HBONE on.
pub const HBONE_PORT: u16 = 15008;

/// How an outbound connection leaves the node.
#[derive(Clone, Debug)]
pub enum OutboundPlan {
    /// Over HBONE to `next_hop` (a ztunnel or a waypoint), asking for `authority`.
    Hbone(HbonePlan),
    /// Not a mesh destination: plain TCP.
    Passthrough(SocketAddr),
}

#[derive(Clone, Debug)]
pub struct HbonePlan {
    pub next_hop: SocketAddr,
    pub authority: String,
    pub expected: Identity,
    pub via_waypoint: bool,
    /// The Service that was addressed, if any (for `forwarded host=` and metrics).
    pub service: Option<Arc<Service>>,
    /// The destination workload when known (direct traffic).
    pub workload: Option<Arc<Workload>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("unknown host {0}")]
    UnknownHost(String),
    #[error("service {service} has no port {port}")]
    NoSuchPort { service: String, port: u16 },
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
    #[error("waypoint {0} is not running (no pods)")]
    NoWaypoint(String),
    #[error("identity {0:?} is not a SPIFFE id")]
    BadIdentity(String),
}

/// Decides how `source` reaches `target`; `roll` picks among endpoints or waypoint pods.
pub fn plan_outbound(snapshot: &Snapshot, source: &Workload, target: &Target, roll: u64) -> Result<OutboundPlan, OutboundError> {
    match target {
        Target::Host(host, port) => {
            let service = snapshot
                .service_by_host(host)
                .ok_or_else(|| OutboundError::UnknownHost(host.clone()))?;
            service_plan(snapshot, source, service, *port, roll)
        }
        Target::Addr(addr) => {
            if let Some(service) = snapshot.service_by_vip(addr.ip()) {
                return service_plan(snapshot, source, service, addr.port(), roll);
            }
            match snapshot.workload_by_ip(addr.ip()) {
                Some(workload) => workload_plan(snapshot, source, workload, addr.port(), roll),
                None => Ok(OutboundPlan::Passthrough(*addr)),
            }
        }
    }
}

fn is_pod_of(source: &Workload, waypoint: &Waypoint) -> bool {
    waypoint.pods.iter().any(|pod| pod.ip == source.ip)
}

fn identity(s: &str) -> Result<Identity, OutboundError> {
    s.parse().map_err(|_| OutboundError::BadIdentity(s.to_string()))
}

/// The waypoint to use, unless there is none or the source is that waypoint.
fn waypoint_for<'s>(
    snapshot: &'s Snapshot,
    source: &Workload,
    binding: Option<&mesh_config::ObjectRef>,
) -> Option<&'s Arc<Waypoint>> {
    let waypoint = snapshot.waypoint(binding?)?;
    (!is_pod_of(source, waypoint)).then_some(waypoint)
}

fn via_waypoint(
    waypoint: &Waypoint,
    authority: String,
    service: Option<Arc<Service>>,
    roll: u64,
) -> Result<OutboundPlan, OutboundError> {
    let name = format!("{}/{}", waypoint.namespace, waypoint.name);
    if waypoint.pods.is_empty() {
        return Err(OutboundError::NoWaypoint(name));
    }
    let pod = &waypoint.pods[(roll % waypoint.pods.len() as u64) as usize];
    Ok(OutboundPlan::Hbone(HbonePlan {
        next_hop: SocketAddr::new(pod.ip, HBONE_PORT),
        authority,
        expected: identity(&pod.identity)?,
        via_waypoint: true,
        service,
        workload: None,
    }))
}

fn direct(workload: &Arc<Workload>, port: u16, service: Option<Arc<Service>>) -> Result<OutboundPlan, OutboundError> {
    Ok(OutboundPlan::Hbone(HbonePlan {
        next_hop: SocketAddr::new(workload.ip, HBONE_PORT),
        authority: SocketAddr::new(workload.ip, port).to_string(),
        expected: identity(&workload.identity)?,
        via_waypoint: false,
        service,
        workload: Some(workload.clone()),
    }))
}

fn service_plan(
    snapshot: &Snapshot,
    source: &Workload,
    service: &Arc<Service>,
    port: u16,
    roll: u64,
) -> Result<OutboundPlan, OutboundError> {
    let name = format!("{}/{}", service.namespace, service.name);
    if !service.ports.iter().any(|p| p.port == port) {
        return Err(OutboundError::NoSuchPort { service: name, port });
    }
    if let Some(waypoint) = waypoint_for(snapshot, source, service.waypoint.as_ref()) {
        let authority = match service.vip {
            Some(vip) => SocketAddr::new(vip, port).to_string(),
            None => format!("{}:{port}", service.hostname),
        };
        return via_waypoint(waypoint, authority, Some(service.clone()), roll);
    }
    let endpoints = snapshot.endpoints(service, port);
    if endpoints.is_empty() {
        return Err(OutboundError::NoEndpoints(name));
    }
    let endpoint = &endpoints[(roll % endpoints.len() as u64) as usize];
    direct(&endpoint.workload, endpoint.port, Some(service.clone()))
}

fn workload_plan(
    snapshot: &Snapshot,
    source: &Workload,
    workload: &Arc<Workload>,
    port: u16,
    roll: u64,
) -> Result<OutboundPlan, OutboundError> {
    if let Some(waypoint) = waypoint_for(snapshot, source, workload.waypoint.as_ref()) {
        return via_waypoint(waypoint, SocketAddr::new(workload.ip, port).to_string(), None, roll);
    }
    direct(workload, port, None)
}

/// The optional CONNECT headers Istio sends: `forwarded`, `baggage`, `traceparent`.
pub fn connect_headers(source: &Workload, client: SocketAddr, plan: &HbonePlan) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut forwarded = format!("for=\"{client}\"");
    if let Some(service) = &plan.service {
        forwarded.push_str(&format!(";host={}", service.hostname));
    }
    let baggage = format!(
        "k8s.namespace.name={},k8s.pod.name={},service.name={},service.version={}",
        source.namespace, source.name, source.canonical_service, source.canonical_revision
    );
    let traceparent = format!("00-{:032x}-{:016x}-00", rand::random::<u128>(), rand::random::<u64>());
    for (name, value) in [("forwarded", forwarded), ("baggage", baggage), ("traceparent", traceparent)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Opens the HBONE stream of `plan` with the source workload's identity.
pub async fn connect_hbone(
    pool: &Pool,
    source: &Workload,
    client: SocketAddr,
    plan: &HbonePlan,
) -> Result<HboneStream, HboneError> {
    let source_identity: Identity = source
        .identity
        .parse()
        .map_err(|_| HboneError::PeerIdentity(source.identity.clone()))?;
    let key = PoolKey {
        source: source_identity,
        source_ip: Some(source.ip),
        destination: plan.next_hop,
        expected: vec![plan.expected.clone()],
    };
    let request = ConnectRequest {
        authority: plan.authority.clone(),
        headers: connect_headers(source, client, plan),
    };
    pool.connect(&key, request).await
}

/// Plain TCP to a destination outside the mesh, from the source pod's address.
pub async fn connect_passthrough(source_ip: IpAddr, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    crate::inbound::connect_from(source_ip, addr).await
}
