//! CUSTOM AuthorizationPolicies: the request is checked by the policy's ext_authz provider
//! (Istio's `meshConfig.extensionProviders`), over HTTP ([`http`]) or gRPC ([`grpc`], Envoy's
//! `Authorization/Check`, so existing authorizers such as OPA-Envoy work unchanged). The
//! authorizer is a Service of the mesh, reached over the waypoint's pooled upstream
//! connections (HBONE tunnels, as the waypoint), within its Service's limits. What it answers
//! is pure to read; a check that fails (no answer in time, a 5xx, a broken connection)
//! allows with `failOpen` and otherwise answers `statusOnError` (403).
//!
//! The check is made after the pure stages, so a request a DENY policy or the ALLOW policies
//! refuse is refused without asking (Envoy asks first; the outcome is the same).

pub mod body;
pub mod grpc;
pub mod http;

use std::net::SocketAddr;

use ::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_config::authz::{Denial, PolicyMatch};
use mesh_config::ext_authz::{ExtAuthzApi, ExtAuthzProvider};
use mesh_config::{ObjectRef, Snapshot, TrafficPolicy};
use mesh_core::ResponseFlag;

use crate::reply::LocalReply;
use crate::request::RequestEdits;
use crate::upstream::client::{Checkout, UpstreamBody, read_answer};
use crate::upstream::forward::send;
use crate::upstream::limits::{DestinationKey, Destinations, Limits};
use crate::upstream::{PoolSettings, Target, UpstreamProtocol, Upstreams};

/// The most of an authorizer's answer body read (a denial's body goes to the caller).
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What an allowing check changes: in the request sent on, and in the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    pub request: RequestEdits,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What an authorizer answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Allow(Allowed),
    Deny {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
}

/// The outcome of a check, for the caller.
#[derive(Debug)]
pub enum Checked {
    Allow(Allowed),
    Deny(LocalReply),
}

/// One check to make: by which provider, for which policy's rule.
#[derive(Clone, Debug)]
pub struct Check {
    pub provider: std::sync::Arc<ExtAuthzProvider>,
    pub matched: PolicyMatch,
}

/// The request being checked, and where it came from.
pub struct Subject<'a> {
    pub request: &'a ::http::request::Parts,
    pub protocol: &'static str,
    pub source: SocketAddr,
    pub source_principal: &'a str,
    pub destination: Option<SocketAddr>,
    /// The body (or its start), when the provider includes it.
    pub body: Option<&'a body::CheckBody>,
    /// The trace context the check goes on with (the request's span as its parent), as
    /// headers; empty when the request is not traced.
    pub trace: &'a [(::http::HeaderName, ::http::HeaderValue)],
}

/// Checks `subject` with `check`'s provider, within its timeout.
pub async fn check(
    check: &Check,
    subject: &Subject<'_>,
    snapshot: &Snapshot,
    upstream: Upstream<'_>,
) -> Checked {
    let provider = &check.provider;
    let asking = ask(provider, subject, snapshot, upstream);
    let asked = tokio::time::timeout(provider.timeout, asking);
    let failure = match asked.await {
        Ok(Ok(Some(Answer::Allow(allowed)))) => return Checked::Allow(allowed),
        Ok(Ok(Some(Answer::Deny {
            status,
            headers,
            body,
        }))) => {
            let why = format!("denied the request ({status})");
            let flag = ResponseFlag::UnauthorizedExternalService;
            let reply = LocalReply::new(status, flag, "access denied by external authorization")
                .with_headers(headers)
                .with_body(body);
            return Checked::Deny(reply.with_detail(denial(check, why)));
        }
        Ok(Ok(None)) => "answered with a server error".to_string(),
        Ok(Err(e)) => e,
        Err(_) => format!("did not answer within {:?}", provider.timeout),
    };
    if provider.fail_open {
        tracing::warn!(provider = %provider.name, error = %failure, "ext_authz check failed: allowed (failOpen)");
        return Checked::Allow(Allowed::default());
    }
    let why = format!(
        "{failure}: denied (fail closed, {})",
        provider.status_on_error
    );
    let reply = LocalReply::new(
        provider.status_on_error,
        ResponseFlag::UnauthorizedExternalService,
        "external authorization failed",
    );
    Checked::Deny(reply.with_detail(denial(check, why)))
}

fn denial(check: &Check, why: String) -> String {
    Denial::ExternalDeny {
        matched: check.matched.clone(),
        provider: check.provider.name.clone(),
        why,
    }
    .to_string()
}

/// Puts `trace` in `headers`, in place of any trace context the caller's headers brought.
pub(crate) fn with_trace(
    headers: &mut ::http::HeaderMap,
    trace: &[(::http::HeaderName, ::http::HeaderValue)],
) {
    if trace.is_empty() {
        return;
    }
    for name in crate::telemetry::trace::context::REPLACED {
        headers.remove(name);
    }
    for (name, value) in trace {
        headers.insert(name.clone(), value.clone());
    }
}

/// What asking gives: an answer, `None` for a server error (a 5xx), or why it failed.
type Asked = Result<Option<Answer>, String>;

/// The waypoint's upstream connections, which checks share with requests: pooled tunnels
/// to the authorizer's endpoints, counted against its Service's limits.
#[derive(Clone, Copy)]
pub struct Upstream<'a> {
    pub upstreams: &'a Upstreams,
    pub destinations: &'a Destinations,
}

/// Asks the provider; `None` for a server error (a 5xx). A check that fails on a pooled
/// connection (one the authorizer may have closed while idle) is made once more on a fresh
/// one: a check changes nothing, so asking again is safe.
async fn ask(
    provider: &ExtAuthzProvider,
    subject: &Subject<'_>,
    snapshot: &Snapshot,
    upstream: Upstream<'_>,
) -> Asked {
    let service = &provider.service;
    let endpoints = snapshot.endpoints(service, provider.port);
    if endpoints.is_empty() {
        return Err(format!(
            "{}:{} has no endpoint",
            service.hostname, provider.port
        ));
    }
    let endpoint = &endpoints[rand::random_range(0..endpoints.len())];
    let target = Target::for_endpoint(endpoint);
    let default_policy = TrafficPolicy::default();
    let policy = snapshot
        .traffic_policy(service)
        .map_or(&default_policy, |p| p.as_ref());
    let key = DestinationKey::Service(ObjectRef::new(&service.namespace, &service.name));
    let in_flight = (upstream.destinations)
        .start(&key, Limits::of(&policy.connection_pool))
        .map_err(|_| "overflow: the authorizer's Service has its most requests".to_string())?;
    let pool = PoolSettings::of(&policy.connection_pool);
    let protocol = match provider.api {
        ExtAuthzApi::Grpc => UpstreamProtocol::Http2,
        ExtAuthzApi::Http(_) => UpstreamProtocol::Http1,
    };
    let mut failure = String::new();
    for fresh in [false, true] {
        let checkout = upstream
            .upstreams
            .checkout(&target, protocol, pool, in_flight.connections(), fresh)
            .await
            .map_err(|e| e.to_string())?;
        let reused = checkout.reused();
        let asked = match &provider.api {
            ExtAuthzApi::Grpc => ask_grpc(checkout, provider, subject).await,
            ExtAuthzApi::Http(check) => {
                ask_http(checkout, check, subject, upstream.upstreams, &target, pool).await
            }
        };
        match asked {
            Ok(answer) => return Ok(answer),
            Err(e) if reused => failure = e,
            Err(e) => return Err(e),
        }
    }
    Err(failure)
}

async fn ask_grpc(
    checkout: Checkout,
    provider: &ExtAuthzProvider,
    subject: &Subject<'_>,
) -> Result<Option<Answer>, String> {
    let Checkout::Http2 { sender, .. } = &checkout else {
        return Err("not an HTTP/2 connection".into());
    };
    let request = grpc::check_request(subject);
    let authority = format!("{}:{}", provider.service.hostname, provider.port);
    let response = grpc::call(sender.clone(), &authority, request, subject.trace).await?;
    // The checkout (its stream count) lasts until the answer is in.
    drop(checkout);
    Ok(Some(grpc::answer(response, &subject.request.headers)))
}

async fn ask_http(
    mut checkout: Checkout,
    check: &mesh_config::ext_authz::HttpCheck,
    subject: &Subject<'_>,
    upstreams: &Upstreams,
    target: &Target,
    pool: PoolSettings,
) -> Result<Option<Answer>, String> {
    checkout.ready().await.map_err(|e| e.to_string())?;
    let mut request = http::check_request(check, subject.request, subject.body);
    with_trace(request.headers_mut(), subject.trace);
    let body =
        |bytes: Bytes| -> UpstreamBody { Full::new(bytes).map_err(|never| match never {}).boxed() };
    let response = send(&mut checkout, request.map(body))
        .await
        .map_err(|e| e.into_error().to_string())?;
    let (parts, body) = response.into_parts();
    let body = read_answer(body, MAX_ANSWER_BYTES).await?;
    if let Checkout::Http1 {
        sender,
        served,
        slot,
        ..
    } = checkout
    {
        upstreams.checkin(target, sender, served, slot, pool);
    }
    Ok(http::answer(
        check,
        parts.status.as_u16(),
        &parts.headers,
        body,
    ))
}
