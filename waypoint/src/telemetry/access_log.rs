//! One structured access-log line per request, with ztunnel-style dotted field names.

use std::time::Duration;

use pingora_error::Error;
use pingora_http::RequestHeader;
use tracing::info;

use super::RequestLabels;
use crate::request::RequestCtx;

pub fn write(
    ctx: &RequestCtx,
    labels: &RequestLabels<'_>,
    request: Option<&RequestHeader>,
    elapsed: Duration,
    error: Option<&Error>,
) {
    let src_addr = ctx.tunnel.as_ref().map(|t| t.client_addr());
    let target = ctx.target.as_ref();
    let jwt = ctx.plan.as_ref().and_then(|p| p.jwt.as_deref());
    info!(
        src.addr = src_addr.map(tracing::field::display),
        src.identity = labels.source_principal,
        request_principal = jwt.map(|j| j.principal.as_str()),
        dst.addr = target.map(|t| tracing::field::display(t.authority)),
        dst.hbone_addr = target.map(|t| tracing::field::display(t.hbone_addr)),
        dst.service = labels.destination_service,
        dst.workload = labels.destination_workload,
        method = request.map(|r| tracing::field::display(&r.method)),
        path = request.map(|r| tracing::field::display(&r.uri)),
        response_code = labels.response_code,
        response_flags = labels.response_flags.as_str(),
        upstream.tries = ctx.tries,
        authz = ctx.authz(),
        duration_ms = elapsed.as_millis() as u64,
        error = error.map(tracing::field::display),
        "request"
    );
}
