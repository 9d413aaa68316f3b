//! A finished request's attributes, under Envoy's names, for the CEL expressions of Istio's
//! Telemetry (access-log filters, metric tag values):
//!
//! ```text
//! request.    path url_path host scheme method headers referer useragent id protocol query
//!             time duration size
//! response.   code grpc_status headers size
//! source.     address port          destination.  address port
//! upstream.   address port          connection.   mtls uri_san_peer_certificate
//!                                                 uri_san_local_certificate
//! ```
//!
//! Only the roots an expression names are built.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use cel::{Context, Env, Value};
use http::HeaderMap;
use mesh_config::cel::Expression;

/// CEL's standard library, built once.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// What is known of a request when it ends.
pub struct Attributes<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub request_headers: &'a HeaderMap,
    pub protocol: &'static str,
    pub start: SystemTime,
    pub duration: Duration,
    pub request_size: u64,
    /// 0: no response.
    pub response_code: u16,
    pub grpc_status: Option<i64>,
    pub response_headers: Option<&'a HeaderMap>,
    pub response_size: u64,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub upstream: Option<SocketAddr>,
    pub peer_principal: Option<&'a str>,
    pub local_principal: &'a str,
}

impl Attributes<'_> {
    /// What `expression` says of the request; an error (a missing attribute, a type that does
    /// not fit) as text.
    pub fn evaluate(&self, expression: &Expression) -> Result<Value, String> {
        let program = expression.program();
        let references = program.references();
        let mut context = Context::with_env(STDLIB.clone());
        for root in [
            "request",
            "response",
            "source",
            "destination",
            "upstream",
            "connection",
        ] {
            if references.has_variable(root) {
                context.add_variable_from_value(root, self.root(root));
            }
        }
        program.execute(&context).map_err(|e| e.to_string())
    }

    /// Whether `expression` holds (anything but `true`, an error included, does not).
    pub fn holds(&self, expression: &Expression) -> bool {
        matches!(self.evaluate(expression), Ok(Value::Bool(true)))
    }

    /// `expression`'s value as a label value: a string as it is, other values as CEL prints
    /// them; `None` when it cannot be evaluated.
    pub fn text(&self, expression: &Expression) -> Option<String> {
        match self.evaluate(expression).ok()? {
            Value::String(s) => Some(s.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::UInt(u) => Some(u.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }

    fn root(&self, root: &str) -> Value {
        let mut map: HashMap<&str, Value> = HashMap::new();
        match root {
            "request" => {
                let (path, query) = match self.path_and_query.split_once('?') {
                    Some((path, query)) => (path, query),
                    None => (self.path_and_query, ""),
                };
                let header = |name: &str| {
                    let value = self.request_headers.get(name)?.to_str().ok()?;
                    Some(Value::from(value))
                };
                map.insert("path", self.path_and_query.into());
                map.insert("url_path", path.into());
                map.insert("query", query.into());
                map.insert("host", self.host.into());
                map.insert("scheme", "http".into());
                map.insert("method", self.method.into());
                map.insert("protocol", self.protocol.into());
                map.insert("headers", headers(self.request_headers));
                map.insert("size", Value::Int(self.request_size as i64));
                let start: chrono::DateTime<chrono::Utc> = self.start.into();
                map.insert("time", Value::Timestamp(start.fixed_offset()));
                if let Ok(duration) = chrono::Duration::from_std(self.duration) {
                    map.insert("duration", Value::Duration(duration));
                }
                for (key, name) in [
                    ("referer", "referer"),
                    ("useragent", "user-agent"),
                    ("id", "x-request-id"),
                ] {
                    if let Some(value) = header(name) {
                        map.insert(key, value);
                    }
                }
            }
            "response" => {
                if self.response_code > 0 {
                    map.insert("code", Value::Int(self.response_code.into()));
                }
                if let Some(status) = self.grpc_status {
                    map.insert("grpc_status", Value::Int(status));
                }
                if let Some(response) = self.response_headers {
                    map.insert("headers", headers(response));
                }
                map.insert("size", Value::Int(self.response_size as i64));
            }
            "source" => address(&mut map, self.source),
            "destination" => address(&mut map, self.destination),
            "upstream" => address(&mut map, self.upstream),
            "connection" => {
                map.insert("mtls", Value::Bool(self.peer_principal.is_some()));
                if let Some(peer) = self.peer_principal {
                    map.insert("uri_san_peer_certificate", peer.into());
                }
                map.insert("uri_san_local_certificate", self.local_principal.into());
            }
            _ => {}
        }
        Value::from(map)
    }
}

/// Header names (lower case) to values; repeated ones joined with `,`, as Envoy joins them.
fn headers(headers: &HeaderMap) -> Value {
    let mut map: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        map.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    Value::from(map)
}

fn address(map: &mut HashMap<&str, Value>, address: Option<SocketAddr>) {
    if let Some(address) = address {
        map.insert("address", address.to_string().into());
        map.insert("port", Value::Int(address.port().into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes<'a>(request: &'a HeaderMap, response: &'a HeaderMap) -> Attributes<'a> {
        Attributes {
            method: "POST",
            host: "web.default:80",
            path_and_query: "/api/items?page=2",
            request_headers: request,
            protocol: "HTTP/1.1",
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(1500),
            request_size: 10,
            response_code: 503,
            grpc_status: None,
            response_headers: Some(response),
            response_size: 7,
            source: Some("10.0.0.1:4000".parse().expect("addr")),
            destination: Some("10.96.0.10:80".parse().expect("addr")),
            upstream: None,
            peer_principal: Some("spiffe://cluster.local/ns/default/sa/sleep"),
            local_principal: "spiffe://cluster.local/ns/default/sa/waypoint",
        }
    }

    #[test]
    fn expressions_read_envoys_attributes() {
        let mut request = HeaderMap::new();
        request.insert("x-user", "alice".parse().expect("value"));
        request.append("x-multi", "a".parse().expect("value"));
        request.append("x-multi", "b".parse().expect("value"));
        request.insert("user-agent", "curl/8".parse().expect("value"));
        let mut response = HeaderMap::new();
        response.insert("content-type", "text/plain".parse().expect("value"));
        let a = attributes(&request, &response);
        let holds = |source: &str| a.holds(&Expression::parse(source).expect(source));
        for truth in [
            "response.code >= 500",
            "request.method == 'POST' && request.url_path == '/api/items'",
            "request.query == 'page=2' && request.path.startsWith('/api/')",
            "request.headers['x-user'] == 'alice'",
            "request.headers['x-multi'] == 'a,b'",
            "request.useragent.contains('curl')",
            "request.duration > duration('1s')",
            "request.time > timestamp('2023-01-01T00:00:00Z')",
            "response.headers['content-type'] == 'text/plain'",
            "source.address.startsWith('10.0.0.1') && source.port == 4000",
            "destination.port == 80 && connection.mtls",
            "connection.uri_san_peer_certificate.endsWith('/sa/sleep')",
            "!has(upstream.address)",
            "'x-user' in request.headers",
        ] {
            assert!(holds(truth), "{truth}");
        }
        for falsehood in [
            "response.code < 400",
            "request.headers['x-absent'] == 'x'",
            "response.code",
            "upstream.address == '1.2.3.4:80'",
        ] {
            assert!(!holds(falsehood), "{falsehood}");
        }
        let text = |source: &str| a.text(&Expression::parse(source).expect(source));
        assert_eq!(text("request.headers['x-user']").as_deref(), Some("alice"));
        assert_eq!(text("response.code").as_deref(), Some("503"));
        assert_eq!(
            text("request.host.split(':')[0]"),
            None,
            "no strings extension"
        );
        assert_eq!(text("request.headers['x-absent']"), None);
    }
}
