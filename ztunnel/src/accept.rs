//! The accept loop every ztunnel listener of plain TCP shares (SOCKS5, captured outbound,
//! inbound plaintext): the process-wide connection cap, Nagle off, a task per connection.

use std::future::Future;
use std::net::SocketAddr;

use mesh_runtime::ConnectionLimit;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Accepts until `shutdown`, running `handle` on its own task for each connection. `name`
/// is the listener's name in refusal logs and counts.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => {
                // Over a cap: closed at once (the refusal is logged and counted).
                let Ok(permit) = ConnectionLimit::process().admit(name, client.ip()) else {
                    continue;
                };
                // A proxy forwards what it reads at once; Nagle would hold small writes ~40 ms.
                let _ = stream.set_nodelay(true);
                let handled = handle(stream, client);
                tokio::spawn(async move {
                    handled.await;
                    drop(permit);
                });
            }
            Err(e) => {
                debug!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
