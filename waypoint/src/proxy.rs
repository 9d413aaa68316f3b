//! The `ProxyHttp` implementation: a thin delegation to the pure planner, header filters,
//! metrics and the access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use mesh_config::{HeaderModifier, ObjectRef, RouteFilter, Store, Workload};
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use tracing::info;

use crate::metrics::{Metrics, RequestLabels};
use crate::plan::{Plan, Rolls, plan};
use crate::route::RequestView;
use crate::tunnel_io::{TunnelInfo, tunnel_info};

/// Per-waypoint state shared by all requests.
pub struct WaypointProxy {
    pub(crate) store: Arc<Store>,
    pub(crate) waypoint: ObjectRef,
    pub(crate) egress_socket: String,
    pub(crate) metrics: Metrics,
    /// The waypoint's own SPIFFE id, reported upstream in `x-forwarded-client-cert`.
    pub(crate) identity: String,
}

/// Pool group of upstream connections that speak HTTP/2.
const H2_POOL: u64 = 2;

/// Envoy's header for the identity of the mTLS peer a proxy authorized.
pub const XFCC: &str = "x-forwarded-client-cert";

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    tunnel: Option<TunnelInfo>,
    plan: Option<Plan>,
    flag: &'static str,
}

#[async_trait]
impl ProxyHttp for WaypointProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            tunnel: None,
            plan: None,
            flag: "-",
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(tunnel) = tunnel_info(session.digest()).cloned() else {
            ctx.flag = "NR";
            session.respond_error(400).await?;
            return Ok(true);
        };
        let snapshot = self.store.load();
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let view = RequestView::new(req.method.as_str(), path, &req.headers);
        let rolls = Rolls {
            backend: rand::random(),
            endpoint: rand::random(),
        };
        let planned = plan(&snapshot, &self.waypoint, &tunnel, &view, host, rolls);
        ctx.tunnel = Some(tunnel);
        match planned {
            Ok(planned) => {
                ctx.plan = Some(planned);
                Ok(false)
            }
            Err(rejection) => {
                ctx.flag = rejection.flag;
                respond_locally(session, rejection.status, rejection.message).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let plan = ctx
            .plan
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no plan"))?;
        let target = &plan.target;
        let mut peer = HttpPeer::new_proxy(
            &self.egress_socket,
            target.authority.ip(),
            target.authority.port(),
            false,
            "",
            target.proxy_headers(),
        );
        if session.is_http2() {
            // An h2c caller (gRPC) keeps HTTP/2 to the backend, for trailers and streaming.
            // Through the CONNECT-proxy peer this needs exactly ALPN::H2, and its own pool
            // (ALPN is not part of Pingora's pool key; `group_key` is).
            peer.options.alpn = ALPN::H2;
            peer.group_key = H2_POOL;
        }
        peer.options.connection_timeout = Some(Duration::from_secs(15));
        peer.options.idle_timeout = Some(Duration::from_secs(300));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        // The HBONE dial failed (refused, denied by the destination's L4 policy, unreachable):
        // answer as Envoy does, 503 with flag UF, rather than Pingora's 502.
        ctx.flag = "UF";
        Error::because(ErrorType::HTTPStatus(503), "upstream connect error", e)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(tunnel) = &ctx.tunnel {
            let xfcc = format!("By={};URI={}", self.identity, tunnel.peer_identity);
            upstream_request.insert_header(XFCC, xfcc.as_str())?;
        }
        for modifier in filters(ctx, true) {
            for (name, value) in &modifier.set {
                upstream_request.insert_header(name.clone(), value.as_str())?;
            }
            for (name, value) in &modifier.add {
                upstream_request.append_header(name.clone(), value.as_str())?;
            }
            for name in &modifier.remove {
                upstream_request.remove_header(name.as_str());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for modifier in filters(ctx, false) {
            for (name, value) in &modifier.set {
                upstream_response.insert_header(name.clone(), value.as_str())?;
            }
            for (name, value) in &modifier.add {
                upstream_response.append_header(name.clone(), value.as_str())?;
            }
            for name in &modifier.remove {
                upstream_response.remove_header(name.as_str());
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let code = session.response_written().map_or(0, |r| r.status.as_u16());
        if error.is_some() && ctx.flag == "-" {
            ctx.flag = "UF";
        }
        let snapshot = self.store.load();
        let labels = request_labels(&snapshot, ctx, code, session.is_http2());
        let elapsed = ctx.start.elapsed();
        self.metrics.record(&labels, elapsed.as_secs_f64() * 1000.0);
        let request = session.req_header();
        access_log(ctx, &labels, request, code, elapsed, error);
    }
}

/// Answers from the waypoint itself. Unlike Pingora's `respond_error`, the downstream
/// connection stays alive (as with Envoy's local replies, e.g. an RBAC 403).
async fn respond_locally(session: &mut Session, status: u16, message: String) -> Result<()> {
    let body = Bytes::from(message + "\n");
    let mut response = ResponseHeader::build(status, Some(3))?;
    response.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    response.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// One structured access-log line per request, with ztunnel-style dotted field names.
fn access_log(
    ctx: &RequestCtx,
    labels: &RequestLabels,
    request: &RequestHeader,
    code: u16,
    elapsed: Duration,
    error: Option<&Error>,
) {
    let src_addr = ctx
        .tunnel
        .as_ref()
        .map(|t| t.client_addr().to_string())
        .unwrap_or_default();
    let dst_addr = ctx
        .plan
        .as_ref()
        .map(|p| p.target.authority.to_string())
        .unwrap_or_default();
    let hbone_addr = ctx
        .plan
        .as_ref()
        .map(|p| p.target.hbone_addr.to_string())
        .unwrap_or_default();
    let error = error.map(|e| e.to_string()).unwrap_or_default();
    info!(
        src.addr = %src_addr,
        src.identity = %labels.source_principal,
        dst.addr = %dst_addr,
        dst.hbone_addr = %hbone_addr,
        dst.service = %labels.destination_service,
        dst.workload = %labels.destination_workload,
        method = %request.method,
        path = %request.uri,
        response_code = code,
        response_flags = ctx.flag,
        duration_ms = elapsed.as_millis() as u64,
        error = %error,
        "request"
    );
}

/// The header modifiers of the chosen rule, request side or response side.
fn filters(ctx: &RequestCtx, request: bool) -> impl Iterator<Item = &HeaderModifier> {
    let rule = ctx.plan.as_ref().and_then(|p| p.rule.as_ref());
    rule.into_iter()
        .flat_map(|r| r.filters.iter())
        .filter_map(move |f| match f {
            RouteFilter::RequestHeaderModifier(m) if request => Some(m),
            RouteFilter::ResponseHeaderModifier(m) if !request => Some(m),
            _ => None,
        })
}

fn request_labels(
    snapshot: &mesh_config::Snapshot,
    ctx: &RequestCtx,
    code: u16,
    http2: bool,
) -> RequestLabels {
    let mut labels = RequestLabels {
        response_code: code,
        response_flags: ctx.flag,
        request_protocol: if http2 { "grpc_or_http2" } else { "http" },
        ..RequestLabels::default()
    };
    if let Some(tunnel) = &ctx.tunnel {
        labels.source_principal = tunnel.peer_identity.to_string();
        labels.source_workload_namespace = tunnel.peer_identity.namespace.clone();
        if let Some(source) = snapshot.workload_by_ip(tunnel.client_addr().ip()) {
            set_source(&mut labels, source);
        }
    }
    if let Some(plan) = &ctx.plan {
        let w = &plan.endpoint.workload;
        labels.destination_workload = w.name.clone();
        labels.destination_workload_namespace = w.namespace.clone();
        labels.destination_principal = w.identity.clone();
        labels.destination_canonical_service = w.canonical_service.clone();
        labels.destination_canonical_revision = w.canonical_revision.clone();
        if let Some(service) = plan.destination.service() {
            labels.destination_service = service.hostname.clone();
            labels.destination_service_name = service.name.clone();
            labels.destination_service_namespace = service.namespace.clone();
        }
    }
    labels
}

fn set_source(labels: &mut RequestLabels, source: &Workload) {
    labels.source_workload = source.name.clone();
    labels.source_workload_namespace = source.namespace.clone();
    labels.source_canonical_service = source.canonical_service.clone();
    labels.source_canonical_revision = source.canonical_revision.clone();
}
