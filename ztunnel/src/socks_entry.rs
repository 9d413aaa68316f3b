//! The SOCKS5 entry of one local pod: every accepted client is an outbound connection from that
//! pod, planned against the snapshot and sent over HBONE (or passed through outside the mesh).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_config::Workload;
use mesh_config::health::Active;
use mesh_core::ResponseFlag;
use mesh_hbone::{HboneError, HboneStream};
use mesh_runtime::{ConnectionLimit, splice_until_idle};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::NodeContext;
use crate::metrics::{ConnectionGuard, ConnectionLabels};
use crate::outbound::{self, OutboundError, OutboundPlan, plan_outbound};
use crate::socks5::{self, Reply, encode_reply};

/// The listener name connection refusals are counted under.
const LISTENER: &str = "socks5";

pub(crate) async fn serve(
    ctx: Arc<NodeContext>,
    pod_ip: IpAddr,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => {
                // Over a cap: closed at once (the refusal is logged and counted).
                let Ok(permit) = ConnectionLimit::process().admit(LISTENER, client.ip()) else {
                    continue;
                };
                // A proxy forwards what it reads at once; Nagle would hold small writes ~40 ms.
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    outbound_connection(ctx, pod_ip, stream, client).await;
                    drop(permit);
                });
            }
            Err(e) => {
                debug!(error = %e, "SOCKS5 accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
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

/// Where an accepted client's bytes go: an HBONE tunnel, or plain TCP outside the mesh.
type Upstream = Either<HboneStream, TcpStream>;

/// Why an outbound connection was not made: the SOCKS reply and the metrics flag.
struct Refusal {
    reply: Reply,
    flag: ResponseFlag,
}

async fn dial(
    ctx: &NodeContext,
    source: &Workload,
    client: SocketAddr,
    plan: OutboundPlan,
) -> Result<Upstream, Refusal> {
    match plan {
        OutboundPlan::Hbone(plan) => outbound::connect_hbone(&ctx.pool, source, client, &plan)
            .await
            .map(Either::Left)
            .map_err(|e| {
                info!(src.workload = %source.name, dst.hbone_addr = %plan.next_hop, dst.addr = %plan.authority, error = %e, "outbound HBONE failed");
                let flag = if matches!(e, HboneError::Unauthorized) { ResponseFlag::Deny } else { ResponseFlag::Connect };
                Refusal { reply: socks_reply(&e), flag }
            }),
        // Outside the mesh: plain TCP from the source pod's address.
        OutboundPlan::Passthrough(addr) => crate::dial::connect_from(source.ip, addr)
            .await
            .map(Either::Right)
            .map_err(|e| {
                info!(src.workload = %source.name, dst.addr = %addr, error = %e, "passthrough connect failed");
                Refusal { reply: Reply::ConnectionRefused, flag: ResponseFlag::Connect }
            }),
    }
}

fn source_labels(source: &Workload) -> ConnectionLabels {
    let mut labels = ConnectionLabels::new("source");
    labels.source_workload = source.name.clone();
    labels.source_workload_namespace = source.namespace.clone();
    labels.source_principal = source.identity.to_string();
    labels
}

async fn outbound_connection(
    ctx: Arc<NodeContext>,
    pod_ip: IpAddr,
    mut client: TcpStream,
    client_addr: SocketAddr,
) {
    // Both phases boxed, so the task holds little more than two pointers: setting up (the
    // handshake, the plan, the dial) needs much state briefly, and an idle connection costs
    // what its splice holds for the connection's whole life, and no more.
    let set_up = Box::pin(connect(&ctx, pod_ip, &mut client, client_addr)).await;
    let spliced = match set_up {
        Some(connected) => Box::pin(splice(connected, client, ctx.idle_timeout)),
        None => return,
    };
    spliced.await;
}

/// An outbound connection made and answered `Succeeded`.
struct Connected {
    guard: ConnectionGuard,
    upstream: Upstream,
    /// Counted open to its endpoint for as long as the connection lives.
    _open: Option<Active>,
}

/// The SOCKS5 handshake, the plan and the dial; `None` once the client was refused (it was
/// told why) or went away.
async fn connect(
    ctx: &NodeContext,
    pod_ip: IpAddr,
    client: &mut TcpStream,
    client_addr: SocketAddr,
) -> Option<Connected> {
    let limit = ctx.socks5_handshake_timeout;
    let target = match tokio::time::timeout(limit, socks5::handshake(client)).await {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => {
            debug!(src.addr = %client_addr, error = %e, "SOCKS5 handshake failed");
            return None;
        }
        Err(_) => {
            debug!(src.addr = %client_addr, timeout_s = limit.as_secs_f64(), "SOCKS5 handshake timed out");
            return None;
        }
    };
    let snapshot = ctx.store.load();
    let Some(source) = snapshot.workload_by_ip(pod_ip).cloned() else {
        let _ = client.write_all(&encode_reply(Reply::GeneralFailure)).await;
        return None;
    };
    let mut guard = ctx.metrics.open(source_labels(&source));
    // The client is the source pod: report its address, not the loopback socket's.
    let client_addr = SocketAddr::new(source.ip, client_addr.port());
    let choice = ctx.balancer.for_connection(&snapshot, source.ip);
    let planned = plan_outbound(&snapshot, &source, &target, &choice);
    let mut open = None;
    let connected = match planned {
        Ok(plan) => {
            let endpoint = match &plan {
                OutboundPlan::Hbone(hbone) => hbone.endpoint.zip(hbone.service.clone()),
                OutboundPlan::Passthrough(_) => None,
            };
            open = endpoint.as_ref().map(|(addr, _)| ctx.balancer.open(*addr));
            let dialed = dial(ctx, &source, client_addr, plan).await;
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
    // The connection keeps no config for its life.
    drop(snapshot);
    match connected {
        Ok(upstream) => {
            let replied = client.write_all(&encode_reply(Reply::Succeeded)).await;
            replied.ok().map(|()| Connected {
                guard,
                upstream,
                _open: open,
            })
        }
        Err(refusal) => {
            guard.set_flag(refusal.flag);
            let _ = client.write_all(&encode_reply(refusal.reply)).await;
            None
        }
    }
}

/// Fields are used in place, never moved out: a moved-out value would be stored twice in
/// this future for the connection's whole life.
async fn splice(mut connected: Connected, mut client: TcpStream, idle: std::time::Duration) {
    if matches!(connected.upstream, Either::Right(_)) {
        connected.guard.set_plaintext();
    }
    let spliced = splice_until_idle(&mut client, &mut connected.upstream, idle).await;
    connected.guard.record(spliced);
}
