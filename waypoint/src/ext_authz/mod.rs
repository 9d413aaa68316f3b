//! CUSTOM AuthorizationPolicies: the request is checked by the policy's ext_authz provider
//! (Istio's `meshConfig.extensionProviders`), over HTTP ([`http`]) or gRPC ([`grpc`], Envoy's
//! `Authorization/Check`, so existing authorizers such as OPA-Envoy work unchanged). The
//! authorizer is a Service of the mesh, reached over HBONE as the waypoint. What it answers
//! is pure to read; a check that fails (no answer in time, a 5xx, a broken connection)
//! allows with `failOpen` and otherwise answers `statusOnError` (403).
//!
//! The check is made after the pure stages, so a request a DENY policy or the ALLOW policies
//! refuse is refused without asking (Envoy asks first; the outcome is the same).

pub mod grpc;
pub mod http;

use std::net::SocketAddr;

use ::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use mesh_config::Snapshot;
use mesh_config::authz::{Denial, PolicyMatch};
use mesh_config::ext_authz::{ExtAuthzApi, ExtAuthzProvider};
use mesh_core::ResponseFlag;

use crate::reply::LocalReply;
use crate::upstream::{Target, Upstreams};

/// The most of an authorizer's answer body read (a denial's body goes to the caller).
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What an allowing check changes: in the request sent on, and in the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub append: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
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
}

/// Checks `subject` with `check`'s provider, within its timeout.
pub async fn check(
    check: &Check,
    subject: &Subject<'_>,
    snapshot: &Snapshot,
    upstreams: &Upstreams,
) -> Checked {
    let provider = &check.provider;
    let asked = tokio::time::timeout(
        provider.timeout,
        ask(provider, subject, snapshot, upstreams),
    );
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

/// Asks the provider; `None` for a server error (a 5xx).
async fn ask(
    provider: &ExtAuthzProvider,
    subject: &Subject<'_>,
    snapshot: &Snapshot,
    upstreams: &Upstreams,
) -> Result<Option<Answer>, String> {
    let endpoints = snapshot.endpoints(&provider.service, provider.port);
    if endpoints.is_empty() {
        let service = &provider.service.hostname;
        return Err(format!("{service}:{} has no endpoint", provider.port));
    }
    let endpoint = &endpoints[rand::random_range(0..endpoints.len())];
    let tunnel = upstreams
        .tunnel(&Target::for_endpoint(endpoint), provider.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let authority = format!("{}:{}", provider.service.hostname, provider.port);
    match &provider.api {
        ExtAuthzApi::Grpc => {
            let request = grpc::check_request(&grpc::Subject {
                request: subject.request,
                protocol: subject.protocol,
                source: subject.source,
                source_principal: subject.source_principal,
                destination: subject.destination,
            });
            let response = grpc::call(tunnel, &authority, request).await?;
            Ok(Some(grpc::answer(response, &subject.request.headers)))
        }
        ExtAuthzApi::Http(check) => {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
            tokio::spawn(connection);
            let request =
                http::check_request(check, subject.request).map(|()| Empty::<Bytes>::new());
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok(http::answer(
                check,
                parts.status.as_u16(),
                &parts.headers,
                body,
            ))
        }
    }
}
