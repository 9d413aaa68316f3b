//! The `ProxyHttp` implementation: each hook a few lines that hand over to the request
//! pipeline, the filters, the upstream, the outcome classifier, the reply renderer and
//! telemetry.
//!
//! ```text
//! new_ctx                  snapshot pinned for the request
//! request_filter           RequestAttrs → pipeline::plan → Plan | LocalReply (rendered, sent);
//!                          a Plan is served by upstream::forward (x-forwarded-client-cert and
//!                          request filters on the way up, response filters on the way down;
//!                          a failure before the response is a LocalReply in Envoy's words)
//! fail_to_proxy            a Pingora error (the caller's side): outcome::classify
//! logging                  metrics + access log + the span's end, from the context
//! ```
//!
//! A traced request's span starts once its destination is known (planned or refused), and
//! the request goes on naming it as the parent (`traceparent`, and B3 if the caller used it),
//! as does its ext_authz check (HTTP headers, gRPC metadata).
//!
//! Pingora serves the caller (HTTP/1.1 and h2c parsing, keep-alive, the hooks); the upstream
//! half is the waypoint's own (`upstream`), so Pingora's upstream hooks are not used.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use mesh_config::{Destination, LoadBalancer, ObjectRef, Store, TrafficPolicy};
use pingora_core::protocols::http::HttpTask;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::authn::VerifiedTokens;
use crate::authn::jwks::RemoteKeys;
use crate::dispatch::dispatch;
use crate::ext_authz;
use crate::filters::{self, Phase};
use crate::outcome;
use crate::reply::{self, Caller, LocalReply};
use crate::request::normalize::normalize_path;
use crate::request::{
    Backend, HeaderLimits, Inputs, MirrorTarget, Plan, RequestAttrs, RequestCtx, RequestEdits,
    Rolls, UrlRewrite, plan,
};
use crate::telemetry::report::{Finished, Reporter, protocol_name, request_host};
use crate::telemetry::trace::{self, RequestSpan, Tracers, tags};
use crate::telemetry::{BodySizes, RequestLabels};
use crate::tunnel_io::{TunnelInfo, tunnel_info};
use crate::upstream::balance::Balancing;
use crate::upstream::forward::{self, Exchange};
use crate::upstream::limits::{DestinationKey, Destinations, Limits};
use crate::upstream::{PoolSettings, Target, UpstreamProtocol, Upstreams};
use crate::upstream::{mirror, retry};
use mesh_config::balance;
use mesh_config::health::Health;

/// Per-waypoint state shared by all requests.
pub struct WaypointProxy {
    pub(crate) store: Arc<Store>,
    pub(crate) waypoint: ObjectRef,
    pub(crate) upstreams: Upstreams,
    /// Requests and retries in flight per destination, and their limits.
    pub(crate) destinations: Destinations,
    /// Requests in flight to each endpoint, and outlier detection's ejections.
    pub(crate) health: Arc<Health>,
    /// Metrics and access logs; it knows the waypoint's own SPIFFE id, reported upstream in
    /// `x-forwarded-client-cert`.
    pub(crate) reporter: Reporter,
    pub(crate) header_limits: HeaderLimits,
    pub(crate) stream_idle_timeout: std::time::Duration,
    /// The key sets of `jwksUri`s, as fetched so far.
    pub(crate) jwks: Arc<RemoteKeys>,
    /// Tokens verified lately.
    pub(crate) verified_tokens: VerifiedTokens,
    /// Where spans go.
    pub(crate) tracers: Arc<Tracers>,
}

/// Replaces the request's path with its normalized form ([`normalize_path`]), which routes,
/// policies, logs and the backend then all see.
fn normalize_target(request: &mut RequestHeader) {
    let Some(path_and_query) = request.uri.path_and_query() else {
        return;
    };
    let Some(path) = normalize_path(path_and_query.path()) else {
        return;
    };
    let target = match path_and_query.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = request.uri.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        request.set_uri(uri);
    }
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
        normalize_target(session.req_header_mut());
        ctx.caller = Caller::of(session.req_header());
        let Some(tunnel) = tunnel_info(session.digest()).cloned() else {
            let reply = LocalReply::new(400, mesh_core::ResponseFlag::NoRouteFound, "not a tunnel");
            respond(session, ctx, &reply).await?;
            return Ok(true);
        };
        tunnel.head_received();
        let request = RequestAttrs::of(session.req_header());
        let planned = {
            let keys = self.jwks.load();
            let inputs = Inputs {
                waypoint: &self.waypoint,
                tunnel: &tunnel,
                limits: &self.header_limits,
                keys: &keys,
                verified: &self.verified_tokens,
                rolls: Rolls::random(),
            };
            plan(&ctx.snapshot, &inputs, &request)
        };
        let planned = match planned {
            Ok(planned) => {
                // Traced from here, so an external check goes on in the request's trace.
                self.start_span(session, ctx, Some(&planned.destination), &tunnel);
                let trace = ctx.span.as_ref().map(RequestSpan::outgoing);
                let (snapshot, trace) = (&ctx.snapshot, trace.as_deref().unwrap_or_default());
                let checking = self.check_externally(session, planned, &tunnel, snapshot, trace);
                checking.await.map(|(plan, read)| {
                    ctx.body_read = read;
                    plan
                })
            }
            Err(reply) => Err(reply),
        };
        match planned {
            Ok(planned) => {
                ctx.tunnel = Some(tunnel);
                ctx.plan = Some(planned);
                self.forward(session, ctx).await?;
                Ok(true)
            }
            Err(reply) => {
                // Refused (by policy, say): still counted against the Service addressed.
                let addressed = dispatch(&ctx.snapshot, &self.waypoint, &tunnel.authority);
                ctx.refused_destination = addressed.ok();
                if ctx.span.is_none() {
                    let destination = ctx.refused_destination.clone();
                    self.start_span(session, ctx, destination.as_ref(), &tunnel);
                }
                ctx.tunnel = Some(tunnel);
                respond(session, ctx, &reply).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // Every request is answered in `request_filter`; Pingora never proxies one itself.
        Err(Error::explain(
            ErrorType::InternalError,
            "the waypoint serves upstreams itself",
        ))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let outcome = outcome::classify(e);
        // The first cause stands: an upstream failure that ended a started response already
        // set its flag (UC, UT) before handing Pingora an error to end the caller's stream.
        if ctx.flag == mesh_core::ResponseFlag::None {
            ctx.flag = outcome.flag;
        }
        let started = session.response_written().map(|r| r.status.as_u16());
        let mut code = started.unwrap_or(outcome.status);
        if started.is_none() && outcome.status > 0 {
            let reply = LocalReply::new(outcome.status, outcome.flag, e.to_string());
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
            tunnel.request_done();
        }
        let span = ctx.span.take();
        let response = session.response_written();
        // From the trailers, or the head of a trailers-only answer (a local reply's too).
        let in_head = response.and_then(|r| r.headers.get(forward::GRPC_STATUS));
        let grpc_status = ctx.grpc_status.as_ref().or(in_head);
        let finished = Finished {
            request: Some(session.req_header()),
            response,
            code: response.map_or(0, |r| r.status.as_u16()),
            grpc_status: grpc_status
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
            http2: session.is_http2(),
            sizes: BodySizes {
                request: session.body_bytes_read(),
                response: session.body_bytes_sent(),
            },
            elapsed: ctx.start.elapsed(),
            error,
        };
        let labels = finished.labels(ctx);
        self.reporter.report(ctx, &labels, &finished);
        if let Some(span) = span {
            self.end_span(span, session, ctx, &labels, finished.sizes);
        }
    }
}

fn protocol(session: &Session) -> &'static str {
    protocol_name(session.is_http2())
}

impl WaypointProxy {
    /// Tags and ends the request's span.
    fn end_span(
        &self,
        span: RequestSpan,
        session: &Session,
        ctx: &RequestCtx,
        labels: &RequestLabels<'_>,
        sizes: BodySizes,
    ) {
        if !span.sampled() {
            return;
        }
        let request = session.req_header();
        let facts = tags::Facts {
            labels,
            destination: ctx.destination(),
            method: request.method.as_str(),
            url: format!("http://{}{}", request_host(request), request.uri.path()),
            protocol: protocol(session),
            headers: &request.headers,
            peer_address: (ctx.tunnel.as_ref()).map(|t| t.client_addr().ip().to_string()),
            upstream_address: ctx.target.as_ref().map(|t| t.authority.to_string()),
            request_size: sizes.request as u64,
            response_size: sizes.response as u64,
        };
        let env = |name: &str| std::env::var(name).ok();
        let tags = tags::tags(&facts, &span.settings, &self.waypoint, env);
        span.end(tags, tags::is_error(labels.response_code));
    }
}

/// What the upstream needs of a plan's backend, looked up in the request's snapshot.
struct BackendView<'s> {
    key: DestinationKey,
    /// The Service port's endpoints, or the one pod addressed.
    endpoints: &'s [mesh_config::Endpoint],
    /// Its DestinationRule's policy, if it has one.
    policy: Option<&'s TrafficPolicy>,
}

impl<'s> BackendView<'s> {
    fn of(snapshot: &'s mesh_config::Snapshot, backend: &'s Backend) -> Self {
        match backend {
            Backend::Service { service, port } => BackendView {
                key: DestinationKey::Service(ObjectRef::new(&service.namespace, &service.name)),
                endpoints: snapshot.endpoints(service, *port),
                policy: snapshot.traffic_policy(service).map(|p| p.as_ref()),
            },
            Backend::Pod(endpoint) => {
                let pod = &endpoint.workload;
                BackendView {
                    key: DestinationKey::Workload(ObjectRef::new(&pod.namespace, &pod.name)),
                    endpoints: std::slice::from_ref(endpoint),
                    policy: None,
                }
            }
        }
    }
}

impl WaypointProxy {
    /// Starts the request's span, when a Telemetry traces `destination` (what the caller
    /// addressed, if known).
    fn start_span(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        destination: Option<&Destination>,
        tunnel: &TunnelInfo,
    ) {
        let service = destination.and_then(|d| d.service()).map(|s| s.as_ref());
        let telemetry = ctx.snapshot.waypoint_telemetry(&self.waypoint, service);
        let Some(settings) = telemetry.tracing.clone() else {
            return;
        };
        let name = tags::span_name(destination, &tunnel.authority);
        let start = SystemTime::now()
            .checked_sub(ctx.start.elapsed())
            .unwrap_or_else(SystemTime::now);
        let headers = &session.req_header().headers;
        let span = RequestSpan::start(&self.tracers, &settings, headers, name, start);
        ctx.span = Some(span);
    }

    /// Makes the check a CUSTOM policy asks for, if any: denied, its answer; allowed, the
    /// plan with the authorizer's header changes.
    async fn check_externally(
        &self,
        session: &mut Session,
        mut plan: Plan,
        tunnel: &TunnelInfo,
        snapshot: &mesh_config::Snapshot,
        trace: &[(http::HeaderName, http::HeaderValue)],
    ) -> std::result::Result<(Plan, Vec<bytes::Bytes>), LocalReply> {
        let Some(check) = plan.ext_authz.take() else {
            return Ok((plan, Vec::new()));
        };
        let (read, body) = match check.provider.request_body {
            None => (Vec::new(), None),
            Some(limit) => {
                let idle = self.stream_idle_timeout;
                let read = ext_authz::body::read(session, limit, idle).await?;
                (read.read, Some(read.body))
            }
        };
        let subject = ext_authz::Subject {
            request: session.req_header(),
            protocol: protocol(session),
            source: tunnel.client_addr(),
            source_principal: &tunnel.peer_uri,
            destination: plan
                .destination
                .ip()
                .map(|ip| (ip, plan.destination.port()).into()),
            body: body.as_ref(),
            trace,
        };
        let upstream = ext_authz::Upstream {
            upstreams: &self.upstreams,
            destinations: &self.destinations,
        };
        match ext_authz::check(&check, &subject, snapshot, upstream).await {
            ext_authz::Checked::Deny(reply) => Err(reply),
            ext_authz::Checked::Allow(allowed) => {
                plan.request_edits.extend(allowed.request);
                plan.response_headers.extend(allowed.response_headers);
                Ok((plan, read))
            }
        }
    }

    /// The copies of a request its mirrors get: each to an endpoint of its Service port, with
    /// the request's head (host marked `-shadow`), counted against that destination's limits
    /// (a full destination gets no copy).
    fn mirror_copies(
        &self,
        snapshot: &mesh_config::Snapshot,
        targets: &[MirrorTarget],
        head: &pingora_http::RequestHeader,
        caller_protocol: UpstreamProtocol,
    ) -> Vec<mirror::Copy> {
        let copy = |t: &MirrorTarget| {
            let backend = Backend::Service {
                service: t.service.clone(),
                port: t.port,
            };
            let view = BackendView::of(snapshot, &backend);
            let default_policy = TrafficPolicy::default();
            let policy = view.policy.unwrap_or(&default_policy);
            let limits = Limits::of(&policy.connection_pool);
            let service = t.service.hostname.clone();
            let Ok(in_flight) = self.destinations.start(&view.key, limits) else {
                self.reporter.metrics.record_mirror(&service, "overflow");
                return None;
            };
            let balancing = Balancing {
                lb: &policy.load_balancer,
                endpoints: view.endpoints,
                health: &self.health,
                outlier: policy.outlier_detection.as_ref(),
                key: None,
                in_flight: &in_flight,
            };
            let Some(endpoint) = balancing.choose(&[]) else {
                self.reporter.metrics.record_mirror(&service, "no_endpoint");
                return None;
            };
            let declared = t
                .service
                .port(t.port)
                .and_then(UpstreamProtocol::declared_by);
            let protocol = declared.unwrap_or(caller_protocol);
            let mut request = forward::upstream_request(head.clone(), protocol);
            mirror::mark_as_copy(&mut request);
            let metrics = self.reporter.metrics.clone();
            Some(mirror::Copy {
                outcome: Box::new(move |outcome| metrics.record_mirror(&service, outcome)),
                target: Target::for_endpoint(&endpoint),
                protocol,
                request,
                pool: PoolSettings::of(&policy.connection_pool),
                in_flight,
                timeout: self.stream_idle_timeout,
            })
        };
        targets.iter().filter_map(copy).collect()
    }

    /// Serves the planned request over the upstream; a failure before any response is
    /// answered here; one after it started ends the caller's stream (an error for Pingora).
    async fn forward(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(plan) = ctx.plan.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "request has no plan");
        };
        // What the Service port declares; else as the caller speaks (an h2c caller, gRPC,
        // keeps HTTP/2 for trailers and streaming).
        let protocol = plan.declared_protocol.unwrap_or(match session.is_http2() {
            true => UpstreamProtocol::Http2,
            false => UpstreamProtocol::Http1,
        });
        ctx.upstream_protocol = Some(protocol);
        let mut head = session.req_header().clone();
        if let Some(tunnel) = &ctx.tunnel {
            let xfcc = format!("By={};URI={}", self.reporter.identity(), tunnel.peer_uri);
            head.insert_header(XFCC, xfcc)?;
        }
        let rule = plan.rule.clone();
        edit_head(&plan.request_edits, &mut head)?;
        if let Some(span) = &ctx.span {
            for name in trace::context::REPLACED {
                head.remove_header(name);
            }
            for (name, value) in span.outgoing() {
                head.insert_header(name, value)?;
            }
        }
        rewrite_head(&plan.rewrite, &mut head)?;
        filters::apply(plan.filters(), Phase::Request, &mut head)?;
        let mirrors = self.mirror_copies(&ctx.snapshot, &plan.mirrors, &head, protocol);
        let backend = BackendView::of(&ctx.snapshot, &plan.backend);
        let default_policy = TrafficPolicy::default();
        let policy = backend.policy.unwrap_or(&default_policy);
        let limits = Limits::of(&policy.connection_pool);
        let mut tries = forward::Tries::default();
        let served = match self.destinations.start(&backend.key, limits) {
            Err(_) => Err(forward::Failure::BeforeResponse {
                flag: mesh_core::ResponseFlag::UpstreamOverflow,
                reason: "overflow".to_owned(),
            }),
            Ok(in_flight) => {
                let key = match &policy.load_balancer {
                    LoadBalancer::ConsistentHash(key) => {
                        let request = session.req_header();
                        let source = balance::HashSource {
                            headers: &request.headers,
                            query: request.uri.query(),
                            source_ip: ctx
                                .tunnel
                                .as_ref()
                                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |t| {
                                    t.client_addr().ip()
                                }),
                        };
                        balance::hash_key(key, &source)
                    }
                    _ => None,
                };
                let exchange = Exchange {
                    body_read: std::mem::take(&mut ctx.body_read),
                    upstreams: &self.upstreams,
                    protocol,
                    pool: PoolSettings::of(&policy.connection_pool),
                    idle_timeout: self.stream_idle_timeout,
                    try_timeout: rule.as_ref().and_then(|r| r.backend_request_timeout),
                    retry: retry::Policy::of(rule.as_ref().and_then(|r| r.retry.as_ref())),
                    balancing: Balancing {
                        lb: &policy.load_balancer,
                        endpoints: backend.endpoints,
                        health: &self.health,
                        outlier: policy.outlier_detection.as_ref(),
                        key,
                        in_flight: &in_flight,
                    },
                };
                let edit = |response: &mut pingora_http::ResponseHeader| {
                    filters::apply(plan.filters(), Phase::Response, response)?;
                    filters::add_decided(&plan.response_headers, response)
                };
                let attempt = forward::forward(exchange, session, head, edit, mirrors, &mut tries);
                match rule.as_ref().and_then(|r| r.request_timeout) {
                    None => attempt.await,
                    Some(timeout) => tokio::time::timeout_at((ctx.start + timeout).into(), attempt)
                        .await
                        .unwrap_or(Err(forward::Failure::Timeout { responded: false })),
                }
            }
        };
        self.reporter
            .metrics
            .record_tries(&plan.destination, &tries);
        ctx.grpc_status = tries.grpc_status.take();
        ctx.tries = tries.count;
        // The last try's endpoint is the one the request is reported against.
        ctx.target = tries.endpoint.as_ref().map(Target::for_endpoint);
        ctx.endpoint = tries.endpoint;
        let failure = match served {
            Ok(_) => return Ok(()),
            Err(forward::Failure::Downstream(e)) => return Err(e),
            // A route timeout can fire after the response started.
            Err(forward::Failure::Timeout { .. }) if session.response_written().is_some() => {
                forward::Failure::Timeout { responded: true }
            }
            Err(failure) => failure,
        };
        let (flag, status) = failure.outcome();
        if status == 0 {
            ctx.flag = flag;
            // The caller's stream cannot be finished cleanly: end it.
            return Error::e_explain(ErrorType::ConnectionClosed, failure.to_string());
        }
        if !session.is_body_done() {
            // The caller's body was not all read: its connection cannot carry another request.
            session.set_keepalive(None);
        }
        let reply = LocalReply::new(status, flag, failure.to_string());
        respond(session, ctx, &reply).await
    }
}

/// Carries out the header edits authentication and an external authorizer decided on (a
/// token's header dropped, its payload and claims set, the authorizer's changes), replacing
/// whatever the caller sent under the names set.
fn edit_head(edits: &RequestEdits, head: &mut pingora_http::RequestHeader) -> Result<()> {
    for name in &edits.remove {
        head.remove_header(name);
    }
    for (name, value) in &edits.set {
        head.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &edits.append {
        head.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Carries out a `URLRewrite`: the host and path the backend sees.
fn rewrite_head(rewrite: &UrlRewrite, head: &mut pingora_http::RequestHeader) -> Result<()> {
    if let Some(host) = &rewrite.host {
        head.insert_header(http::header::HOST, host)?;
    }
    if let Some(path) = &rewrite.path_and_query {
        // Only the path changes: an HTTP/2 caller's scheme and authority stay.
        let mut parts = head.uri.clone().into_parts();
        parts.path_and_query =
            Some((path.parse()).or_err(ErrorType::InternalError, "rewritten path is not a path")?);
        let uri = http::Uri::from_parts(parts)
            .or_err(ErrorType::InternalError, "rewritten URI is not a URI")?;
        head.set_uri(uri);
    }
    Ok(())
}

/// Sends a local reply, shaped for the caller. Unlike Pingora's `respond_error`, the
/// downstream connection stays alive (as with Envoy's local replies, e.g. an RBAC 403), unless
/// the caller broke the protocol: then nothing more is read from its connection.
/// Written as tasks so the end of stream travels with the last one: a bodiless reply to an
/// HTTP/2 caller is a single HEADERS frame with END_STREAM (gRPC's trailers-only response),
/// and no stream is left open for Pingora to reset when it drops it.
async fn respond(session: &mut Session, ctx: &mut RequestCtx, reply: &LocalReply) -> Result<()> {
    ctx.flag = reply.flag;
    ctx.reply_detail.clone_from(&reply.detail);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_gets_the_normalized_path_and_keeps_its_query() {
        let mut request = RequestHeader::build("GET", b"/a/../b?x=%2e%2e", None).expect("head");
        normalize_target(&mut request);
        assert_eq!(request.uri, "/b?x=%2e%2e");
        // An HTTP/2 request's URI has its scheme and authority.
        let mut h2 = RequestHeader::build("GET", b"/", None).expect("head");
        h2.set_uri("http://reviews:9080/./%61".parse().expect("uri"));
        normalize_target(&mut h2);
        assert_eq!(h2.uri, "http://reviews:9080/a");
        let mut normal = RequestHeader::build("GET", b"/ok?y", None).expect("head");
        normalize_target(&mut normal);
        assert_eq!(normal.uri, "/ok?y");
    }
}
