//! Inbound plaintext of one captured pod (15006, inside the pod): a connection that arrived
//! without HBONE, redirected here by the pod's rules. It has no peer identity, so only policy
//! that asks for none lets it through (`PeerAuthentication` STRICT refuses it); the app then
//! gets it from the client's own address.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_config::Workload;
use mesh_core::ResponseFlag;
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::NodeContext;
use crate::capture;
use crate::inbound::{self, Accepted, check_inbound};
use crate::metrics::{ConnectionEnds, Direction};
use crate::phases::set_up_then_splice;
use crate::pod_network::PodNetwork;

pub(crate) fn connection(
    ctx: Arc<NodeContext>,
    pod: Arc<Workload>,
    network: PodNetwork,
    client: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    let set_up = Box::pin(async move {
        let accepted = accept(&ctx, &pod, &network, client, peer).await?;
        Some((ctx, pod, accepted))
    });
    set_up_then_splice(set_up, |(ctx, pod, accepted)| {
        inbound::splice(ctx, pod, accepted)
    })
}

async fn accept(
    ctx: &NodeContext,
    pod: &Arc<Workload>,
    network: &PodNetwork,
    client: TcpStream,
    peer: SocketAddr,
) -> Option<Accepted<TcpStream>> {
    let target = match capture::original_destination(&client) {
        Ok(target) => target,
        Err(e) => {
            info!(src.addr = %peer, error = %e, "plaintext connection has no original destination; closed");
            capture::reset(client);
            return None;
        }
    };
    let snapshot = ctx.store.load();
    let labels = inbound::inbound_labels(&snapshot, pod, None, peer.ip());
    let mut ends = ConnectionEnds::new(Direction::Inbound, peer);
    ends.dst_addr = Some(target);
    let mut guard = ctx.metrics.open(labels, ends);
    let checked = check_inbound(&snapshot, pod, None, peer.ip(), Some(target));
    drop(snapshot);
    let target = match checked {
        Ok(target) => target,
        Err((status, why)) => {
            info!(src.addr = %peer, dst.addr = %target, reason = %why, "inbound plaintext refused");
            guard.set_flag(if status == http::StatusCode::UNAUTHORIZED {
                ResponseFlag::Deny
            } else {
                ResponseFlag::NoRouteFound
            });
            capture::reset(client);
            return None;
        }
    };
    let app = match network.connect(peer.ip(), target).await {
        Ok(app) => app,
        Err(e) => {
            debug!(dst.addr = %target, error = %e, "app unreachable");
            guard.set_flag(ResponseFlag::Connect);
            capture::reset(client);
            return None;
        }
    };
    Some(Accepted {
        guard,
        client,
        app,
        peer: None,
        peer_ip: peer.ip(),
        target,
    })
}
