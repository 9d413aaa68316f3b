//! The `/debug` JSON document describing the request as the server saw it (pure).

use std::net::SocketAddr;

use http::request::Parts;
use serde_json::{Map, Value, json};

/// `{"server", "method", "path", "query", "headers": {lowercase-name: value}, "peer",
/// "protocol": "HTTP/1.1"|"HTTP/2.0", "host", "body_size"}`. Repeated headers are joined with
/// ", "; `host` is the Host header or, for HTTP/2, the :authority.
pub fn debug_json(server: &str, parts: &Parts, peer: SocketAddr, body_size: u64) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    json!({
        "server": server,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "peer": peer.to_string(),
        "protocol": format!("{:?}", parts.version),
        "host": host,
        "body_size": body_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Version};

    #[test]
    fn describes_the_request() {
        let (parts, ()) = Request::post("/debug?x=1&y=2")
            .version(Version::HTTP_11)
            .header("Host", "svc:80")
            .header("X-Multi", "a")
            .header("x-multi", "b")
            .body(())
            .expect("request")
            .into_parts();
        let peer: SocketAddr = "127.0.0.9:4321".parse().expect("addr");
        let v = debug_json("echo-1", &parts, peer, 5);
        assert_eq!(v["server"], "echo-1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/debug");
        assert_eq!(v["query"], "x=1&y=2");
        assert_eq!(v["headers"]["host"], "svc:80");
        assert_eq!(v["headers"]["x-multi"], "a, b");
        assert_eq!(v["peer"], "127.0.0.9:4321");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["host"], "svc:80");
        assert_eq!(v["body_size"], 5);
    }

    #[test]
    fn http2_protocol_and_authority() {
        let (parts, ()) = Request::get("http://svc.ns:8080/debug")
            .version(Version::HTTP_2)
            .body(())
            .expect("request")
            .into_parts();
        let peer: SocketAddr = "[::1]:1".parse().expect("addr");
        let v = debug_json("e", &parts, peer, 0);
        assert_eq!(v["protocol"], "HTTP/2.0");
        assert_eq!(v["host"], "svc.ns:8080");
        assert_eq!(v["query"], "");
        assert_eq!(v["peer"], "[::1]:1");
    }
}
