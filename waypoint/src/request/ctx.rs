//! Per-request state, carried from the first hook to the access log.

use std::sync::Arc;
use std::time::Instant;

use mesh_config::{Destination, Endpoint, Snapshot};
use mesh_core::ResponseFlag;

use super::plan::Plan;
use crate::reply::Caller;
use crate::telemetry::trace::RequestSpan;
use crate::tunnel_io::TunnelInfo;
use crate::upstream::{Target, UpstreamProtocol};

/// Everything one request accumulates. The snapshot is the one the request started with:
/// every decision and every label of this request comes from it, however many snapshots are
/// swapped in meanwhile.
pub struct RequestCtx {
    pub start: Instant,
    pub snapshot: Arc<Snapshot>,
    pub tunnel: Option<Arc<TunnelInfo>>,
    pub caller: Caller,
    pub plan: Option<Plan>,
    /// What the caller addressed, when the request was refused before it had a plan (so its
    /// metrics and log still name the Service).
    pub refused_destination: Option<Destination>,
    /// What the waypoint's own answer told the access log only (which policy denied).
    pub reply_detail: Option<String>,
    /// The endpoint the (last) try went to, once chosen.
    pub endpoint: Option<Endpoint>,
    pub target: Option<Target>,
    /// The protocol spoken to the upstream, once chosen.
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// Why the request ended as it did (`-` when served normally).
    pub flag: ResponseFlag,
    /// Tries made upstream (0: none, the request was answered by the waypoint).
    pub tries: u32,
    /// The `grpc-status` the response's trailers carried.
    pub grpc_status: Option<http::HeaderValue>,
    /// The request's span, when its destination is traced.
    pub span: Option<RequestSpan>,
    /// The body's start, read for an ext_authz check and not sent on yet.
    pub body_read: Vec<bytes::Bytes>,
}

impl RequestCtx {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        RequestCtx {
            start: Instant::now(),
            snapshot,
            tunnel: None,
            caller: crate::reply::Caller::Http,
            plan: None,
            refused_destination: None,
            reply_detail: None,
            endpoint: None,
            target: None,
            upstream_protocol: None,
            flag: ResponseFlag::None,
            tries: 0,
            grpc_status: None,
            span: None,
            body_read: Vec::new(),
        }
    }

    /// What the caller addressed, if known.
    pub fn destination(&self) -> Option<&Destination> {
        let planned = self.plan.as_ref().map(|plan| &plan.destination);
        planned.or(self.refused_destination.as_ref())
    }

    /// What the access log says of the request's policies: the denial and the AUDIT rules
    /// matched, if any.
    pub fn authz(&self) -> Option<String> {
        if let Some(detail) = &self.reply_detail {
            return Some(detail.clone());
        }
        let audited = &self.plan.as_ref()?.audited;
        (!audited.is_empty()).then(|| super::pipeline::authz_detail(None, audited))
    }

    /// The chosen route rule, once the pipeline has run.
    pub fn rule(&self) -> Option<&mesh_config::RouteRule> {
        self.plan.as_ref()?.rule.as_deref()
    }
}
