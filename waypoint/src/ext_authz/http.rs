//! Envoy's HTTP ext_authz check, as pure functions: the check request made from the caller's
//! request head, and what the authorizer's answer means.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_config::ext_authz::HttpCheck;

use super::body::{CheckBody, PARTIAL_BODY_HEADER};
use super::{Allowed, Answer};
use crate::request::RequestEdits;

/// The check request for `request` (its method, `prefix` + its path and query, `Host`, the
/// headers the provider includes) with `body` when the provider includes it (and whether it is
/// partial, in `x-envoy-auth-partial-body`), else none.
pub fn check_request(
    check: &HttpCheck,
    request: &http::request::Parts,
    body: Option<&CheckBody>,
) -> http::Request<Bytes> {
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let bytes = body.map(|b| b.bytes.clone()).unwrap_or_default();
    let mut out = http::Request::builder()
        .method(request.method.clone())
        .uri(format!("{}{path}", check.path_prefix))
        .body(bytes.clone())
        .unwrap_or_default();
    let headers = out.headers_mut();
    let host = (request.headers.get(http::header::HOST).cloned()).or_else(|| {
        request
            .uri
            .authority()
            .and_then(|a| a.as_str().parse().ok())
    });
    if let Some(host) = host {
        headers.insert(http::header::HOST, host);
    }
    for (name, value) in &request.headers {
        if HttpCheck::listed(&check.include_request_headers, name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &check.additional_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(body) = body {
        headers.insert(
            PARTIAL_BODY_HEADER,
            HeaderValue::from_static(body.partial_text()),
        );
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    out
}

/// What the authorizer's answer (`status`, `headers`, `body`) means: 200 allows, passing on the
/// headers the provider lists; a 5xx is a failed check (`None`); anything else denies, with the
/// authorizer's status, body and the headers the provider lets through (all but `Host` when it
/// lists none, as Envoy does).
pub fn answer(check: &HttpCheck, status: u16, headers: &HeaderMap, body: Bytes) -> Option<Answer> {
    let picked = |patterns: &[mesh_config::StringMatch]| -> Vec<(HeaderName, HeaderValue)> {
        (headers.iter())
            .filter(|(name, _)| HttpCheck::listed(patterns, name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    match status {
        200 => Some(Answer::Allow(Allowed {
            request: RequestEdits {
                set: picked(&check.headers_to_upstream_on_allow),
                ..RequestEdits::default()
            },
            response_headers: picked(&check.headers_to_downstream_on_allow),
        })),
        500..=599 => None,
        status => {
            let mut passed: Vec<(HeaderName, HeaderValue)> =
                match &check.headers_to_downstream_on_deny[..] {
                    [] => (headers.iter())
                        .filter(|(name, _)| *name != http::header::HOST)
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect(),
                    listed => picked(listed),
                };
            // Framing is the waypoint's to write.
            passed.retain(|(name, _)| {
                *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING
            });
            Some(Answer::Deny {
                status,
                headers: passed,
                body,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::StringMatch;

    fn check() -> HttpCheck {
        HttpCheck {
            path_prefix: "/check".into(),
            include_request_headers: vec![
                StringMatch::parse("x-user"),
                StringMatch::parse("x-ext-*"),
            ],
            additional_headers: vec![(
                HeaderName::from_static("x-from"),
                HeaderValue::from_static("waypoint"),
            )],
            headers_to_upstream_on_allow: vec![StringMatch::parse("x-verdict*")],
            headers_to_downstream_on_deny: Vec::new(),
            headers_to_downstream_on_allow: vec![StringMatch::parse("set-cookie")],
        }
    }

    #[test]
    fn the_check_carries_the_head_the_provider_asks_for() {
        let (parts, ()) = http::Request::post("/orders/7?x=1")
            .header("host", "shop:8080")
            .header("x-user", "alice")
            .header("x-ext-trace", "t")
            .header("cookie", "secret")
            .header("content-length", "12")
            .body(())
            .expect("request")
            .into_parts();
        let request = check_request(&check(), &parts, None);
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri(), "/check/orders/7?x=1");
        let names: Vec<(&str, &str)> = (request.headers().iter())
            .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
            .collect();
        assert_eq!(
            names,
            [
                ("host", "shop:8080"),
                ("x-user", "alice"),
                ("x-ext-trace", "t"),
                ("x-from", "waypoint"),
                ("content-length", "0"),
            ]
        );
        let body = CheckBody {
            bytes: Bytes::from_static(b"user=al"),
            partial: true,
            pack_as_bytes: false,
        };
        let with_body = check_request(&check(), &parts, Some(&body));
        assert_eq!(with_body.body(), &Bytes::from_static(b"user=al"));
        let header = |name: &str| {
            with_body
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("text"))
        };
        assert_eq!(header("content-length"), Some("7"));
        assert_eq!(header(PARTIAL_BODY_HEADER), Some("true"));
    }

    #[test]
    fn answers_allow_deny_or_fail() {
        let mut headers = HeaderMap::new();
        headers.insert("x-verdict-user", HeaderValue::from_static("alice"));
        headers.insert("set-cookie", HeaderValue::from_static("s=1"));
        headers.insert("host", HeaderValue::from_static("authz"));
        headers.insert("content-length", HeaderValue::from_static("6"));
        let Some(Answer::Allow(allowed)) = answer(&check(), 200, &headers, Bytes::new()) else {
            panic!("200 allows");
        };
        assert_eq!(allowed.request.set.len(), 1);
        assert_eq!(allowed.request.set[0].0, "x-verdict-user");
        assert_eq!(allowed.response_headers[0].0, "set-cookie");
        let Some(Answer::Deny {
            status,
            headers: passed,
            body,
        }) = answer(&check(), 401, &headers, Bytes::from_static(b"nope!\n"))
        else {
            panic!("401 denies");
        };
        assert_eq!((status, &body[..]), (401, &b"nope!\n"[..]));
        let names: Vec<&str> = passed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-verdict-user", "set-cookie"],
            "all but Host and framing"
        );
        assert!(
            answer(&check(), 503, &headers, Bytes::new()).is_none(),
            "a 5xx fails"
        );
    }
}
