//! The `ProxyHttp` implementation: each hook a few lines that hand over to the request
//! pipeline, the filters, the upstream, the outcome classifier, the reply renderer and
//! telemetry.
//!
//! ```text
//! new_ctx                  snapshot pinned for the request
//! request_filter           RequestAttrs → pipeline::plan → Plan | LocalReply (rendered, sent)
//! upstream_peer            upstream::http_peer(plan.target)
//! connected_to_upstream    an HTTP/1.1 upstream's egress backlog gates the caller's reads
//! upstream_request_filter  x-forwarded-client-cert, request filters
//! response_filter          response filters
//! fail_to_connect          (error kept; classified in fail_to_proxy)
//! fail_to_proxy            outcome::classify → flag, LocalReply (rendered unless a response began)
//! logging                  metrics + access log from the context
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use mesh_config::{ObjectRef, Store};
use pingora_core::protocols::Digest;
use pingora_core::protocols::http::HttpTask;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::filters::{self, Phase};
use crate::outcome;
use crate::reply::{self, Caller, LocalReply};
use crate::request::{HeaderLimits, RequestAttrs, RequestCtx, Rolls, plan};
use crate::telemetry::{Metrics, RequestLabels, access_log};
use crate::tunnel_io::tunnel_info;
use crate::upstream::backlog::CONNECTION_ID_HEADER;
use crate::upstream::{Backlogs, UpstreamProtocol, http_peer};

/// Per-waypoint state shared by all requests.
pub struct WaypointProxy {
    pub(crate) store: Arc<Store>,
    pub(crate) waypoint: ObjectRef,
    pub(crate) egress_socket: String,
    /// The egress connections' queues, for [`upstream::backlog`](crate::upstream::backlog).
    pub(crate) backlogs: Arc<Backlogs>,
    pub(crate) metrics: Metrics,
    /// The waypoint's own SPIFFE id, reported upstream in `x-forwarded-client-cert`.
    pub(crate) identity: String,
    pub(crate) header_limits: HeaderLimits,
    pub(crate) stream_idle_timeout: std::time::Duration,
}

/// Envoy's header for the identity of the mTLS peer a proxy authorized.
pub const XFCC: &str = "x-forwarded-client-cert";

#[async_trait]
impl ProxyHttp for WaypointProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.store.load())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.caller = Caller::of(session.req_header());
        let Some(tunnel) = tunnel_info(session.digest()).cloned() else {
            let reply = LocalReply::new(400, mesh_core::ResponseFlag::NoRouteFound, "not a tunnel");
            respond(session, ctx, &reply).await?;
            return Ok(true);
        };
        tunnel.head_received();
        let request = RequestAttrs::of(session.req_header());
        let planned = plan(
            &ctx.snapshot,
            &self.waypoint,
            &tunnel,
            &request,
            &self.header_limits,
            Rolls::random(),
        );
        ctx.tunnel = Some(tunnel);
        match planned {
            Ok(planned) => {
                ctx.plan = Some(planned);
                Ok(false)
            }
            Err(reply) => {
                respond(session, ctx, &reply).await?;
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
        // What the Service port declares; else as the caller speaks (an h2c caller, gRPC,
        // keeps HTTP/2 for trailers and streaming).
        let protocol = plan.declared_protocol.unwrap_or(match session.is_http2() {
            true => UpstreamProtocol::Http2,
            false => UpstreamProtocol::Http1,
        });
        ctx.upstream_protocol = Some(protocol);
        Ok(Box::new(http_peer(
            &self.egress_socket,
            &plan.target,
            protocol,
            self.stream_idle_timeout,
        )))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Only an HTTP/1.1 upstream connection serves one request at a time, as the gate
        // assumes; an HTTP/2 one carries many callers.
        if ctx.upstream_protocol != Some(UpstreamProtocol::Http1) {
            return Ok(());
        }
        let connection = digest
            .and_then(|d| d.proxy_digest.as_ref())
            .and_then(|p| p.response.headers.get(CONNECTION_ID_HEADER))
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if let (Some(tunnel), Some(backlog)) = (
            &ctx.tunnel,
            connection.and_then(|id| self.backlogs.find(id)),
        ) {
            tunnel.read_gate.attach(backlog);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(tunnel) = &ctx.tunnel {
            let xfcc = format!("By={};URI={}", self.identity, tunnel.peer_uri);
            upstream_request.insert_header(XFCC, xfcc)?;
        }
        filters::apply(ctx.rule(), Phase::Request, upstream_request)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        filters::apply(ctx.rule(), Phase::Response, upstream_response)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let outcome = outcome::classify(e);
        ctx.flag = outcome.flag;
        let started = session.response_written().map(|r| r.status.as_u16());
        let mut code = started.unwrap_or(outcome.status);
        if started.is_none() && outcome.status > 0 {
            let reply = LocalReply::new(
                outcome.status,
                outcome.flag,
                upstream_message(e, outcome.flag),
            );
            if respond(session, ctx, &reply).await.is_err() {
                code = 0;
            }
        }
        FailToProxy {
            error_code: code,
            // A reply was written whole, so the connection is still in a known state.
            can_reuse_downstream: started.is_none() && code > 0,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(tunnel) = &ctx.tunnel {
            tunnel.read_gate.detach();
            tunnel.request_done();
        }
        let code = session.response_written().map_or(0, |r| r.status.as_u16());
        let labels = RequestLabels::of(ctx, code, session.is_http2());
        let elapsed = ctx.start.elapsed();
        self.metrics.record(&labels, elapsed.as_secs_f64() * 1000.0);
        access_log::write(ctx, &labels, session.req_header(), elapsed, error);
    }
}

/// What an HTTP caller reads when the upstream failed, in Envoy's words.
fn upstream_message(e: &Error, flag: mesh_core::ResponseFlag) -> String {
    if flag == mesh_core::ResponseFlag::UpstreamRequestTimeout {
        return "upstream request timeout".to_string();
    }
    format!(
        "upstream connect error or disconnect/reset before headers. reset reason: {}",
        e.etype().as_str()
    )
}

/// Sends a local reply, shaped for the caller. Unlike Pingora's `respond_error`, the
/// downstream connection stays alive (as with Envoy's local replies, e.g. an RBAC 403), unless
/// the caller broke the protocol: then nothing more is read from its connection.
/// Written as tasks so the end of stream travels with the last one: a bodiless reply to an
/// HTTP/2 caller is a single HEADERS frame with END_STREAM (gRPC's trailers-only response),
/// and no stream is left open for Pingora to reset when it drops it.
async fn respond(session: &mut Session, ctx: &mut RequestCtx, reply: &LocalReply) -> Result<()> {
    ctx.flag = reply.flag;
    if reply.flag == mesh_core::ResponseFlag::DownstreamProtocolError {
        session.set_keepalive(None);
    }
    let rendered = reply::render(reply, ctx.caller)?;
    let header = Box::new(rendered.header);
    let tasks = match rendered.body {
        Some(body) => vec![
            HttpTask::Header(header, false),
            HttpTask::Body(Some(body), true),
        ],
        None => vec![HttpTask::Header(header, true)],
    };
    session.write_response_tasks(tasks).await?;
    Ok(())
}
