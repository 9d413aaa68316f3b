//! Inbound HBONE for one local pod: check the CONNECT, enforce L4 policy, deliver to the app,
//! and close the connection if a later policy update denies it. The check and the watch on
//! later policy serve inbound plaintext (`inbound_plaintext`) too, with no peer identity.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;
use mesh_config::peer_authn::MtlsMode;
use mesh_config::{Snapshot, Workload};
use mesh_core::ResponseFlag;
use mesh_core::ports::PROXY_PORTS;
use mesh_hbone::{HboneStream, Identity, InboundConnect};
use mesh_runtime::splice_until_idle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::NodeContext;
use crate::authz::{self, ConnectionAttributes, Decision};
use crate::metrics::{ConnectionEnds, ConnectionGuard, ConnectionLabels, Direction};
use crate::phases::set_up_then_splice;
use crate::pod_network::PodNetwork;

/// Decides whether a CONNECT to `pod` may proceed; returns the app address to dial.
pub fn check_inbound(
    snapshot: &Snapshot,
    pod: &Workload,
    peer: Option<&Identity>,
    peer_ip: IpAddr,
    authority: Option<SocketAddr>,
) -> Result<SocketAddr, (StatusCode, String)> {
    let target = authority.ok_or((StatusCode::BAD_REQUEST, "authority is not ip:port".into()))?;
    if target.ip() != pod.ip {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{} is not this pod's address {}", target.ip(), pod.ip),
        ));
    }
    if PROXY_PORTS.contains(&target.port()) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("port {} belongs to the proxy", target.port()),
        ));
    }
    if peer.is_none()
        && let (MtlsMode::Strict, by) = snapshot.mtls_mode(pod, target.port())
    {
        let by = by.map_or_else(String::new, |p| format!(" {}/{}", p.namespace, p.name));
        return Err((
            StatusCode::UNAUTHORIZED,
            format!("plaintext refused: PeerAuthentication{by} is STRICT"),
        ));
    }
    let principal = peer.map(Identity::without_scheme);
    let attrs = ConnectionAttributes {
        principal: principal.as_deref(),
        namespace: peer.map(|p| p.namespace.as_str()),
        source_ip: peer_ip,
        destination_ip: target.ip(),
        destination_port: target.port(),
    };
    match authz::evaluate(&snapshot.l4_policies(pod), &attrs) {
        Decision::Allow => Ok(target),
        Decision::Deny(why) => Err((StatusCode::UNAUTHORIZED, format!("denied by {why}"))),
    }
}

pub(crate) fn handle(
    ctx: Arc<NodeContext>,
    pod: Arc<Workload>,
    network: PodNetwork,
    connect: InboundConnect,
) -> impl Future<Output = ()> {
    let set_up = Box::pin(async move {
        let accepted = accept(&ctx, &pod, &network, connect).await?;
        Some((ctx, pod, accepted))
    });
    set_up_then_splice(set_up, |(ctx, pod, accepted)| splice(ctx, pod, accepted))
}

/// Moves bytes between the client side and the app until either ends, the connection idles
/// out, or a new policy denies it. The arguments are the block's own, used in place (an async
/// fn would keep a second copy of each for the connection's whole life).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments (rust-lang/rust#62958)"
)]
pub(crate) fn splice<C>(
    ctx: Arc<NodeContext>,
    pod: Arc<Workload>,
    mut accepted: Accepted<C>,
) -> impl Future<Output = ()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let (peer_ip, target) = (accepted.peer_ip, accepted.target);
        let revoked = policy_revoked(&ctx, pod, accepted.peer.as_ref(), peer_ip, target);
        tokio::select! {
            spliced = splice_until_idle(&mut accepted.client, &mut accepted.app, ctx.idle_timeout) => {
                accepted.guard.record(spliced);
            }
            why = revoked => {
                info!(dst.addr = %target, reason = %why, "connection closed: policy changed");
                accepted.guard.set_flag(ResponseFlag::Deny);
            }
        }
    }
}

/// An inbound connection let in and connected to its app.
pub(crate) struct Accepted<C> {
    pub(crate) guard: ConnectionGuard,
    /// The tunnel (HBONE) or the plaintext client's own connection.
    pub(crate) client: C,
    pub(crate) app: TcpStream,
    /// The client's verified identity; none for plaintext.
    pub(crate) peer: Option<Identity>,
    pub(crate) peer_ip: IpAddr,
    pub(crate) target: SocketAddr,
}

/// The labels of a connection into `pod` from `peer_ip`: the source pod as the snapshot knows
/// it, its verified identity if any (none: plaintext).
pub(crate) fn inbound_labels(
    snapshot: &Snapshot,
    pod: &Workload,
    peer: Option<&Identity>,
    peer_ip: IpAddr,
) -> ConnectionLabels {
    let mut labels = ConnectionLabels::new("destination");
    if let Some(source) = snapshot.workload_by_ip(peer_ip) {
        labels.source_workload = source.name.clone();
        labels.source_workload_namespace = source.namespace.clone();
    }
    if let Some(peer) = peer {
        labels.source_principal = peer.to_string();
        labels.source_workload_namespace = peer.namespace.clone();
    }
    labels.destination_workload = pod.name.clone();
    labels.destination_workload_namespace = pod.namespace.clone();
    labels.destination_principal = pod.identity.to_string();
    labels.mutual_tls = peer.is_some();
    labels
}

/// Checks the CONNECT, dials the app and accepts the tunnel; `None` once it was refused.
async fn accept(
    ctx: &NodeContext,
    pod: &Arc<Workload>,
    network: &PodNetwork,
    connect: InboundConnect,
) -> Option<Accepted<HboneStream>> {
    let snapshot = ctx.store.load();
    let peer = connect.peer_identity().clone();
    let peer_ip = connect.peer_addr().ip();
    let labels = inbound_labels(&snapshot, pod, Some(&peer), peer_ip);
    let mut ends = ConnectionEnds::new(Direction::Inbound, connect.peer_addr());
    ends.dst_addr = Some(SocketAddr::new(pod.ip, connect.local_addr().port()));
    ends.dst_hbone_addr = connect.authority_addr();
    let mut guard = ctx.metrics.open(labels, ends);

    let checked = check_inbound(
        &snapshot,
        pod,
        Some(&peer),
        peer_ip,
        connect.authority_addr(),
    );
    // The connection keeps no config: a later one that denies it closes it (`policy_revoked`).
    drop(snapshot);
    let target = match checked {
        Ok(target) => target,
        Err((status, why)) => {
            info!(src.identity = %peer, dst.addr = connect.authority(), %status, reason = %why, "inbound refused");
            guard.set_flag(if status == StatusCode::UNAUTHORIZED {
                ResponseFlag::Deny
            } else {
                ResponseFlag::NoRouteFound
            });
            connect.reject(status);
            return None;
        }
    };
    let app = match network.connect(peer_ip, target).await {
        Ok(app) => app,
        Err(e) => {
            debug!(dst.addr = %target, error = %e, "app unreachable");
            guard.set_flag(ResponseFlag::Connect);
            connect.reject(StatusCode::SERVICE_UNAVAILABLE);
            return None;
        }
    };
    let tunnel = match connect.accept(http::HeaderMap::new()) {
        Ok(tunnel) => tunnel,
        Err(e) => {
            debug!(error = %e, "accept failed");
            return None;
        }
    };
    Some(Accepted {
        guard,
        client: tunnel,
        app,
        peer: Some(peer),
        peer_ip,
        target,
    })
}

/// Resolves when a new snapshot denies this connection.
async fn policy_revoked(
    ctx: &NodeContext,
    pod: Arc<Workload>,
    peer: Option<&Identity>,
    peer_ip: IpAddr,
    target: SocketAddr,
) -> String {
    let mut versions = ctx.store.subscribe();
    loop {
        if versions.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let snapshot = ctx.store.load();
        let pod = snapshot
            .workload_by_ip(pod.ip)
            .cloned()
            .unwrap_or_else(|| pod.clone());
        if let Err((StatusCode::UNAUTHORIZED, why)) =
            check_inbound(&snapshot, &pod, peer, peer_ip, Some(target))
        {
            return why;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
"#;

    fn snapshot(extra: &str) -> Snapshot {
        let yaml = format!("{}{extra}", include_str!("../../examples/demo.yaml"));
        mesh_config::compile(vec![("demo.yaml".into(), yaml)]).expect("demo compiles")
    }

    fn check(s: &Snapshot, peer_sa: &str, authority: &str) -> Result<SocketAddr, StatusCode> {
        let pod = s
            .workload_by_ip("127.0.1.11".parse().expect("ip"))
            .expect("ratings pod");
        let peer = Identity::new("cluster.local", "default", peer_sa);
        check_inbound(
            s,
            pod,
            Some(&peer),
            "127.0.1.10".parse().expect("ip"),
            authority.parse().ok(),
        )
        .map_err(|(status, _)| status)
    }

    #[test]
    fn delivers_to_this_pod_only() {
        let s = snapshot("");
        assert_eq!(
            check(&s, "sleep", "127.0.1.11:9080"),
            Ok("127.0.1.11:9080".parse().expect("addr"))
        );
        assert_eq!(
            check(&s, "sleep", "127.0.1.10:9080"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            check(&s, "sleep", "not-an-address"),
            Err(StatusCode::BAD_REQUEST)
        );
        for port in PROXY_PORTS {
            assert_eq!(
                check(&s, "sleep", &format!("127.0.1.11:{port}")),
                Err(StatusCode::BAD_REQUEST)
            );
        }
    }

    #[test]
    fn l4_policy_answers_401() {
        let s = snapshot(POLICY);
        assert!(check(&s, "bookinfo-productpage", "127.0.1.11:9080").is_ok());
        assert_eq!(
            check(&s, "sleep", "127.0.1.11:9080"),
            Err(StatusCode::UNAUTHORIZED)
        );
    }
}
