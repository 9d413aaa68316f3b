//! One outbound connection of a local pod, whichever way it entered (SOCKS5, or captured in
//! the pod): planned against the snapshot, dialled over HBONE (or passed through outside the
//! mesh), then spliced until either side ends or it idles out.

use std::future::Future;
use std::net::SocketAddr;

use mesh_config::health::Active;
use mesh_config::{Snapshot, Workload};
use mesh_core::ResponseFlag;
use mesh_hbone::{HboneError, HboneStream};
use mesh_runtime::splice_until_idle;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::info;

use crate::NodeContext;
use crate::metrics::{ConnectionEnds, ConnectionGuard, ConnectionLabels, Direction};
use crate::outbound::{self, OutboundError, OutboundPlan, plan_outbound};
use crate::pod_network::PodNetwork;
use crate::socks5::{Reply, Target};

/// Where an accepted client's bytes go: an HBONE tunnel, or plain TCP outside the mesh.
type Upstream = Either<HboneStream, TcpStream>;

/// Why an outbound connection was not made: in SOCKS5's words, and the metrics flag.
pub(crate) struct Refusal {
    pub(crate) reply: Reply,
    pub(crate) flag: ResponseFlag,
}

/// An outbound connection made: what its splice needs.
pub(crate) struct Connected {
    guard: ConnectionGuard,
    upstream: Upstream,
    /// Counted open to its endpoint for as long as the connection lives.
    _open: Option<Active>,
}

/// The SOCKS5 reply for an HBONE failure.
pub fn socks_reply(error: &HboneError) -> Reply {
    match error {
        HboneError::Unauthorized => Reply::NotAllowed,
        HboneError::Unavailable => Reply::ConnectionRefused,
        HboneError::Connect { .. } | HboneError::Timeout { .. } => Reply::HostUnreachable,
        _ => Reply::GeneralFailure,
    }
}

fn outbound_reply(error: &OutboundError) -> Reply {
    match error {
        OutboundError::UnknownHost(_) => Reply::HostUnreachable,
        OutboundError::NoSuchPort { .. } | OutboundError::NoEndpoints(_) => {
            Reply::ConnectionRefused
        }
        OutboundError::NoWaypoint(_) => Reply::NetworkUnreachable,
    }
}

/// The labels of a connection from `source`, with what the plan says of its destination:
/// the Service, and the pod at the other end of the tunnel (the endpoint, or the waypoint).
fn outbound_labels(
    snapshot: &Snapshot,
    source: &Workload,
    plan: Option<&OutboundPlan>,
) -> ConnectionLabels {
    let mut labels = ConnectionLabels::new("source");
    labels.source_workload = source.name.clone();
    labels.source_workload_namespace = source.namespace.clone();
    labels.source_principal = source.identity.to_string();
    match plan {
        Some(OutboundPlan::Hbone(hbone)) => {
            if let Some(service) = &hbone.service {
                labels.destination_service = service.hostname.clone();
            }
            if let Some(peer) = snapshot.workload_by_ip(hbone.next_hop.ip()) {
                labels.destination_workload = peer.name.clone();
                labels.destination_workload_namespace = peer.namespace.clone();
            }
            labels.destination_principal = hbone.expected.to_string();
        }
        Some(OutboundPlan::Passthrough(_)) => labels.mutual_tls = false,
        None => {}
    }
    labels
}

/// The access-log addresses of a connection from `client` under `plan`.
fn outbound_ends(client: SocketAddr, plan: Option<&OutboundPlan>) -> ConnectionEnds {
    let mut ends = ConnectionEnds::new(Direction::Outbound, client);
    match plan {
        Some(OutboundPlan::Hbone(hbone)) => {
            ends.dst_addr = Some(hbone.next_hop);
            ends.dst_hbone_addr = hbone.authority.parse().ok();
        }
        Some(OutboundPlan::Passthrough(addr)) => ends.dst_addr = Some(*addr),
        None => {}
    }
    ends
}

/// Plans and dials a connection from the local pod at `client.ip()` to `target`.
pub(crate) async fn open(
    ctx: &NodeContext,
    network: &PodNetwork,
    client: SocketAddr,
    target: &Target,
) -> Result<Connected, Refusal> {
    let snapshot = ctx.store.load();
    let Some(source) = snapshot.workload_by_ip(client.ip()).cloned() else {
        return Err(Refusal {
            reply: Reply::GeneralFailure,
            flag: ResponseFlag::NoRouteFound,
        });
    };
    let choice = ctx.balancer.for_connection(&snapshot, source.ip);
    let planned = plan_outbound(&snapshot, &source, target, &choice);
    let plan = planned.as_ref().ok();
    let labels = outbound_labels(&snapshot, &source, plan);
    let mut guard = ctx.metrics.open(labels, outbound_ends(client, plan));
    let mut open = None;
    let connected = match planned {
        Ok(plan) => {
            let endpoint = match &plan {
                OutboundPlan::Hbone(hbone) => hbone.endpoint.zip(hbone.service.clone()),
                OutboundPlan::Passthrough(_) => None,
            };
            open = endpoint.as_ref().map(|(addr, _)| ctx.balancer.open(*addr));
            let dialed = dial(ctx, network, &source, client, plan).await;
            if let Some((addr, service)) = endpoint {
                let ejected = ctx
                    .balancer
                    .record(&snapshot, &service, addr, dialed.is_ok());
                if ejected {
                    info!(dst.addr = %addr, dst.service = %service.hostname, "endpoint ejected by outlier detection");
                }
            }
            dialed
        }
        Err(e) => {
            info!(src.workload = %source.name, dst = %target, error = %e, "outbound refused");
            Err(Refusal {
                reply: outbound_reply(&e),
                flag: ResponseFlag::NoRouteFound,
            })
        }
    };
    match connected {
        Ok(upstream) => Ok(Connected {
            guard,
            upstream,
            _open: open,
        }),
        Err(refusal) => {
            guard.set_flag(refusal.flag);
            Err(refusal)
        }
    }
}

async fn dial(
    ctx: &NodeContext,
    network: &PodNetwork,
    source: &Workload,
    client: SocketAddr,
    plan: OutboundPlan,
) -> Result<Upstream, Refusal> {
    match plan {
        OutboundPlan::Hbone(plan) => outbound::connect_hbone(&ctx.pool, network, source, client, &plan)
            .await
            .map(Either::Left)
            .map_err(|e| {
                info!(src.workload = %source.name, dst.hbone_addr = %plan.next_hop, dst.addr = %plan.authority, error = %e, "outbound HBONE failed");
                let flag = if matches!(e, HboneError::Unauthorized) { ResponseFlag::Deny } else { ResponseFlag::Connect };
                Refusal { reply: socks_reply(&e), flag }
            }),
        // Outside the mesh: plain TCP from the source pod's address.
        OutboundPlan::Passthrough(addr) => network.connect(source.ip, addr)
            .await
            .map(Either::Right)
            .map_err(|e| {
                info!(src.workload = %source.name, dst.addr = %addr, error = %e, "passthrough connect failed");
                Refusal { reply: Reply::ConnectionRefused, flag: ResponseFlag::Connect }
            }),
    }
}

/// Moves bytes until either side ends or the connection idles out. The arguments are the
/// block's own, used in place (an async fn would keep a second copy of each for the
/// connection's whole life).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments (rust-lang/rust#62958)"
)]
pub(crate) fn splice(
    mut connected: Connected,
    mut client: TcpStream,
    idle: std::time::Duration,
) -> impl Future<Output = ()> {
    async move {
        let spliced = splice_until_idle(&mut client, &mut connected.upstream, idle).await;
        connected.guard.record(spliced);
    }
}
