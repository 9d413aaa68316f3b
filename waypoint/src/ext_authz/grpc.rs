//! Envoy's gRPC ext_authz check (`envoy.service.auth.v3.Authorization/Check`): its messages
//! (written from Envoy's `external_auth.proto` and `attribute_context.proto`, only the fields
//! a waypoint fills or reads; unknown fields in an answer are skipped, as protobuf does), the
//! request built from the caller's (pure), what an answer means (pure), and the call (tonic).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use http_body_util::{BodyExt, Full};

use super::body::PARTIAL_BODY_HEADER;
use super::{Allowed, Answer, Subject};
use crate::upstream::client::UpstreamBody;

/// The Check method's path.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "4")]
    pub principal: String,
}

/// `config.core.v3.Address`, its `socket_address` member.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    /// `TCP` is 0.
    #[prost(int32, tag = "1")]
    pub protocol: i32,
    #[prost(string, tag = "2")]
    pub address: String,
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "1")]
    pub time: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(map = "string, string", tag = "3")]
    pub headers: HashMap<String, String>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    #[prost(string, tag = "6")]
    pub scheme: String,
    /// -1: unknown.
    #[prost(int64, tag = "9")]
    pub size: i64,
    #[prost(string, tag = "10")]
    pub protocol: String,
    /// The body (or its start) as text, when the provider includes it.
    #[prost(string, tag = "11")]
    pub body: String,
    /// The same as bytes (`packAsBytes`).
    #[prost(bytes = "vec", tag = "12")]
    pub raw_body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(oneof = "HttpResponse", tags = "2, 3")]
    pub http_response: Option<HttpResponse>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HttpResponse {
    #[prost(message, tag = "2")]
    Denied(DeniedHttpResponse),
    #[prost(message, tag = "3")]
    Ok(OkHttpResponse),
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, repeated, tag = "5")]
    pub headers_to_remove: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
}

/// `type.v3.HttpStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<CoreHeaderValue>,
    /// Deprecated `google.protobuf.BoolValue append`.
    #[prost(message, optional, tag = "2")]
    pub append: Option<bool>,
    /// `HeaderAppendAction`: 0 append or add, 1 add if absent, 2 overwrite or add, 3 overwrite
    /// if present.
    #[prost(int32, tag = "3")]
    pub append_action: i32,
}

/// `config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CoreHeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// The check request for `subject`, headers as Envoy sends them: lower-case names, repeated
/// ones joined with `,`, and the request's pseudo-headers.
pub fn check_request(subject: &Subject<'_>) -> CheckRequest {
    let request = subject.request;
    let host = (request.headers.get(http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_string();
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &request.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        (headers.entry(name.as_str().to_string()))
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    headers.insert(":authority".into(), host.clone());
    headers.insert(":method".into(), request.method.to_string());
    headers.insert(":path".into(), path.to_string());
    headers.insert(":scheme".into(), "http".into());
    let (mut body, mut raw_body) = (String::new(), Vec::new());
    if let Some(included) = subject.body {
        let partial = included.partial_text().to_string();
        headers.insert(PARTIAL_BODY_HEADER.into(), partial);
        match included.pack_as_bytes {
            true => raw_body = included.bytes.to_vec(),
            false => body = String::from_utf8_lossy(&included.bytes).into_owned(),
        }
    }
    let peer = |addr: Option<SocketAddr>, principal: &str| Peer {
        address: addr.map(|a| Address {
            socket_address: Some(SocketAddress {
                protocol: 0,
                address: a.ip().to_string(),
                port_value: u32::from(a.port()),
            }),
        }),
        service: String::new(),
        principal: principal.to_string(),
    };
    let size = (request.headers.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(-1);
    let id = (request.headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(Some(subject.source), subject.source_principal)),
            destination: Some(peer(subject.destination, "")),
            request: Some(Request {
                time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                http: Some(HttpRequest {
                    id: id.to_string(),
                    method: request.method.to_string(),
                    headers,
                    path: path.to_string(),
                    host,
                    scheme: "http".into(),
                    size,
                    protocol: subject.protocol.to_string(),
                    body,
                    raw_body,
                }),
            }),
        }),
    }
}

/// What a Check answer means: status OK allows (with the `ok_response`'s header changes, set
/// over the request's `headers`); anything else denies, with the `denied_response`'s status
/// (403 if it gives none), headers and body.
pub fn answer(response: CheckResponse, headers: &HeaderMap) -> Answer {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        let ok = match response.http_response {
            Some(HttpResponse::Ok(ok)) => ok,
            _ => OkHttpResponse::default(),
        };
        let mut allowed = Allowed::default();
        for option in &ok.headers {
            let Some((name, value)) = header(option) else {
                continue;
            };
            let present = headers.contains_key(&name);
            match (option.append, option.append_action) {
                (Some(true), _) => allowed.request.append.push((name, value)),
                (Some(false), _) | (None, 0 | 2) => allowed.request.set.push((name, value)),
                (None, 1) if !present => allowed.request.set.push((name, value)),
                (None, 3) if present => allowed.request.set.push((name, value)),
                _ => {}
            }
        }
        allowed.request.remove = (ok.headers_to_remove.iter())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            // The request must keep its host.
            .filter(|name| *name != http::header::HOST)
            .collect();
        allowed.response_headers = ok
            .response_headers_to_add
            .iter()
            .filter_map(header)
            .collect();
        return Answer::Allow(allowed);
    }
    let denied = match response.http_response {
        Some(HttpResponse::Denied(denied)) => denied,
        _ => DeniedHttpResponse::default(),
    };
    let status = (denied.status.as_ref())
        .and_then(|s| u16::try_from(s.code).ok())
        .filter(|s| (200..=599).contains(s))
        .unwrap_or(403);
    Answer::Deny {
        status,
        headers: denied.headers.iter().filter_map(header).collect(),
        body: Bytes::from(denied.body),
    }
}

/// A header of an answer, its value from `value` or, if empty, `raw_value`.
fn header(option: &HeaderValueOption) -> Option<(HeaderName, HeaderValue)> {
    let h = option.header.as_ref()?;
    let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
    let value = match h.value.is_empty() {
        false => HeaderValue::from_str(&h.value).ok()?,
        true => HeaderValue::from_bytes(&h.raw_value).ok()?,
    };
    Some((name, value))
}

/// Makes the Check call on `sender` (an HTTP/2 connection to the authorizer), with tonic,
/// its metadata carrying `trace` (the request's trace context).
pub async fn call(
    sender: hyper::client::conn::http2::SendRequest<UpstreamBody>,
    authority: &str,
    request: CheckRequest,
    trace: &[(http::HeaderName, http::HeaderValue)],
) -> Result<CheckResponse, String> {
    let trace = trace.to_vec();
    // A unary call's body is one message: read whole, it goes up as the pool's body type.
    let service = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        let trace = trace.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            super::with_trace(&mut parts.headers, &trace);
            let collected = body.collect().await;
            let message = collected.map_err(|e| io::Error::other(e.to_string()))?;
            let body: UpstreamBody = (Full::new(message.to_bytes()))
                .map_err(|never| match never {})
                .boxed();
            let request = http::Request::from_parts(parts, body);
            sender.send_request(request).await.map_err(io::Error::other)
        }
    });
    let origin: http::Uri = format!("http://{authority}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut grpc = tonic::client::Grpc::with_origin(service, origin);
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default();
    let path = http::uri::PathAndQuery::from_static(CHECK_PATH);
    let response = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .map_err(|status| format!("gRPC {:?}: {}", status.code(), status.message()))?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn option(key: &str, value: &str, append: Option<bool>, action: i32) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(CoreHeaderValue {
                key: key.into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            append,
            append_action: action,
        }
    }

    #[test]
    fn the_request_carries_the_head_and_the_peer() {
        let (parts, ()) = http::Request::get("/a?b=1")
            .header("host", "shop:8080")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .expect("request")
            .into_parts();
        let subject = Subject {
            request: &parts,
            protocol: "HTTP/1.1",
            source: "127.0.1.10:4000".parse().expect("addr"),
            source_principal: "spiffe://cluster.local/ns/default/sa/sleep",
            destination: Some("127.0.100.12:8080".parse().expect("addr")),
            body: None,
            trace: &[],
        };
        let encoded = check_request(&subject).encode_to_vec();
        let decoded = CheckRequest::decode(&encoded[..]).expect("round trip");
        let attributes = decoded.attributes.expect("attributes");
        let http = attributes.request.expect("request").http.expect("http");
        assert_eq!(
            (http.method.as_str(), http.path.as_str(), http.host.as_str()),
            ("GET", "/a?b=1", "shop:8080")
        );
        assert_eq!(http.headers["x-a"], "1,2");
        assert_eq!(http.headers[":path"], "/a?b=1");
        let source = attributes.source.expect("source");
        assert_eq!(
            source.principal,
            "spiffe://cluster.local/ns/default/sa/sleep"
        );
        let address = source
            .address
            .and_then(|a| a.socket_address)
            .expect("address");
        assert_eq!(
            (address.address.as_str(), address.port_value),
            ("127.0.1.10", 4000)
        );
    }

    #[test]
    fn answers_follow_envoys_header_actions() {
        let mut request_headers = HeaderMap::new();
        request_headers.insert("x-present", HeaderValue::from_static("old"));
        let ok = CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                message: String::new(),
            }),
            http_response: Some(HttpResponse::Ok(OkHttpResponse {
                headers: vec![
                    option("x-set", "1", None, 0),
                    option("x-appended", "2", Some(true), 0),
                    option("x-present", "3", None, 1),
                    option("x-absent", "4", None, 1),
                    option("x-present", "5", None, 3),
                    option("x-missing", "6", None, 3),
                ],
                headers_to_remove: vec!["authorization".into(), "host".into()],
                response_headers_to_add: vec![option("x-resp", "7", None, 0)],
            })),
        };
        let Answer::Allow(allowed) = answer(ok, &request_headers) else {
            panic!("OK allows");
        };
        let pairs = |list: &[(HeaderName, http::HeaderValue)]| -> Vec<String> {
            list.iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().expect("text")))
                .collect()
        };
        assert_eq!(
            pairs(&allowed.request.set),
            ["x-set=1", "x-absent=4", "x-present=5"]
        );
        assert_eq!(pairs(&allowed.request.append), ["x-appended=2"]);
        assert_eq!(allowed.request.remove, [http::header::AUTHORIZATION]);
        assert_eq!(pairs(&allowed.response_headers), ["x-resp=7"]);
        let denied = CheckResponse {
            status: Some(RpcStatus {
                code: 7,
                message: "no".into(),
            }),
            http_response: Some(HttpResponse::Denied(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![option("www-authenticate", "Basic", None, 0)],
                body: "who are you?".into(),
            })),
        };
        let Answer::Deny {
            status,
            headers,
            body,
        } = answer(denied, &request_headers)
        else {
            panic!("not OK denies");
        };
        assert_eq!((status, &body[..]), (401, &b"who are you?"[..]));
        assert_eq!(pairs(&headers), ["www-authenticate=Basic"]);
        let bare = CheckResponse {
            status: Some(RpcStatus {
                code: 16,
                message: String::new(),
            }),
            http_response: None,
        };
        assert!(matches!(
            answer(bare, &request_headers),
            Answer::Deny { status: 403, .. }
        ));
    }
}
