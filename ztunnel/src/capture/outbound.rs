//! The captured outbound listener of one pod (15001, inside the pod): each connection the pod's
//! rules redirected here goes where it was addressed (`SO_ORIGINAL_DST`), through the mesh.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::NodeContext;
use crate::outbound_conn;
use crate::phases::set_up_then_splice;
use crate::pod_network::PodNetwork;
use crate::socks5::Target;

pub(crate) fn connection(
    ctx: Arc<NodeContext>,
    network: PodNetwork,
    pod_ip: IpAddr,
    client: TcpStream,
    client_addr: SocketAddr,
) -> impl Future<Output = ()> {
    let set_up = Box::pin(async move {
        let target = match super::original_destination(&client) {
            Ok(target) => target,
            Err(e) => {
                info!(src.addr = %client_addr, error = %e, "captured connection has no original destination; closed");
                super::reset(client);
                return None;
            }
        };
        // The rules never redirect loopback or the pod's own address: such a connection was
        // addressed to this listener itself, and passing it on would reach it again, and again.
        if target.ip().is_loopback() || target.ip() == pod_ip {
            debug!(src.addr = %client_addr, dst.addr = %target, "connection addressed to the capture listener itself; closed");
            super::reset(client);
            return None;
        }
        // The pod is the source, whichever of its addresses the app's socket chose.
        let source = SocketAddr::new(pod_ip, client_addr.port());
        match outbound_conn::open(&ctx, &network, source, &Target::Addr(target)).await {
            Ok(connected) => Some((connected, client, ctx.idle_timeout)),
            Err(_) => {
                super::reset(client);
                None
            }
        }
    });
    set_up_then_splice(set_up, |(connected, client, idle)| {
        outbound_conn::splice(connected, client, idle)
    })
}
