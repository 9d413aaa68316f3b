//! Reporting a finished request: Istio's request metrics and its access-log line, as the
//! Telemetry of its destination says. A request is finished either by Pingora (its session)
//! or before Pingora had its head (a head over the wire bound, answered 431 by the tunnel).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use mesh_config::{ObjectRef, Snapshot};
use mesh_core::ResponseFlag;
use pingora_error::Error;
use pingora_http::{RequestHeader, ResponseHeader};

use super::attributes::Attributes;
use super::{BodySizes, Metrics, RequestLabels, access_log};
use crate::dispatch::dispatch;
use crate::request::RequestCtx;
use crate::tunnel_io::{RefusedHead, TunnelInfo};

/// What a finished request left behind.
pub struct Finished<'a> {
    /// Its head; `None` when it was refused before it was read whole.
    pub request: Option<&'a RequestHeader>,
    /// The head of the answer written, if one was.
    pub response: Option<&'a ResponseHeader>,
    /// The answer's status (0: none was written).
    pub code: u16,
    /// The answer's `grpc-status`, or empty.
    pub grpc_status: &'a str,
    /// Whether the caller spoke HTTP/2 (else HTTP/1.1).
    pub http2: bool,
    pub sizes: BodySizes,
    pub elapsed: Duration,
    pub error: Option<&'a Error>,
}

impl Finished<'_> {
    /// Its labels in Istio's request metrics.
    pub fn labels<'c>(&'c self, ctx: &'c RequestCtx) -> RequestLabels<'c> {
        RequestLabels::of(ctx, self.code, self.grpc_status, self.http2)
    }

    pub fn protocol(&self) -> &'static str {
        protocol_name(self.http2)
    }
}

/// Reports finished requests for one waypoint.
#[derive(Clone)]
pub struct Reporter {
    pub metrics: Metrics,
    waypoint: ObjectRef,
    /// The waypoint's own SPIFFE id (`connection.uri_san_local_certificate`).
    identity: String,
}

impl Reporter {
    pub fn new(metrics: Metrics, waypoint: ObjectRef, identity: String) -> Self {
        Reporter {
            metrics,
            waypoint,
            identity,
        }
    }

    /// The waypoint's own SPIFFE id, as `x-forwarded-client-cert` names it.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Counts the request in the metrics its destination's Telemetry keeps on, and logs it
    /// unless that Telemetry turns access logs off or its filter leaves the request out.
    pub fn report(&self, ctx: &RequestCtx, labels: &RequestLabels<'_>, finished: &Finished<'_>) {
        let service = ctx
            .destination()
            .and_then(|d| d.service())
            .map(|s| s.as_ref());
        let telemetry = ctx.snapshot.waypoint_telemetry(&self.waypoint, service);
        let evaluated =
            telemetry.access_log_filter.is_some() || !telemetry.tag_overrides.is_empty();
        let attributes = evaluated.then(|| self.attributes(ctx, finished));
        let duration_ms = finished.elapsed.as_secs_f64() * 1000.0;
        let (sizes, attrs) = (finished.sizes, attributes.as_ref());
        (self.metrics).record(labels, duration_ms, sizes, telemetry, attrs);
        let filtered_in = match (&telemetry.access_log_filter, &attributes) {
            (Some(filter), Some(attributes)) => attributes.holds(filter),
            _ => true,
        };
        if telemetry.access_log && filtered_in {
            let (request, error) = (finished.request, finished.error);
            access_log::write(ctx, labels, request, finished.elapsed, error);
        }
    }

    /// Reports a request whose head was refused before the proxy's hooks saw it (by the
    /// tunnel: 431, over the wire bound; by Pingora: 400, unreadable), against the Service
    /// the tunnel addressed, flagged `DPE`.
    pub fn report_refused_head(
        &self,
        snapshot: Arc<Snapshot>,
        tunnel: Arc<TunnelInfo>,
        refused: RefusedHead,
    ) {
        let mut ctx = RequestCtx::new(snapshot);
        ctx.refused_destination = dispatch(&ctx.snapshot, &self.waypoint, &tunnel.authority).ok();
        ctx.tunnel = Some(tunnel);
        ctx.flag = ResponseFlag::DownstreamProtocolError;
        ctx.reply_detail = Some(refused.detail);
        let finished = Finished {
            request: None,
            response: None,
            code: refused.status,
            grpc_status: "",
            http2: false,
            sizes: BodySizes::default(),
            elapsed: Duration::ZERO,
            error: None,
        };
        self.report(&ctx, &finished.labels(&ctx), &finished);
    }

    /// The finished request's attributes, for the Telemetry's CEL expressions.
    fn attributes<'a>(&'a self, ctx: &'a RequestCtx, finished: &'a Finished<'_>) -> Attributes<'a> {
        static NO_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);
        let request = finished.request;
        let tunnel = ctx.tunnel.as_deref();
        let destination = ctx.destination();
        Attributes {
            method: request.map_or("", |r| r.method.as_str()),
            host: request.map_or("", request_host),
            path_and_query: request
                .and_then(|r| r.uri.path_and_query())
                .map_or("/", |p| p.as_str()),
            request_headers: request.map_or(&NO_HEADERS, |r| &r.headers),
            protocol: finished.protocol(),
            start: SystemTime::now()
                .checked_sub(finished.elapsed)
                .unwrap_or_else(SystemTime::now),
            duration: finished.elapsed,
            request_size: finished.sizes.request as u64,
            response_code: finished.code,
            grpc_status: finished.grpc_status.parse().ok(),
            response_headers: finished.response.map(|r| &r.headers),
            response_size: finished.sizes.response as u64,
            source: tunnel.map(|t| t.client_addr()),
            destination: destination
                .and_then(|d| Some(std::net::SocketAddr::new(d.ip()?, d.port()))),
            upstream: ctx.target.as_ref().map(|t| t.authority),
            peer_principal: tunnel.map(|t| t.peer_uri.as_str()),
            local_principal: &self.identity,
        }
    }
}

/// `HTTP/2` or `HTTP/1.1`, as Envoy names a request's protocol.
pub(crate) fn protocol_name(http2: bool) -> &'static str {
    if http2 { "HTTP/2" } else { "HTTP/1.1" }
}

/// The request's host: its target's authority, else its `Host`.
pub(crate) fn request_host(request: &RequestHeader) -> &str {
    (request.uri.authority().map(|a| a.as_str()))
        .or_else(|| request.headers.get(http::header::HOST)?.to_str().ok())
        .unwrap_or_default()
}
