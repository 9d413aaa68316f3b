//! HBONE ingress: terminate each CONNECT stream and serve HTTP inside it with Pingora.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use mesh_config::{ObjectRef, Store};
use mesh_hbone::{InboundConnect, Server};
use pingora_core::apps::ServerApp;
use pingora_proxy::HttpProxy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::dispatch::{DispatchError, dispatch};
use crate::proxy::WaypointProxy;
use crate::telemetry::report::Reporter;
use crate::tunnel_io::{HeadBounds, TunnelInfo, TunnelIo};

/// How long a draining waypoint still serves an HTTP/1.1 caller found between requests:
/// one already sending its next request is answered (with `connection: close`) instead of
/// cut, while an idle one holds the drain for no longer than this.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Parses the client address from `forwarded: for="ip:port";host=...`.
pub fn forwarded_for(value: &str) -> Option<SocketAddr> {
    value.split([';', ',']).find_map(|pair| {
        let (key, v) = pair.trim().split_once('=')?;
        if !key.eq_ignore_ascii_case("for") {
            return None;
        }
        v.trim_matches('"').parse().ok()
    })
}

/// The HBONE status for a CONNECT whose authority this waypoint cannot serve.
fn refusal(error: &DispatchError) -> StatusCode {
    match error {
        DispatchError::BadAuthority(_) | DispatchError::NotServedHere { .. } => {
            StatusCode::BAD_REQUEST
        }
        DispatchError::NotConfigured(_)
        | DispatchError::Unknown(_)
        | DispatchError::NoSuchPort { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What serves the HTTP inside each tunnel.
pub(crate) struct TunnelHttp {
    pub proxy: Arc<HttpProxy<WaypointProxy>>,
    /// Reports the requests a tunnel refuses before the proxy has them.
    pub reporter: Reporter,
    /// Bounds on an HTTP/1.1 request head, kept by the tunnel.
    pub head: HeadBounds,
}

pub(crate) async fn serve(
    listener: TcpListener,
    server: Server,
    http: Arc<TunnelHttp>,
    store: Arc<Store>,
    waypoint: ObjectRef,
    shutdown: CancellationToken,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        let _ = stop_tx.send(true);
    });
    let drain = shutdown.clone();
    let handler = move |connect: InboundConnect| {
        let http = http.clone();
        let store = store.clone();
        let waypoint = waypoint.clone();
        let stop_rx = stop_rx.clone();
        let drain = drain.clone();
        async move {
            // Each request reads the config current when it starts; the tunnel keeps none.
            let dispatched = dispatch(&store.load(), &waypoint, connect.authority());
            if let Err(e) = dispatched {
                debug!(authority = connect.authority(), peer = %connect.peer_addr(), error = %e, "CONNECT refused");
                connect.reject(refusal(&e));
                return;
            }
            let forwarded = connect.headers().get("forwarded");
            let info = TunnelInfo::new(
                connect.peer_identity().clone(),
                connect.peer_addr(),
                connect.local_addr(),
                connect.authority().to_string(),
                forwarded
                    .and_then(|v| v.to_str().ok())
                    .and_then(forwarded_for),
            );
            let stream = match connect.accept(http::HeaderMap::new()) {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(error = %e, "CONNECT accept failed");
                    return;
                }
            };
            let io = TunnelIo::new(stream, info, http.head)
                .closing_when_drained(drain.clone(), DRAIN_IDLE_GRACE);
            let info = io.info().clone();
            let _ = http.proxy.process_new(Box::new(io), &stop_rx).await;
            if let Some(refused) = info.refused_head().cloned() {
                http.reporter
                    .report_refused_head(store.load(), info, refused);
            }
        }
    };
    server.serve(listener, handler, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwarded_for() {
        assert_eq!(
            forwarded_for(r#"for="127.0.1.12:4242";host=reviews.default.svc.cluster.local"#),
            Some("127.0.1.12:4242".parse().expect("addr"))
        );
        assert_eq!(
            forwarded_for("for=127.0.0.1:1"),
            Some("127.0.0.1:1".parse().expect("addr"))
        );
        assert_eq!(forwarded_for("host=x"), None);
        assert_eq!(forwarded_for(r#"for="unknown""#), None);
    }
}
