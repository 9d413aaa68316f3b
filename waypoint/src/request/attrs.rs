//! What routing and policy read from one request, taken from the request head once.

use http::HeaderMap;
use pingora_http::RequestHeader;

/// The request as routes and policies see it. Borrowed from the request head: computing it
/// allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttrs<'a> {
    pub version: http::Version,
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `Host` (HTTP/1.1) or the URI authority (`:authority` in HTTP/2); empty when neither.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestAttrs<'a> {
    pub fn of(req: &'a RequestHeader) -> Self {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
        RequestAttrs {
            version: req.version,
            ..Self::new(req.method.as_str(), path_and_query, host, &req.headers)
        }
    }

    /// An HTTP/1.1 request (tests and callers that have no head).
    pub fn new(
        method: &'a str,
        path_and_query: &'a str,
        host: &'a str,
        headers: &'a HeaderMap,
    ) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        RequestAttrs {
            version: http::Version::HTTP_11,
            method,
            path,
            query,
            host,
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_path_and_query_from_the_head() {
        let mut req = RequestHeader::build("GET", b"/a/b?x=1&y", None).expect("head");
        req.insert_header("host", "reviews:9080").expect("host");
        let attrs = RequestAttrs::of(&req);
        assert_eq!(
            (attrs.method, attrs.path, attrs.query, attrs.host),
            ("GET", "/a/b", Some("x=1&y"), "reviews:9080")
        );
        let mut h2 = RequestHeader::build("POST", b"/r", None).expect("head");
        h2.set_uri("http://ratings:9080/r".parse().expect("uri"));
        let attrs = RequestAttrs::of(&h2);
        assert_eq!(
            (attrs.path, attrs.query, attrs.host),
            ("/r", None, "ratings:9080")
        );
    }
}
