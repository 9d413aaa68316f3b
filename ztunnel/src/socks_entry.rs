//! The SOCKS5 entry of one local pod: every accepted client names its destination in a SOCKS5
//! handshake and is then an outbound connection from that pod (`outbound_conn`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use crate::NodeContext;
use crate::outbound_conn::{self, Connected};
use crate::phases::set_up_then_splice;
use crate::pod_network::PodNetwork;
use crate::socks5::{self, Reply, encode_reply};

pub(crate) fn outbound_connection(
    ctx: Arc<NodeContext>,
    network: PodNetwork,
    pod_ip: IpAddr,
    mut client: TcpStream,
    client_addr: SocketAddr,
) -> impl Future<Output = ()> {
    let set_up = Box::pin(async move {
        let connected = connect(&ctx, &network, pod_ip, &mut client, client_addr).await?;
        Some((connected, client, ctx.idle_timeout))
    });
    set_up_then_splice(set_up, |(connected, client, idle)| {
        outbound_conn::splice(connected, client, idle)
    })
}

/// The SOCKS5 handshake, the plan and the dial; `None` once the client was refused (it was
/// told why) or went away.
async fn connect(
    ctx: &NodeContext,
    network: &PodNetwork,
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
    // The client is the source pod: report its address, not the loopback socket's.
    let source = SocketAddr::new(pod_ip, client_addr.port());
    match outbound_conn::open(ctx, network, source, &target).await {
        Ok(connected) => {
            let replied = client.write_all(&encode_reply(Reply::Succeeded)).await;
            replied.ok().map(|()| connected)
        }
        Err(refusal) => {
            let _ = client.write_all(&encode_reply(refusal.reply)).await;
            None
        }
    }
}
