//! Local replies: answers the waypoint gives itself (a deny, no route, no upstream, a failed
//! upstream), rendered once, here, for the kind of caller that asked. An HTTP caller gets the
//! status with a short text body; a gRPC caller gets what gRPC clients understand, as Envoy
//! does: HTTP 200 with `grpc-status` and `grpc-message` in a trailers-only response. An answer
//! a route gives through the waypoint (a redirect, a CORS preflight) is not an error: it is
//! its status and headers, with no body, for every caller.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use mesh_core::ResponseFlag;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// An answer from the waypoint itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// The HTTP status an HTTP caller sees.
    pub status: u16,
    /// Why, for metrics and the access log.
    pub flag: ResponseFlag,
    /// One line for the caller (and the access log).
    pub message: String,
    /// Headers the answer carries (a redirect's `Location`, a preflight's CORS headers).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// More of why, for the access log only: never sent to the caller (which policy denied).
    pub detail: Option<String>,
    /// The body an HTTP caller gets instead of `message` (an external authorizer's), sent as
    /// it is.
    pub body: Option<Bytes>,
}

impl LocalReply {
    pub fn new(status: u16, flag: ResponseFlag, message: impl Into<String>) -> Self {
        LocalReply {
            status,
            flag,
            message: message.into(),
            headers: Vec::new(),
            detail: None,
            body: None,
        }
    }

    /// The same reply, with `body` for HTTP callers instead of the message.
    pub fn with_body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    /// The same reply, with `detail` for the access log.
    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The same reply, carrying `headers` (an error's too: a 401's `www-authenticate`).
    pub fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.headers = headers;
        self
    }

    /// An answer a route gives (`status` below 400), not an error.
    pub fn answer(
        status: u16,
        message: impl Into<String>,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Self {
        LocalReply {
            headers,
            ..LocalReply::new(status, ResponseFlag::None, message)
        }
    }

    /// Whether this is a route's answer rather than an error.
    fn is_answer(&self) -> bool {
        self.status < 400
    }
}

/// Who is asking, which decides the shape of a local reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Http,
    /// `content-type: application/grpc` (or `application/grpc+proto`, ...).
    Grpc,
}

impl Caller {
    pub fn of(request: &RequestHeader) -> Self {
        let grpc = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.strip_prefix("application/grpc")
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
            });
        if grpc { Caller::Grpc } else { Caller::Http }
    }
}

/// gRPC status codes a local reply can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcStatus {
    Unknown = 2,
    PermissionDenied = 7,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcStatus {
    /// gRPC's mapping of HTTP statuses (the one Envoy applies to its local replies).
    pub fn from_http(status: u16) -> Self {
        match status {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }
}

/// A rendered reply: the response head and, for HTTP callers, a body.
#[derive(Debug)]
pub struct Rendered {
    pub header: ResponseHeader,
    pub body: Option<Bytes>,
}

/// Renders `reply` for `caller`.
pub fn render(reply: &LocalReply, caller: Caller) -> Result<Rendered> {
    if reply.is_answer() {
        let mut header = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
        for (name, value) in &reply.headers {
            header.append_header(name, value)?;
        }
        header.insert_header(http::header::CONTENT_LENGTH, 0)?;
        return Ok(Rendered { header, body: None });
    }
    let mut rendered = match caller {
        Caller::Http => {
            let body =
                (reply.body.clone()).unwrap_or_else(|| Bytes::from(format!("{}\n", reply.message)));
            let mut header = ResponseHeader::build(reply.status, Some(2 + reply.headers.len()))?;
            let typed = (reply.headers.iter()).any(|(name, _)| name == http::header::CONTENT_TYPE);
            if !typed {
                header.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
            }
            header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
            Rendered {
                header,
                body: Some(body),
            }
        }
        Caller::Grpc => {
            let status = GrpcStatus::from_http(reply.status) as u8;
            let mut header = ResponseHeader::build(200, Some(3 + reply.headers.len()))?;
            header.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
            header.insert_header("grpc-status", status.to_string())?;
            header.insert_header("grpc-message", percent_encode(&reply.message))?;
            Rendered { header, body: None }
        }
    };
    for (name, value) in &reply.headers {
        rendered.header.append_header(name, value)?;
    }
    Ok(rendered)
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/pkg.Svc/Method", None).expect("request");
        req.insert_header("content-type", value).expect("header");
        req
    }

    fn value<'h>(h: &'h ResponseHeader, name: &str) -> &'h str {
        h.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn grpc_callers_are_recognised_by_content_type() {
        assert_eq!(Caller::of(&header("application/grpc")), Caller::Grpc);
        assert_eq!(Caller::of(&header("application/grpc+proto")), Caller::Grpc);
        assert_eq!(Caller::of(&header("application/grpc-web")), Caller::Http);
        assert_eq!(Caller::of(&header("application/json")), Caller::Http);
        let plain = RequestHeader::build("GET", b"/", None).expect("request");
        assert_eq!(Caller::of(&plain), Caller::Http);
    }

    #[test]
    fn http_callers_get_the_status_and_a_text_body() {
        let reply = LocalReply::new(403, ResponseFlag::Deny, "RBAC: access denied");
        let r = render(&reply, Caller::Http).expect("renders");
        assert_eq!(r.header.status.as_u16(), 403);
        assert_eq!(r.body.as_deref(), Some(&b"RBAC: access denied\n"[..]));
        assert_eq!(value(&r.header, "content-length"), "20");
    }

    #[test]
    fn a_routes_answer_is_its_status_and_headers_for_every_caller() {
        let location = HeaderValue::from_static("https://example.org/new");
        let reply = LocalReply::answer(301, "redirect", vec![(http::header::LOCATION, location)]);
        for caller in [Caller::Http, Caller::Grpc] {
            let r = render(&reply, caller).expect("renders");
            assert_eq!(r.header.status.as_u16(), 301);
            assert_eq!(value(&r.header, "location"), "https://example.org/new");
            assert_eq!(value(&r.header, "content-length"), "0");
            assert!(r.body.is_none());
        }
    }

    #[test]
    fn grpc_callers_get_200_with_a_grpc_status() {
        for (http, grpc) in [
            (403, "7"),
            (404, "12"),
            (503, "14"),
            (504, "14"),
            (401, "16"),
            (500, "2"),
        ] {
            let reply = LocalReply::new(http, ResponseFlag::None, "no: 100% sure\n");
            let r = render(&reply, Caller::Grpc).expect("renders");
            assert_eq!(r.header.status.as_u16(), 200);
            assert!(r.body.is_none(), "trailers-only");
            assert_eq!(value(&r.header, "grpc-status"), grpc, "http {http}");
            assert_eq!(value(&r.header, "content-type"), "application/grpc");
            assert_eq!(value(&r.header, "grpc-message"), "no: 100%25 sure%0A");
        }
    }
}
