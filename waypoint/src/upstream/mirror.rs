//! Mirrored copies of requests (`RequestMirror`): each sent once to one endpoint of the mirror's
//! Service, on its own task, its answer read and thrown away. A copy is never retried, never
//! waited for and never changes the request's response; its body is the request's as it is
//! read, and is cut off if the copy falls behind (`Upload::mirror_body`). A copy still going
//! after the stream idle timeout is dropped.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http_body_util::BodyExt;

use super::client::{Checkout, PoolSettings, Target, UpstreamBody, Upstreams};
use super::forward::send;
use super::limits::InFlight;
use super::protocol::UpstreamProtocol;

/// One copy to send, and the destination request it is counted as until it ends.
pub struct Copy {
    /// Told how the copy ended: `answered`, `failed` or `timed_out`.
    pub outcome: Box<dyn FnOnce(&'static str) + Send>,
    pub target: Target,
    pub protocol: UpstreamProtocol,
    /// The request head, shaped for `protocol`, its host marked as a copy's.
    pub request: http::request::Parts,
    pub pool: PoolSettings,
    pub in_flight: InFlight,
    /// The whole copy, at most.
    pub timeout: Duration,
}

/// Envoy's (and so Istio's) mark on a mirrored request: `-shadow` after the host name.
pub fn shadow_host(host: &str) -> String {
    // The port, if any, follows the last ':' outside an IPv6 literal's brackets.
    let port_at = match host.rfind(']') {
        Some(end) => host[end..].find(':').map(|i| end + i),
        None => host.rfind(':'),
    };
    match port_at {
        Some(at) => format!("{}-shadow{}", &host[..at], &host[at..]),
        None => format!("{host}-shadow"),
    }
}

/// Marks `request` (an upstream request head) as a mirrored copy: its host gets `-shadow`.
pub fn mark_as_copy(request: &mut http::request::Parts) {
    if let Some(host) = request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        if let Ok(value) = HeaderValue::from_str(&shadow_host(host)) {
            request.headers.insert(header::HOST, value);
        }
        return;
    }
    let Some(authority) = request.uri.authority().map(|a| shadow_host(a.as_str())) else {
        return;
    };
    let mut parts = request.uri.clone().into_parts();
    if let Ok(authority) = authority.parse() {
        parts.authority = Some(authority);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
}

/// Sends `copy` with `body` on a task of its own.
pub fn spawn(upstreams: Upstreams, copy: Copy, body: UpstreamBody) {
    tokio::spawn(async move {
        let target = copy.target.clone();
        let (timeout, outcome) = (copy.timeout, copy.outcome);
        let sent = send_copy(
            &upstreams,
            copy.target,
            copy.protocol,
            copy.request,
            copy.pool,
            &copy.in_flight,
            body,
        );
        match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(status)) => {
                tracing::debug!(?target, status, "mirrored request answered");
                outcome("answered");
            }
            Ok(Err(e)) => {
                tracing::debug!(?target, "mirrored request failed: {e}");
                outcome("failed");
            }
            Err(_) => {
                tracing::debug!(?target, "mirrored request timed out");
                outcome("timed_out");
            }
        }
    });
}

async fn send_copy(
    upstreams: &Upstreams,
    target: Target,
    protocol: UpstreamProtocol,
    request: http::request::Parts,
    pool: PoolSettings,
    in_flight: &InFlight,
    body: UpstreamBody,
) -> anyhow::Result<u16> {
    let slots = in_flight.connections();
    let mut checkout = (upstreams.checkout(&target, protocol, pool, slots, false))
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    checkout.ready().await?;
    let response = send(&mut checkout, http::Request::from_parts(request, body))
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    if let Checkout::Http1 {
        sender,
        served,
        slot,
        ..
    } = checkout
    {
        upstreams.checkin(&target, sender, served, slot, pool);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_gets_shadow_and_the_port_stays() {
        assert_eq!(
            shadow_host("reviews.default:9080"),
            "reviews.default-shadow:9080"
        );
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(shadow_host("[fd00::1]:80"), "[fd00::1]-shadow:80");
    }

    #[test]
    fn an_http2_copy_has_its_authority_marked() {
        let request = http::Request::get("http://ratings:9080/r?x")
            .body(())
            .expect("request");
        let (mut parts, ()) = request.into_parts();
        mark_as_copy(&mut parts);
        assert_eq!(parts.uri.to_string(), "http://ratings-shadow:9080/r?x");
        let request = http::Request::get("/r")
            .header("host", "ratings:9080")
            .body(())
            .expect("request");
        let (mut parts, ()) = request.into_parts();
        mark_as_copy(&mut parts);
        assert_eq!(parts.headers["host"], "ratings-shadow:9080");
    }
}
