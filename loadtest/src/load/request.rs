//! The request every call sends, and what fortio records about a response (pure).

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;

use super::LoadError;
use super::options::LoadOptions;

/// Sent as User-Agent.
pub const USER_AGENT_VALUE: &str = concat!("loadtest/", env!("CARGO_PKG_VERSION"));

/// A prebuilt request: cloned for every call (hyper), or written as is (fast client).
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    h2: bool,
    keepalive: bool,
    /// The whole HTTP/1.1 request as sent on the wire.
    wire: Bytes,
}

impl RequestTemplate {
    pub fn new(options: &LoadOptions) -> Result<Self, LoadError> {
        let target = &options.target;
        let authority = options
            .host_override
            .clone()
            .unwrap_or_else(|| target.authority.clone());
        let bad = |reason: String| LoadError::InvalidUrl {
            url: target.url.clone(),
            reason,
        };
        // HTTP/1.1 sends origin-form plus Host; HTTP/2 needs scheme and :authority.
        let uri: Uri = if options.h2 {
            format!("http://{authority}{}", target.path_and_query).parse()
        } else {
            target.path_and_query.parse()
        }
        .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        let mut headers = HeaderMap::new();
        if !options.h2 {
            let host = HeaderValue::from_str(&authority).map_err(|e| bad(e.to_string()))?;
            headers.insert(HOST, host);
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if !options.keepalive && !options.h2 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        for (name, value) in &options.headers {
            headers.append(name.clone(), value.clone());
        }
        let body = options.payload.clone().unwrap_or_default();
        let method = if body.is_empty() {
            Method::GET
        } else {
            Method::POST
        };
        let wire = serialize_http1(&method, &target.path_and_query, &headers, &body);
        Ok(Self {
            method,
            uri,
            headers,
            body,
            h2: options.h2,
            keepalive: options.keepalive,
            wire,
        })
    }

    /// Whether the request may be sent again when a reused connection turns out to have been
    /// closed (a GET; a POST could have been processed).
    pub fn is_idempotent(&self) -> bool {
        self.method == Method::GET
    }

    /// The request in HTTP/1.1 wire form (origin-form target, Host first, Content-Length
    /// when there is a body).
    pub fn http1_wire(&self) -> &[u8] {
        &self.wire
    }

    /// Whether a connection is reused for the next call.
    pub fn keepalive(&self) -> bool {
        self.keepalive
    }

    pub fn build(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        if self.h2 {
            *request.version_mut() = http::Version::HTTP_2;
        }
        request
    }
}

fn serialize_http1(method: &Method, target: &str, headers: &HeaderMap, body: &Bytes) -> Bytes {
    let mut wire = Vec::with_capacity(256 + body.len());
    wire.extend_from_slice(method.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(target.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &[u8], value: &[u8]| {
        wire.extend_from_slice(name);
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    };
    for (name, value) in headers {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    if !body.is_empty() {
        field(b"content-length", body.len().to_string().as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(body);
    Bytes::from(wire)
}

/// fortio's notion of success: 2xx, or 418.
pub fn code_is_ok(code: i32) -> bool {
    (200..=299).contains(&code) || code == 418
}

/// Bytes the status line and headers take in HTTP/1.1 form (an estimate for HTTP/2, whose
/// headers are compressed on the wire).
pub fn header_size(status: StatusCode, headers: &HeaderMap) -> u64 {
    let reason = status.canonical_reason().unwrap_or("").len();
    let status_line = "HTTP/1.1 200 ".len() + reason + 2;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    (status_line + fields + 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_codes() {
        assert!(code_is_ok(200) && code_is_ok(204) && code_is_ok(299) && code_is_ok(418));
        assert!(!code_is_ok(-1) && !code_is_ok(302) && !code_is_ok(503) && !code_is_ok(199));
    }

    #[test]
    fn http1_wire_form() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("svc:80"));
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let wire = serialize_http1(&Method::GET, "/echo?size=1", &headers, &Bytes::new());
        assert_eq!(
            wire,
            "GET /echo?size=1 HTTP/1.1\r\nhost: svc:80\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        let wire = serialize_http1(&Method::POST, "/", &headers, &Bytes::from_static(b"abc"));
        assert!(
            wire.ends_with(b"x-a: 2\r\ncontent-length: 3\r\n\r\nabc"),
            "{wire:?}"
        );
    }

    #[test]
    fn header_size_counts_http1_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("1024"));
        // "HTTP/1.1 200 OK\r\n" (17) + "content-length: 1024\r\n" (22) + "\r\n" (2)
        assert_eq!(header_size(StatusCode::OK, &headers), 41);
    }
}
