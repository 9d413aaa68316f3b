//! One request through an upstream connection: the caller's request body (read from Pingora's
//! session) streams to the endpoint while the response streams back, both at once, so no
//! direction can wedge the other; a stream quiet for the idle timeout ends with 504 `UT`.
//!
//! Decisions (what the upstream request looks like, what a failure means) are pure functions;
//! [`forward`] is the I/O loop between them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use mesh_core::ResponseFlag;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use tokio::sync::mpsc;

use super::client::{Checkout, ConnectError, Target, UpstreamBody, Upstreams};
use super::protocol::UpstreamProtocol;

/// Request body chunks in flight between the caller and the upstream connection.
const BODY_CHANNEL: usize = 4;

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

/// The request as sent upstream: `head` (already filtered) in the form `protocol` takes.
pub fn upstream_request(
    head: RequestHeader,
    protocol: UpstreamProtocol,
    body: UpstreamBody,
) -> http::Request<UpstreamBody> {
    let parts: http::request::Parts = head.into();
    let mut request = http::Request::from_parts(parts, body);
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
    request
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

/// What a hyper error before the response head means.
fn before_response(error: &hyper::Error) -> Failure {
    let reset = std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
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
    Failure::BeforeResponse { flag, reason }
}

/// Whether a request that failed before any response byte may go again on a new connection:
/// only when it went on a reused connection that turned out closed, carried no body, and its
/// method is idempotent (RFC 9110 §9.2.2).
pub fn may_retry_on_new_connection(method: &Method, reused: bool, had_body: bool) -> bool {
    reused
        && !had_body
        && matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
}

/// When the request must have been answered by, from its route's `timeouts`: `request` counts
/// from the request's arrival, `backendRequest` from the start of the attempt; the earlier
/// wins. `None`: no deadline (the stream idle timeout still applies).
pub fn deadline(
    rule: Option<&mesh_config::RouteRule>,
    arrived: Instant,
    attempt: Instant,
) -> Option<Instant> {
    let rule = rule?;
    let request = rule.request_timeout.map(|t| arrived + t);
    let backend = rule.backend_request_timeout.map(|t| attempt + t);
    match (request, backend) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One exchange's settings.
pub struct Exchange<'a> {
    pub upstreams: &'a Upstreams,
    pub target: &'a Target,
    pub protocol: UpstreamProtocol,
    /// A stream with no byte either way for this long ends (504 before a response).
    pub idle_timeout: Duration,
}

/// Sends the session's request (`head`, already filtered) to the target and streams the
/// response back, applying `edit_response` to its head. Returns the response status.
pub async fn forward(
    exchange: Exchange<'_>,
    session: &mut Session,
    head: RequestHeader,
    mut edit_response: impl FnMut(&mut ResponseHeader) -> pingora_error::Result<()>,
) -> Result<u16, Failure> {
    let method = head.method.clone();
    let had_body = !session.is_body_empty();
    let caller_h2 = session.is_http2();
    let mut attempt_head = Some(head);
    let mut retried = false;
    let (checkout, response, tx) = loop {
        let head = attempt_head.take().expect("a head per attempt");
        let retry_head = (!had_body).then(|| head.clone());
        let mut checkout = if retried {
            exchange
                .upstreams
                .connect(exchange.target, exchange.protocol)
                .await?
        } else {
            exchange
                .upstreams
                .checkout(exchange.target, exchange.protocol)
                .await?
        };
        let (tx, body) = if had_body {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(BODY_CHANNEL);
            (Some(tx), StreamBody::new(tokio_stream_of(rx)).boxed())
        } else {
            (None, Empty::new().map_err(|never| match never {}).boxed())
        };
        let request = upstream_request(head, exchange.protocol, body);
        let sent = match checkout.ready().await {
            Ok(()) => send(&mut checkout, request),
            Err(e) => Box::pin(async move { Err(e) }),
        };
        if had_body {
            break (checkout, sent, tx);
        }
        // Without a body the whole request is in `sent`: wait for its head here, so that a
        // reused connection found closed can be retried on a new one.
        let response = tokio::time::timeout(exchange.idle_timeout, sent).await;
        match response {
            Err(_) => return Err(Failure::Timeout { responded: false }),
            Ok(Ok(response)) => {
                break (checkout, Box::pin(async { Ok(response) }), tx);
            }
            Ok(Err(e)) if may_retry_on_new_connection(&method, checkout.reused(), had_body) => {
                tracing::debug!(error = %e, "reused upstream connection closed; retrying on a new one");
                attempt_head = retry_head;
                retried = true;
                continue;
            }
            Ok(Err(e)) => return Err(before_response(&e)),
        }
    };
    let status = pump(
        &exchange,
        session,
        response,
        tx,
        Caller {
            h2: caller_h2,
            had_body,
            method: &method,
        },
        &mut edit_response,
    )
    .await?;
    if let Checkout::Http1 { sender, .. } = checkout {
        exchange.upstreams.checkin(exchange.target, sender);
    } else {
        drop(checkout);
    }
    Ok(status)
}

type ResponseFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = hyper::Result<http::Response<Incoming>>> + Send>,
>;

fn send(checkout: &mut Checkout, request: http::Request<UpstreamBody>) -> ResponseFuture {
    match checkout {
        Checkout::Http1 { sender, .. } => Box::pin(sender.send_request(request)),
        Checkout::Http2 { sender, .. } => Box::pin(sender.send_request(request)),
    }
}

fn tokio_stream_of(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What the pump needs to know of the caller's request.
struct Caller<'a> {
    h2: bool,
    had_body: bool,
    method: &'a Method,
}

/// Moves the request body up and the response down until the response has ended.
async fn pump(
    exchange: &Exchange<'_>,
    session: &mut Session,
    mut response: ResponseFuture,
    mut tx: Option<mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>>,
    caller: Caller<'_>,
    edit_response: &mut impl FnMut(&mut ResponseHeader) -> pingora_error::Result<()>,
) -> Result<u16, Failure> {
    let Caller {
        h2: caller_h2,
        had_body,
        method,
    } = caller;
    let abort = |tx: &mut Option<mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>>| {
        if let Some(tx) = tx.take() {
            let _ = tx.try_send(Err(std::io::Error::other("request aborted")));
        }
    };
    let mut permit: Option<mpsc::OwnedPermit<Result<Frame<Bytes>, std::io::Error>>> = None;
    let mut body: Option<Incoming> = None;
    let mut status = 0u16;
    let mut trailers_sent = false;
    let idle = tokio::time::sleep(exchange.idle_timeout);
    tokio::pin!(idle);
    loop {
        let sending = tx.is_some();
        tokio::select! {
            reserved = reserve(tx.clone()), if sending && permit.is_none() => match reserved {
                Some(p) => permit = Some(p),
                // The upstream stopped taking the body (it answered, or went away).
                None => tx = None,
            },
            chunk = session.read_request_body(), if sending && permit.is_some() => {
                idle.as_mut().reset(tokio::time::Instant::now() + exchange.idle_timeout);
                match chunk {
                    Ok(Some(data)) => {
                        if let Some(p) = permit.take() {
                            p.send(Ok(Frame::data(data)));
                        }
                    }
                    Ok(None) => {
                        permit = None;
                        tx = None;
                    }
                    Err(e) => {
                        abort(&mut tx);
                        return Err(Failure::Downstream(e));
                    }
                }
            }
            answered = &mut response, if body.is_none() && status == 0 => {
                idle.as_mut().reset(tokio::time::Instant::now() + exchange.idle_timeout);
                let answered = match answered {
                    Ok(answered) => answered,
                    Err(e) => {
                        abort(&mut tx);
                        return Err(before_response(&e));
                    }
                };
                let (parts, incoming) = answered.into_parts();
                status = parts.status.as_u16();
                let end = incoming.is_end_stream();
                let mut header = downstream_response(parts, caller_h2, *method == Method::HEAD);
                if edit_response(&mut header).is_err() {
                    abort(&mut tx);
                    return Err(Failure::BeforeResponse {
                        flag: ResponseFlag::UpstreamProtocolError,
                        reason: "response header filter failed".to_owned(),
                    });
                }
                if !caller_h2 && had_body && !session.is_body_done() {
                    // Answered before the caller's body is in (as Envoy does): this HTTP/1.1
                    // connection carries no further request.
                    session.set_keepalive(None);
                }
                if let Err(e) = session.write_response_header(Box::new(header), end).await {
                    abort(&mut tx);
                    return Err(Failure::Downstream(e));
                }
                if end {
                    break;
                }
                body = Some(incoming);
            }
            frame = next_frame(&mut body), if body.is_some() => {
                idle.as_mut().reset(tokio::time::Instant::now() + exchange.idle_timeout);
                let written = match frame {
                    None => {
                        if !trailers_sent {
                            session
                                .write_response_body(None, true)
                                .await
                                .map_err(Failure::Downstream)?;
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        abort(&mut tx);
                        return Err(Failure::AfterResponse(e.to_string()));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => session.write_response_body(Some(data), false).await,
                        // Trailers (gRPC's status) reach HTTP/2 callers; HTTP/1.1 has no use
                        // for them here.
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) if caller_h2 => {
                                trailers_sent = true;
                                session.write_response_trailers(trailers).await
                            }
                            _ => Ok(()),
                        },
                    },
                };
                if let Err(e) = written {
                    abort(&mut tx);
                    return Err(Failure::Downstream(e));
                }
            }
            () = &mut idle => {
                abort(&mut tx);
                return Err(Failure::Timeout { responded: status != 0 });
            }
        }
    }
    if had_body && !session.is_body_done() {
        // The response ended before the request body: the upstream has what it wanted; the
        // rest of the caller's body is not read (its connection is not reused).
        abort(&mut tx);
        session.set_keepalive(None);
    }
    Ok(status)
}

async fn reserve<T>(tx: Option<mpsc::Sender<T>>) -> Option<mpsc::OwnedPermit<T>> {
    tx?.reserve_owned().await.ok()
}

async fn next_frame(body: &mut Option<Incoming>) -> Option<hyper::Result<Frame<Bytes>>> {
    match body {
        Some(body) => body.frame().await,
        None => std::future::pending().await,
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

    fn empty() -> UpstreamBody {
        Empty::new().map_err(|never| match never {}).boxed()
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
        let r = upstream_request(h, UpstreamProtocol::Http1, empty());
        assert_eq!(r.uri(), "/a?b=1");
        assert_eq!(r.version(), Version::HTTP_11);
        assert_eq!(r.headers()["host"], "reviews:9080");
        assert_eq!(r.headers()["x-kept"], "yes");
        for gone in ["connection", "x-private", "keep-alive", "te"] {
            assert!(!r.headers().contains_key(gone), "{gone} forwarded");
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
        let r = upstream_request(h, UpstreamProtocol::Http2, empty());
        assert_eq!(r.uri(), "http://reviews:9080/pkg.Svc/Call");
        assert_eq!(r.version(), Version::HTTP_2);
        assert!(!r.headers().contains_key("host"));
        assert!(!r.headers().contains_key("transfer-encoding"));
        assert_eq!(r.headers()["te"], "trailers");
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
    fn the_earlier_of_the_route_timeouts_is_the_deadline() {
        let rule = |request: Option<u64>, backend: Option<u64>| mesh_config::RouteRule {
            route: mesh_config::ObjectRef::new("default", "r"),
            rule_index: 0,
            matches: Vec::new(),
            filters: Vec::new(),
            backends: Vec::new(),
            request_timeout: request.map(Duration::from_millis),
            backend_request_timeout: backend.map(Duration::from_millis),
        };
        let arrived = Instant::now();
        let attempt = arrived + Duration::from_millis(100);
        let ms = |n| Duration::from_millis(n);
        assert_eq!(deadline(None, arrived, attempt), None);
        assert_eq!(deadline(Some(&rule(None, None)), arrived, attempt), None);
        assert_eq!(
            deadline(Some(&rule(Some(500), None)), arrived, attempt),
            Some(arrived + ms(500))
        );
        assert_eq!(
            deadline(Some(&rule(None, Some(300))), arrived, attempt),
            Some(attempt + ms(300))
        );
        assert_eq!(
            deadline(Some(&rule(Some(350), Some(300))), arrived, attempt),
            Some(arrived + ms(350))
        );
        assert_eq!(
            deadline(Some(&rule(Some(500), Some(300))), arrived, attempt),
            Some(attempt + ms(300))
        );
    }

    #[test]
    fn only_idempotent_bodiless_requests_on_reused_connections_are_retried() {
        assert!(may_retry_on_new_connection(&Method::GET, true, false));
        assert!(!may_retry_on_new_connection(&Method::GET, false, false));
        assert!(!may_retry_on_new_connection(&Method::GET, true, true));
        assert!(!may_retry_on_new_connection(&Method::POST, true, false));
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
