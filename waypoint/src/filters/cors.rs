//! A rule's `CORS` filter: the preflight answer the waypoint gives itself, and the headers an
//! actual cross-origin response gains. Pure functions of the request and the compiled filter.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use mesh_config::Cors;

use crate::request::RequestAttrs;

type Headers = Vec<(HeaderName, HeaderValue)>;

/// Whether the request is a CORS preflight: `OPTIONS` with an `Origin` and an
/// `Access-Control-Request-Method`.
pub fn is_preflight(request: &RequestAttrs<'_>) -> bool {
    request.method == Method::OPTIONS.as_str()
        && request.headers.contains_key(header::ORIGIN)
        && (request.headers).contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The headers of the waypoint's answer to a preflight: none when the origin is not allowed
/// (the browser then refuses the actual request).
pub fn preflight_headers(cors: &Cors, headers: &HeaderMap) -> Headers {
    let Some(origin) = allowed_origin(cors, headers) else {
        return Vec::new();
    };
    let mut out = shared(cors, origin);
    let requested = |name| headers.get(name).cloned();
    let methods = listed(
        &cors.allow_methods,
        cors.allow_credentials,
        requested(header::ACCESS_CONTROL_REQUEST_METHOD),
    );
    out.extend(methods.map(|v| (header::ACCESS_CONTROL_ALLOW_METHODS, v)));
    let allowed_headers = listed(
        &cors.allow_headers,
        cors.allow_credentials,
        requested(header::ACCESS_CONTROL_REQUEST_HEADERS),
    );
    out.extend(allowed_headers.map(|v| (header::ACCESS_CONTROL_ALLOW_HEADERS, v)));
    out.push((
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age),
    ));
    out
}

/// The headers an actual request's response gains: none when the origin is not allowed.
pub fn response_headers(cors: &Cors, headers: &HeaderMap) -> Headers {
    allowed_origin(cors, headers).map_or_else(Vec::new, |origin| shared(cors, origin))
}

/// The request's `Origin`, if the filter allows it.
fn allowed_origin<'h>(cors: &Cors, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    cors.allows_origin(origin.to_str().ok()?).then_some(origin)
}

/// What a preflight answer and an actual response both carry: the origin echoed (never `*`,
/// which credentialed requests may not get), credentials, exposed headers.
fn shared(cors: &Cors, origin: &HeaderValue) -> Headers {
    let mut out = vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (header::VARY, HeaderValue::from_static("Origin")),
    ];
    if cors.allow_credentials {
        let yes = HeaderValue::from_static("true");
        out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, yes));
    }
    // A credentialed response may not expose `*`: only the names listed.
    let exposed: Vec<&str> = (cors.expose_headers.iter())
        .filter(|h| !(cors.allow_credentials && *h == "*"))
        .map(String::as_str)
        .collect();
    if let Some(v) = join(&exposed) {
        out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v));
    }
    out
}

/// An `Access-Control-Allow-{Methods,Headers}` value: the list; for `*`, the wildcard, or
/// (credentialed, where `*` is not allowed) what the request asked for.
fn listed(
    allowed: &[String],
    credentials: bool,
    requested: Option<HeaderValue>,
) -> Option<HeaderValue> {
    if allowed.iter().any(|a| a == "*") {
        return match credentials {
            true => requested,
            false => Some(HeaderValue::from_static("*")),
        };
    }
    join(&allowed.iter().map(String::as_str).collect::<Vec<_>>())
}

fn join(items: &[&str]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::OriginPattern;

    fn cors(origins: &[&str], methods: &[&str], headers: &[&str], credentials: bool) -> Cors {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Cors {
            allow_origins: (origins.iter())
                .map(|o| OriginPattern::parse(o).expect("origin"))
                .collect(),
            allow_credentials: credentials,
            allow_methods: strings(methods),
            allow_headers: strings(headers),
            expose_headers: strings(&["x-header-3", "x-header-4"]),
            max_age: 3600,
        }
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        (pairs.iter())
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    fn get<'h>(headers: &'h Headers, name: &HeaderName) -> Option<&'h str> {
        let found = headers.iter().find(|(n, _)| n == name);
        found.and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn only_options_with_origin_and_requested_method_is_a_preflight() {
        let full = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ]);
        let no_method = request(&[("origin", "https://a.example")]);
        assert!(is_preflight(&RequestAttrs::new("OPTIONS", "/", "h", &full)));
        assert!(!is_preflight(&RequestAttrs::new("GET", "/", "h", &full)));
        assert!(!is_preflight(&RequestAttrs::new(
            "OPTIONS", "/", "h", &no_method
        )));
    }

    /// The conformance suite's first route: listed origins, methods and headers, credentials.
    #[test]
    fn a_preflight_from_an_allowed_origin_gets_every_header() {
        let c = cors(
            &["https://www.foo.com", "https://*.bar.com"],
            &["GET", "OPTIONS"],
            &["x-header-1", "x-header-2"],
            true,
        );
        for origin in ["https://www.foo.com", "https://xpto.www.bar.com"] {
            let mut h = request(&[
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ]);
            h.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("origin"),
            );
            let out = preflight_headers(&c, &h);
            assert_eq!(
                get(&out, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
                Some(origin)
            );
            let methods = get(&out, &header::ACCESS_CONTROL_ALLOW_METHODS);
            assert_eq!(methods, Some("GET, OPTIONS"));
            let headers = get(&out, &header::ACCESS_CONTROL_ALLOW_HEADERS);
            assert_eq!(headers, Some("x-header-1, x-header-2"));
            let exposed = get(&out, &header::ACCESS_CONTROL_EXPOSE_HEADERS);
            assert_eq!(exposed, Some("x-header-3, x-header-4"));
            assert_eq!(get(&out, &header::ACCESS_CONTROL_MAX_AGE), Some("3600"));
            let credentials = get(&out, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
            assert_eq!(credentials, Some("true"));
        }
        let stranger = request(&[
            ("origin", "https://foobar.com"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(preflight_headers(&c, &stranger).is_empty());
        assert!(response_headers(&c, &stranger).is_empty());
    }

    #[test]
    fn wildcards_are_echoed_back_when_credentialed() {
        let h = request(&[
            ("origin", "https://other.foo.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ]);
        let credentialed = preflight_headers(&cors(&["*"], &["*"], &["*"], true), &h);
        let origin = get(&credentialed, &header::ACCESS_CONTROL_ALLOW_ORIGIN);
        assert_eq!(origin, Some("https://other.foo.com"));
        let methods = get(&credentialed, &header::ACCESS_CONTROL_ALLOW_METHODS);
        assert_eq!(methods, Some("PUT"));
        let headers = get(&credentialed, &header::ACCESS_CONTROL_ALLOW_HEADERS);
        assert_eq!(headers, Some("x-header-1, x-header-2"));
        let open = preflight_headers(&cors(&["*"], &["*"], &["*"], false), &h);
        assert_eq!(get(&open, &header::ACCESS_CONTROL_ALLOW_METHODS), Some("*"));
        assert_eq!(get(&open, &header::ACCESS_CONTROL_ALLOW_HEADERS), Some("*"));
        assert_eq!(get(&open, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }

    #[test]
    fn an_actual_response_gets_origin_credentials_and_exposed_headers_only() {
        let c = cors(&["https://www.foo.com"], &["GET"], &["x-a"], true);
        let h = request(&[("origin", "https://www.foo.com")]);
        let out = response_headers(&c, &h);
        let origin = get(&out, &header::ACCESS_CONTROL_ALLOW_ORIGIN);
        assert_eq!(origin, Some("https://www.foo.com"));
        assert_eq!(get(&out, &header::VARY), Some("Origin"));
        let credentials = get(&out, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        assert_eq!(credentials, Some("true"));
        assert_eq!(get(&out, &header::ACCESS_CONTROL_ALLOW_METHODS), None);
        assert_eq!(get(&out, &header::ACCESS_CONTROL_MAX_AGE), None);
    }
}
