//! Outbound: where a connection from a local pod goes. `plan_outbound` is pure; `connect` dials.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::pod_network::PodNetwork;
use http::{HeaderMap, HeaderValue};
use mesh_config::{Destination, Endpoint, Service, Snapshot, Waypoint, Workload, pick};
use mesh_core::ports::HBONE as HBONE_PORT;
use mesh_hbone::{ConnectRequest, HboneError, HboneStream, Identity, Pool, PoolKey};
use tracing::debug;

use crate::socks5::Target;

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
    /// The Service endpoint chosen (`podIP:targetPort`), when going straight to one.
    pub endpoint: Option<SocketAddr>,
    /// Through a waypoint: its other pods, in the order to try them when `next_hop` cannot
    /// be reached (one draining or gone before the config says so).
    pub fallbacks: Vec<Arc<Workload>>,
}

/// How a connection's endpoint (and waypoint pod) is chosen: the node's balancer, or a fixed
/// roll in tests.
pub trait Choose {
    /// One of `endpoints` (never empty) of `service`.
    fn endpoint<'e>(&self, service: &Service, endpoints: &'e [Endpoint]) -> Option<&'e Endpoint>;
    /// A roll to pick a waypoint pod with.
    fn roll(&self) -> u64;
}

/// Every choice by one number (tests, and any caller without a balancer).
pub struct Roll(pub u64);

impl Choose for Roll {
    fn endpoint<'e>(&self, _: &Service, endpoints: &'e [Endpoint]) -> Option<&'e Endpoint> {
        pick(endpoints, self.0)
    }

    fn roll(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("unknown host {0}")]
    UnknownHost(String),
    #[error("service {service} has no port {port}")]
    NoSuchPort { service: String, port: u16 },
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
    #[error("waypoint {0} is not running (no ready pods)")]
    NoWaypoint(String),
}

/// Decides how `source` reaches `target`; `choose` picks among endpoints or waypoint pods.
pub fn plan_outbound(
    snapshot: &Snapshot,
    source: &Workload,
    target: &Target,
    choose: &dyn Choose,
) -> Result<OutboundPlan, OutboundError> {
    let destination = match target {
        Target::Host(host, port) => snapshot
            .destination(host, *port)
            .ok_or_else(|| OutboundError::UnknownHost(host.clone()))?,
        Target::Addr(addr) => match snapshot.destination_by_ip(addr.ip(), addr.port()) {
            Some(destination) => destination,
            None => return Ok(OutboundPlan::Passthrough(*addr)),
        },
    };
    match &destination {
        Destination::Service { service, port } => {
            service_plan(snapshot, source, service, *port, choose)
        }
        Destination::Workload { workload, port } => {
            workload_plan(snapshot, source, workload, *port, choose.roll())
        }
    }
}

fn is_pod_of(source: &Workload, waypoint: &Waypoint) -> bool {
    waypoint.pods.iter().any(|pod| pod.ip == source.ip)
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
    let pod = pick(&waypoint.ready_pods, roll)
        .ok_or_else(|| OutboundError::NoWaypoint(waypoint.object_ref().to_string()))?;
    Ok(OutboundPlan::Hbone(HbonePlan {
        next_hop: SocketAddr::new(pod.ip, HBONE_PORT),
        authority,
        expected: pod.identity.clone(),
        via_waypoint: true,
        service,
        endpoint: None,
        fallbacks: after(&waypoint.ready_pods, roll),
    }))
}

/// The items after the one `pick(items, roll)` chose, wrapping around.
fn after<T: Clone>(items: &[T], roll: u64) -> Vec<T> {
    let Some(len) = u64::try_from(items.len()).ok().filter(|len| *len > 0) else {
        return Vec::new();
    };
    let chosen = (roll % len) as usize;
    let (before, rest) = items.split_at(chosen);
    rest.iter().skip(1).chain(before).cloned().collect()
}

fn direct(workload: &Arc<Workload>, port: u16, service: Option<Arc<Service>>) -> OutboundPlan {
    let endpoint = SocketAddr::new(workload.ip, port);
    OutboundPlan::Hbone(HbonePlan {
        next_hop: SocketAddr::new(workload.ip, HBONE_PORT),
        authority: endpoint.to_string(),
        expected: workload.identity.clone(),
        via_waypoint: false,
        endpoint: service.is_some().then_some(endpoint),
        service,
        fallbacks: Vec::new(),
    })
}

fn service_plan(
    snapshot: &Snapshot,
    source: &Workload,
    service: &Arc<Service>,
    port: u16,
    choose: &dyn Choose,
) -> Result<OutboundPlan, OutboundError> {
    let name = || format!("{}/{}", service.namespace, service.name);
    if service.port(port).is_none() {
        return Err(OutboundError::NoSuchPort {
            service: name(),
            port,
        });
    }
    if let Some(waypoint) = waypoint_for(snapshot, source, service.waypoint.as_ref()) {
        let authority = match service.vip {
            Some(vip) => SocketAddr::new(vip, port).to_string(),
            None => format!("{}:{port}", service.hostname),
        };
        return via_waypoint(waypoint, authority, Some(service.clone()), choose.roll());
    }
    let endpoints = snapshot.endpoints(service, port);
    let endpoint = (!endpoints.is_empty())
        .then(|| choose.endpoint(service, endpoints))
        .flatten()
        .ok_or_else(|| OutboundError::NoEndpoints(name()))?;
    Ok(direct(
        &endpoint.workload,
        endpoint.port,
        Some(service.clone()),
    ))
}

fn workload_plan(
    snapshot: &Snapshot,
    source: &Workload,
    workload: &Arc<Workload>,
    port: u16,
    roll: u64,
) -> Result<OutboundPlan, OutboundError> {
    if let Some(waypoint) = waypoint_for(snapshot, source, workload.waypoint.as_ref()) {
        return via_waypoint(
            waypoint,
            SocketAddr::new(workload.ip, port).to_string(),
            None,
            roll,
        );
    }
    Ok(direct(workload, port, None))
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
    let traceparent = format!(
        "00-{:032x}-{:016x}-00",
        rand::random::<u128>(),
        rand::random::<u64>()
    );
    for (name, value) in [
        ("forwarded", forwarded),
        ("baggage", baggage),
        ("traceparent", traceparent),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Whether `error` says the next hop could not take the stream at all (nothing listens, no
/// answer, its connection went away), so another pod of a waypoint may; an answer from the
/// hop (a status, a refused identity) is final.
fn hop_unreachable(error: &HboneError) -> bool {
    matches!(
        error,
        HboneError::Connect { .. } | HboneError::Timeout { .. } | HboneError::H2(_)
    )
}

/// Opens the HBONE stream of `plan` with the source workload's identity: to `next_hop`, or,
/// when that cannot be reached, to the first of `fallbacks` that can.
pub async fn connect_hbone(
    pool: &Pool,
    network: &PodNetwork,
    source: &Workload,
    client: SocketAddr,
    plan: &HbonePlan,
) -> Result<HboneStream, HboneError> {
    let request = ConnectRequest {
        authority: plan.authority.clone(),
        headers: connect_headers(source, client, plan),
    };
    let last = plan.fallbacks.len();
    for attempt in 0..=last {
        let (destination, expected) = match attempt.checked_sub(1) {
            None => (plan.next_hop, &plan.expected),
            Some(i) => {
                let pod = &plan.fallbacks[i];
                (SocketAddr::new(pod.ip, HBONE_PORT), &pod.identity)
            }
        };
        let key = PoolKey {
            source: source.identity.clone(),
            source_ip: Some(source.ip),
            source_netns: network.netns().cloned(),
            destination,
            expected: vec![expected.clone()],
        };
        if attempt == last {
            return pool.connect(&key, request).await;
        }
        match pool.connect(&key, request.clone()).await {
            Err(e) if hop_unreachable(&e) => {
                debug!(dst.hbone_addr = %destination, error = %e, "waypoint pod unreachable; trying the next");
            }
            connected => return connected,
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Snapshot {
        let yaml = include_str!("../../examples/demo.yaml");
        mesh_config::compile(vec![("demo.yaml".into(), yaml.to_string())]).expect("demo compiles")
    }

    fn pod<'s>(s: &'s Snapshot, ip: &str) -> &'s Arc<Workload> {
        s.workload_by_ip(ip.parse().expect("ip"))
            .expect("pod exists")
    }

    fn hbone(plan: OutboundPlan) -> HbonePlan {
        match plan {
            OutboundPlan::Hbone(p) => p,
            OutboundPlan::Passthrough(a) => panic!("expected HBONE, got passthrough to {a}"),
        }
    }

    #[test]
    fn service_with_waypoint_goes_to_the_waypoint_keeping_the_vip() {
        let s = demo();
        let source = pod(&s, "127.0.1.10");
        let by_host = Target::Host("reviews.default.svc.cluster.local".into(), 9080);
        let plan = hbone(plan_outbound(&s, source, &by_host, &Roll(0)).expect("plan"));
        assert!(plan.via_waypoint);
        assert_eq!(plan.next_hop, "127.0.2.20:15008".parse().expect("addr"));
        assert_eq!(plan.authority, "127.0.100.12:9080");
        assert_eq!(plan.expected.service_account, "waypoint");
        let by_vip = Target::Addr("127.0.100.12:9080".parse().expect("addr"));
        let plan = hbone(plan_outbound(&s, source, &by_vip, &Roll(0)).expect("plan"));
        assert!(plan.via_waypoint);
    }

    #[test]
    fn the_waypoint_itself_goes_direct_to_an_endpoint() {
        let s = demo();
        let waypoint = pod(&s, "127.0.2.20");
        let target = Target::Addr("127.0.100.12:9080".parse().expect("addr"));
        let plan = hbone(plan_outbound(&s, waypoint, &target, &Roll(0)).expect("plan"));
        assert!(!plan.via_waypoint);
        assert!(plan.authority.ends_with(":9080"));
        assert_eq!(plan.next_hop.port(), HBONE_PORT);
        assert_eq!(plan.expected.service_account, "bookinfo-reviews");
    }

    #[test]
    fn service_without_waypoint_goes_direct_with_the_endpoint_as_authority() {
        let s = demo();
        let source = pod(&s, "127.0.1.12");
        let target = Target::Host("ratings.default".into(), 9080);
        let plan = hbone(plan_outbound(&s, source, &target, &Roll(0)).expect("plan"));
        assert!(!plan.via_waypoint);
        assert_eq!(plan.authority, "127.0.1.11:9080");
        assert_eq!(plan.next_hop, "127.0.1.11:15008".parse().expect("addr"));
    }

    #[test]
    fn refusals_and_passthrough() {
        let s = demo();
        let source = pod(&s, "127.0.1.12");
        let unknown = Target::Host("nope.default.svc.cluster.local".into(), 80);
        assert!(matches!(
            plan_outbound(&s, source, &unknown, &Roll(0)),
            Err(OutboundError::UnknownHost(_))
        ));
        let bad_port = Target::Host("ratings.default".into(), 1234);
        assert!(matches!(
            plan_outbound(&s, source, &bad_port, &Roll(0)),
            Err(OutboundError::NoSuchPort { .. })
        ));
        let outside = Target::Addr("127.0.0.1:5432".parse().expect("addr"));
        assert!(matches!(
            plan_outbound(&s, source, &outside, &Roll(0)),
            Ok(OutboundPlan::Passthrough(_))
        ));
    }

    #[test]
    fn connect_headers_carry_the_client_and_service() {
        let s = demo();
        let source = pod(&s, "127.0.1.10");
        let target = Target::Host("reviews.default.svc.cluster.local".into(), 9080);
        let plan = hbone(plan_outbound(&s, source, &target, &Roll(0)).expect("plan"));
        let headers = connect_headers(source, "127.0.1.10:5555".parse().expect("addr"), &plan);
        assert_eq!(
            headers["forwarded"],
            "for=\"127.0.1.10:5555\";host=reviews.default.svc.cluster.local"
        );
        let traceparent = headers["traceparent"].to_str().expect("ascii");
        assert_eq!(traceparent.len(), 55);
        assert!(traceparent.starts_with("00-") && traceparent.ends_with("-00"));
        assert!(
            headers["baggage"]
                .to_str()
                .expect("ascii")
                .contains("k8s.namespace.name=default")
        );
    }

    #[test]
    fn the_other_waypoint_pods_follow_the_chosen_one_round_the_ring() {
        assert_eq!(after(&[0, 1, 2], 0), [1, 2]);
        assert_eq!(after(&[0, 1, 2], 4), [2, 0]);
        assert_eq!(after(&[0, 1, 2], 2), [0, 1]);
        assert_eq!(after(&[7], 3), Vec::<i32>::new());
        assert_eq!(after(&[] as &[i32], 3), Vec::<i32>::new());
    }

    #[test]
    fn only_a_hop_that_never_answered_is_worth_another_pod() {
        let addr = "127.0.2.20:15008".parse().expect("addr");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(hop_unreachable(&HboneError::Connect {
            addr,
            source: refused
        }));
        assert!(hop_unreachable(&HboneError::Timeout { addr }));
        assert!(!hop_unreachable(&HboneError::Unauthorized));
        assert!(!hop_unreachable(&HboneError::Unavailable));
        let foreign = HboneError::PeerIdentity("spiffe://evil/ns/a/sa/b".into());
        assert!(!hop_unreachable(&foreign));
    }
}
