//! One request through an upstream connection: the caller's request body (read from Pingora's
//! session) streams to the endpoint while the response streams back, both at once, so no
//! direction can wedge the other; a stream quiet for the idle timeout ends with 504 `UT`.
//!
//! Decisions (what the upstream request looks like, what a failure means) are pure functions;
//! [`forward`] is the I/O loop between them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use mesh_config::Endpoint;
use mesh_core::ResponseFlag;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::balance::Balancing;
use super::client::{Checkout, ConnectError, PoolSettings, Target, UpstreamBody, Upstreams};
use super::mirror;
use super::protocol::UpstreamProtocol;
use super::retry::{self, Reason, TryEnd};
use super::upload::Upload;
use mesh_config::balance::address;

/// What went wrong, and so what the caller is told.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {0}"
    )]
    Connect(#[from] ConnectError),
    #[error("upstream connect error or disconnect/reset before headers. reset reason: {reason}")]
    BeforeResponse { flag: ResponseFlag, reason: String },
    #[error("upstream request timeout")]
    Timeout { responded: bool },
    #[error("upstream reset after the response started: {0}")]
    AfterResponse(String),
    /// The caller's side failed (Pingora's error, classified with the others it raises).
    #[error("downstream: {0}")]
    Downstream(Box<pingora_error::Error>),
}

impl Failure {
    /// The response flag and the status to answer with (0: nothing can be answered, either a
    /// response already started or the caller is gone).
    pub fn outcome(&self) -> (ResponseFlag, u16) {
        match self {
            Failure::Connect(_) => (ResponseFlag::UpstreamConnectionFailure, 503),
            Failure::BeforeResponse { flag, .. } => {
                let status = if *flag == ResponseFlag::UpstreamProtocolError {
                    502
                } else {
                    503
                };
                (*flag, status)
            }
            Failure::Timeout { responded: false } => (ResponseFlag::UpstreamRequestTimeout, 504),
            Failure::Timeout { responded: true } => (ResponseFlag::UpstreamRequestTimeout, 0),
            Failure::AfterResponse(_) => (ResponseFlag::UpstreamConnectionTermination, 0),
            Failure::Downstream(_) => (ResponseFlag::DownstreamConnectionTermination, 0),
        }
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-authorization"),
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The request head as sent upstream: `head` (already filtered) in the form `protocol` takes.
/// Shaped once per request; each try sends a copy.
pub fn upstream_request(head: RequestHeader, protocol: UpstreamProtocol) -> http::request::Parts {
    let parts: http::request::Parts = head.into();
    let mut request = http::Request::from_parts(parts, ());
    strip_hop_by_hop(request.headers_mut());
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match protocol {
        UpstreamProtocol::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
            if let (Some(host), false) = (&host, request.headers().contains_key(header::HOST))
                && let Ok(value) = host.parse()
            {
                request.headers_mut().insert(header::HOST, value);
            }
            // `te` other than `trailers` is hop-by-hop in HTTP/1.1 too.
            request.headers_mut().remove(header::TE);
        }
        UpstreamProtocol::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            let authority = host.unwrap_or_default();
            let uri = format!("http://{authority}{path}");
            if let Ok(uri) = uri.parse() {
                *request.uri_mut() = uri;
            }
            request.headers_mut().remove(header::HOST);
            let trailers_only = request
                .headers()
                .get(header::TE)
                .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
            if !trailers_only {
                request.headers_mut().remove(header::TE);
            }
        }
    }
    request.into_parts().0
}

/// The response head as the caller gets it, for a caller speaking HTTP/2 or not.
pub fn downstream_response(
    parts: http::response::Parts,
    caller_h2: bool,
    head_request: bool,
) -> ResponseHeader {
    let mut parts = parts;
    let chunked = parts
        .headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
    strip_hop_by_hop(&mut parts.headers);
    let bodiless = head_request
        || parts.status.is_informational()
        || parts.status == http::StatusCode::NO_CONTENT
        || parts.status == http::StatusCode::NOT_MODIFIED;
    if caller_h2 {
        parts.version = Version::HTTP_2;
    } else {
        parts.version = Version::HTTP_11;
        // An HTTP/2 upstream's body of unknown length goes to an HTTP/1.1 caller chunked.
        if (chunked || !parts.headers.contains_key(header::CONTENT_LENGTH)) && !bodiless {
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                http::HeaderValue::from_static("chunked"),
            );
        }
    }
    parts.into()
}

/// What a hyper error before the response head means: how the try ended (for the retry
/// decision) and what the caller is told if it is not retried.
fn before_response(error: &hyper::Error, reused: bool, unsent: bool) -> (TryEnd, Failure) {
    let h2 = std::error::Error::source(error).and_then(|s| s.downcast_ref::<h2::Error>());
    let reset = h2.and_then(h2::Error::reason);
    // A stream above a GOAWAY's last id, or refused, was not processed (RFC 9113 §8.7).
    let refused = reset == Some(h2::Reason::REFUSED_STREAM)
        || h2.is_some_and(|e| e.is_go_away() && e.is_remote());
    let (flag, reason) = if let Some(reason) = reset {
        (
            ResponseFlag::UpstreamRemoteReset,
            format!("remote reset ({reason})"),
        )
    } else if error.is_parse() || error.is_user() {
        (
            ResponseFlag::UpstreamProtocolError,
            "protocol error".to_owned(),
        )
    } else {
        (
            ResponseFlag::UpstreamConnectionTermination,
            "connection termination".to_owned(),
        )
    };
    let end = if unsent {
        TryEnd::NotSent
    } else if refused {
        TryEnd::RefusedStream
    } else if reused && reset.is_none() && !error.is_parse() && !error.is_user() {
        // The connection ended under the request (a stream reset by the app is not this).
        TryEnd::ReusedConnectionClosed
    } else {
        TryEnd::Failed
    };
    (end, Failure::BeforeResponse { flag, reason })
}

/// One request's settings.
pub struct Exchange<'a> {
    pub upstreams: &'a Upstreams,
    pub protocol: UpstreamProtocol,
    pub pool: PoolSettings,
    /// A stream with no byte either way for this long ends (504 before a response).
    pub idle_timeout: Duration,
    /// Each try ends after this long (`timeouts.backendRequest`).
    pub try_timeout: Option<Duration>,
    pub retry: retry::Policy<'a>,
    /// Chooses each try's endpoint, counts it in flight, and learns from how it went.
    pub balancing: Balancing<'a>,
    /// The request body's start, read from the caller already (for an ext_authz check).
    pub body_read: Vec<Bytes>,
}

/// What the tries of one request did, for metrics and the access log.
#[derive(Debug, Default)]
pub struct Tries {
    pub count: u32,
    /// Why each retry was made, in order.
    pub retries: Vec<Reason>,
    /// A retry was wanted but the destination's retry budget was spent.
    pub budget_exhausted: bool,
    /// Endpoints outlier detection ejected after a try of this request.
    pub ejected: u32,
    /// The endpoint of the last try.
    pub endpoint: Option<Endpoint>,
    /// The `grpc-status` of the response's trailers (the one served), for metrics.
    pub grpc_status: Option<HeaderValue>,
}

/// Sends the session's request (`head`, already filtered) and streams the response back,
/// applying `edit_response` to its head; a try that fails before its response reached the
/// caller goes again while the retry policy, the replay buffer and the budget allow. The
/// `mirrors` are sent alongside, the request's body teed to them. Returns the response status.
pub async fn forward(
    mut exchange: Exchange<'_>,
    session: &mut Session,
    head: RequestHeader,
    mut edit_response: impl FnMut(&mut ResponseHeader) -> pingora_error::Result<()>,
    mirrors: Vec<mirror::Copy>,
    tries: &mut Tries,
) -> Result<u16, Failure> {
    let method = head.method.clone();
    let declared_length =
        (head.headers.get(header::CONTENT_LENGTH)).and_then(|v| v.to_str().ok()?.parse().ok());
    let request = upstream_request(head, exchange.protocol);
    let caller_h2 = session.is_http2();
    let mut upload = Upload::new(
        !session.is_body_empty(),
        declared_length,
        std::mem::take(&mut exchange.body_read),
    );
    for copy in mirrors {
        let body = upload.mirror_body(session);
        mirror::spawn(exchange.upstreams.clone(), copy, body);
    }
    let mut tried = Vec::new();
    // The retry under way, counted against the budget until the next one or the end.
    let mut retry_in_flight = None;
    let (checkout, response, deadline, target, _active) = loop {
        let Some(endpoint) = exchange.balancing.choose(&tried) else {
            return Err(Failure::BeforeResponse {
                flag: ResponseFlag::NoHealthyUpstream,
                reason: "no healthy upstream".to_owned(),
            });
        };
        let target = Target::for_endpoint(&endpoint);
        let addr = address(&endpoint);
        tries.endpoint = Some(endpoint);
        tries.count += 1;
        let active = exchange.balancing.health.start(addr);
        let deadline = exchange.try_timeout.map(|t| Instant::now() + t);
        let attempt = Attempt {
            exchange: &exchange,
            target: &target,
            // Back to an endpoint that just failed: not on one of its pooled connections.
            fresh: tried.contains(&addr),
            deadline,
        };
        let answered = attempt
            .until_answered(session, request.clone(), &mut upload)
            .await?;
        let end = answered.end();
        tries.ejected += u32::from(exchange.balancing.record(addr, end));
        let why = retry::reason(&exchange.retry, end, &method)
            .filter(|_| tries.retries.len() < exchange.retry.attempts as usize)
            .filter(|_| upload.replayable());
        let permit = why.and_then(|_| {
            // The try it covered has ended.
            retry_in_flight = None;
            let permit = exchange.balancing.in_flight.retry();
            tries.budget_exhausted |= permit.is_none();
            permit
        });
        let (Some(why), Some(permit)) = (why, permit) else {
            match answered {
                Answered::Response(checkout, response) => {
                    break (checkout, response, deadline, target, active);
                }
                Answered::Failed(_, failure) => return Err(failure),
            }
        };
        retry_in_flight = Some(permit);
        tries.retries.push(why);
        tracing::debug!(reason = why.as_str(), try = tries.count, "retrying upstream request");
        tried.push(addr);
        let retry_number = tries.retries.len() as u32;
        let wait = retry::backoff(&exchange.retry, why, retry_number, rand::random());
        tokio::time::sleep(wait).await;
    };
    let (parts, incoming) = response.into_parts();
    let status = parts.status.as_u16();
    let mut header = downstream_response(parts, caller_h2, method == Method::HEAD);
    if edit_response(&mut header).is_err() {
        upload.abort();
        return Err(Failure::BeforeResponse {
            flag: ResponseFlag::UpstreamProtocolError,
            reason: "response header filter failed".to_owned(),
        });
    }
    let quiet = Quiet::new(exchange.idle_timeout, deadline);
    tries.grpc_status = stream_down(session, header, incoming, &mut upload, quiet).await?;
    if let Checkout::Http1 {
        sender,
        served,
        slot,
        ..
    } = checkout
    {
        (exchange.upstreams).checkin(&target, sender, served, slot, exchange.pool);
    }
    drop(retry_in_flight);
    Ok(status)
}

pub type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    http::Response<Incoming>,
                    hyper::client::conn::TrySendError<http::Request<UpstreamBody>>,
                >,
            > + Send,
    >,
>;

/// Sends `request` on `checkout`'s connection.
pub fn send(checkout: &mut Checkout, request: http::Request<UpstreamBody>) -> ResponseFuture {
    match checkout {
        Checkout::Http1 { sender, .. } => Box::pin(sender.try_send_request(request)),
        Checkout::Http2 { sender, .. } => Box::pin(sender.try_send_request(request)),
    }
}

/// How a try got as far as a response head, or did not.
enum Answered {
    Response(Checkout, http::Response<Incoming>),
    Failed(TryEnd, Failure),
}

impl Answered {
    fn end(&self) -> TryEnd {
        match self {
            Answered::Response(_, response) => TryEnd::Answered {
                status: response.status().as_u16(),
                grpc: retry::grpc_status(response.headers()),
            },
            Answered::Failed(end, _) => *end,
        }
    }
}

/// One try: a connection to `target`, the request sent, the body streaming up.
struct Attempt<'a> {
    exchange: &'a Exchange<'a>,
    target: &'a Target,
    /// On a new connection rather than a pooled one.
    fresh: bool,
    deadline: Option<Instant>,
}

impl Attempt<'_> {
    /// Runs the try until the response head is in (the request body streams meanwhile).
    /// `Err`: the caller failed, and nothing more can be done for it.
    async fn until_answered(
        &self,
        session: &mut Session,
        request: http::request::Parts,
        upload: &mut Upload,
    ) -> Result<Answered, Failure> {
        let (upstreams, protocol) = (self.exchange.upstreams, self.exchange.protocol);
        let pool = self.exchange.pool;
        let slots = self.exchange.balancing.in_flight.connections();
        let connected = (upstreams.checkout(self.target, protocol, pool, slots, self.fresh)).await;
        let mut checkout = match connected {
            Ok(checkout) => checkout,
            // A full destination is not retried: that would only add to it.
            Err(ConnectError::Overflow) => {
                return Err(Failure::BeforeResponse {
                    flag: ResponseFlag::UpstreamOverflow,
                    reason: "overflow".to_owned(),
                });
            }
            Err(e) => return Ok(Answered::Failed(TryEnd::ConnectFailure, e.into())),
        };
        let reused = checkout.reused();
        if let Err(e) = checkout.ready().await {
            // Closed before anything was sent on it.
            let (_, failure) = before_response(&e, reused, true);
            return Ok(Answered::Failed(TryEnd::NotSent, failure));
        }
        let request = http::Request::from_parts(request, upload.body_for_try(session));
        let mut response = send(&mut checkout, request);
        let quiet = Quiet::new(self.exchange.idle_timeout, self.deadline);
        let timer = tokio::time::sleep_until(quiet.until().into());
        tokio::pin!(timer);
        loop {
            tokio::select! {
                stepped = upload.step(session), if upload.sending() => {
                    stepped?;
                    timer.as_mut().reset(quiet.until().into());
                }
                answered = &mut response => return Ok(match answered {
                    Ok(response) => Answered::Response(checkout, response),
                    Err(mut e) => {
                        upload.abort();
                        let unsent = e.take_message().is_some();
                        let (end, failure) = before_response(e.error(), reused, unsent);
                        Answered::Failed(end, failure)
                    }
                }),
                () = &mut timer => {
                    upload.abort();
                    return Ok(Answered::Failed(TryEnd::TimedOut, Failure::Timeout { responded: false }));
                }
            }
        }
    }
}

/// When a try gives up waiting: after `idle` with nothing moving, or at its deadline.
#[derive(Clone, Copy)]
struct Quiet {
    idle: Duration,
    deadline: Option<Instant>,
}

impl Quiet {
    fn new(idle: Duration, deadline: Option<Instant>) -> Self {
        Quiet { idle, deadline }
    }

    /// The instant to give up at, counting idleness from now.
    fn until(&self) -> Instant {
        let idle = Instant::now() + self.idle;
        self.deadline.map_or(idle, |d| d.min(idle))
    }
}

/// The header (or trailer) of a gRPC response's status.
pub const GRPC_STATUS: &str = "grpc-status";

/// Writes the response head, then moves the rest of the request body up and the response
/// body down until the response has ended; the `grpc-status` of its trailers, if any.
async fn stream_down(
    session: &mut Session,
    header: ResponseHeader,
    body: Incoming,
    upload: &mut Upload,
    quiet: Quiet,
) -> Result<Option<HeaderValue>, Failure> {
    let caller_h2 = session.is_http2();
    let end = body.is_end_stream();
    if !caller_h2 && upload.had_body && !session.is_body_done() {
        // Answered before the caller's body is in (as Envoy does): this HTTP/1.1
        // connection carries no further request.
        session.set_keepalive(None);
    }
    if let Err(e) = session.write_response_header(Box::new(header), end).await {
        upload.abort();
        return Err(Failure::Downstream(e));
    }
    let grpc_status = match end {
        false => relay_body(session, body, upload, quiet).await?,
        true => None,
    };
    if upload.had_body && !session.is_body_done() {
        // The response ended before the request body: the upstream has what it wanted; the
        // rest of the caller's body is not read (its connection is not reused).
        upload.abort();
        session.set_keepalive(None);
    }
    Ok(grpc_status)
}

/// Moves the response body down (and the rest of the request body up) until it has ended;
/// the `grpc-status` of its trailers, if any.
async fn relay_body(
    session: &mut Session,
    mut body: Incoming,
    upload: &mut Upload,
    quiet: Quiet,
) -> Result<Option<HeaderValue>, Failure> {
    let caller_h2 = session.is_http2();
    let mut trailers_sent = false;
    let mut grpc_status = None;
    let timer = tokio::time::sleep_until(quiet.until().into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            stepped = upload.step(session), if upload.sending() => {
                stepped?;
                timer.as_mut().reset(quiet.until().into());
            }
            frame = body.frame() => {
                timer.as_mut().reset(quiet.until().into());
                let written = match frame {
                    None => {
                        if !trailers_sent {
                            session
                                .write_response_body(None, true)
                                .await
                                .map_err(Failure::Downstream)?;
                        }
                        return Ok(grpc_status);
                    }
                    Some(Err(e)) => {
                        upload.abort();
                        return Err(Failure::AfterResponse(e.to_string()));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => session.write_response_body(Some(data), false).await,
                        // Trailers (gRPC's status) reach HTTP/2 callers; HTTP/1.1 has no use
                        // for them here.
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => {
                                grpc_status = trailers.get(GRPC_STATUS).cloned();
                                trailers_sent = caller_h2;
                                match caller_h2 {
                                    true => session.write_response_trailers(trailers).await,
                                    false => Ok(()),
                                }
                            }
                            Err(_) => Ok(()),
                        },
                    },
                };
                if let Err(e) = written {
                    upload.abort();
                    return Err(Failure::Downstream(e));
                }
            }
            () = &mut timer => {
                upload.abort();
                return Err(Failure::Timeout { responded: true });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut head = RequestHeader::build(method, path.as_bytes(), None).expect("head");
        for (name, value) in headers {
            head.insert_header(name.to_string(), *value)
                .expect("header");
        }
        head
    }

    #[test]
    fn http1_requests_keep_host_and_drop_hop_by_hop_headers() {
        let h = head(
            "GET",
            "/a?b=1",
            &[
                ("host", "reviews:9080"),
                ("connection", "keep-alive, x-private"),
                ("x-private", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "gzip"),
                ("x-kept", "yes"),
            ],
        );
        let r = upstream_request(h, UpstreamProtocol::Http1);
        assert_eq!(r.uri, "/a?b=1");
        assert_eq!(r.version, Version::HTTP_11);
        assert_eq!(r.headers["host"], "reviews:9080");
        assert_eq!(r.headers["x-kept"], "yes");
        for gone in ["connection", "x-private", "keep-alive", "te"] {
            assert!(!r.headers.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn http2_requests_carry_the_authority_in_the_uri_and_keep_te_trailers() {
        let h = head(
            "POST",
            "/pkg.Svc/Call",
            &[
                ("host", "reviews:9080"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
            ],
        );
        let r = upstream_request(h, UpstreamProtocol::Http2);
        assert_eq!(r.uri, "http://reviews:9080/pkg.Svc/Call");
        assert_eq!(r.version, Version::HTTP_2);
        assert!(!r.headers.contains_key("host"));
        assert!(!r.headers.contains_key("transfer-encoding"));
        assert_eq!(r.headers["te"], "trailers");
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("response").into_parts().0
    }

    #[test]
    fn responses_of_unknown_length_are_chunked_for_http1_callers_only() {
        let h1 = downstream_response(response(200, &[]), false, false);
        assert_eq!(h1.headers["transfer-encoding"], "chunked");
        let h2 = downstream_response(
            response(200, &[("transfer-encoding", "chunked")]),
            true,
            false,
        );
        assert!(!h2.headers.contains_key("transfer-encoding"));
        let sized = downstream_response(response(200, &[("content-length", "3")]), false, false);
        assert!(!sized.headers.contains_key("transfer-encoding"));
        for (status, head) in [(204, false), (304, false), (200, true)] {
            let bodiless = downstream_response(response(status, &[]), false, head);
            assert!(
                !bodiless.headers.contains_key("transfer-encoding"),
                "{status}"
            );
        }
    }

    #[test]
    fn failures_map_to_envoy_flags_and_statuses() {
        let timeout = Failure::Timeout { responded: false };
        assert_eq!(
            timeout.outcome(),
            (ResponseFlag::UpstreamRequestTimeout, 504)
        );
        assert_eq!(timeout.to_string(), "upstream request timeout");
        let late = Failure::Timeout { responded: true };
        assert_eq!(late.outcome().1, 0);
        let connect = Failure::Connect(ConnectError::Timeout(
            "127.0.0.1:15008".parse().expect("addr"),
        ));
        assert_eq!(
            connect.outcome(),
            (ResponseFlag::UpstreamConnectionFailure, 503)
        );
        let protocol = Failure::BeforeResponse {
            flag: ResponseFlag::UpstreamProtocolError,
            reason: String::new(),
        };
        assert_eq!(protocol.outcome().1, 502);
    }
}
