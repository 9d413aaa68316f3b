//! What a rule's `URLRewrite` and `RequestRedirect` make of a request: the path and host the
//! backend sees, or the `Location` the caller is sent to. Pure functions of the request and
//! the compiled filter.

use mesh_config::{PathMatch, PathRewrite, Redirect, Scheme};

use crate::request::RequestAttrs;

/// The path `rewrite` makes of `path` (no query), `matched` being the rule's match that held.
pub fn rewrite_path(rewrite: &PathRewrite, matched: &PathMatch, path: &str) -> String {
    match (rewrite, matched) {
        (PathRewrite::Full(full), _) => full.clone(),
        (PathRewrite::Prefix(replacement), PathMatch::Prefix(prefix)) => {
            replace_prefix(path, prefix, replacement)
        }
        // Config allows a prefix replacement only where every match is a prefix match.
        (PathRewrite::Prefix(_), _) => path.to_owned(),
    }
}

/// Gateway API's `ReplacePrefixMatch`: the matched prefix (whole segments, a trailing `/` on
/// either side ignored) gives way to `replacement`; what follows it is kept as it is, and the
/// result is never empty and never starts with `//`.
fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = path
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(path);
    let replaced = format!("{}{rest}", replacement.trim_end_matches('/'));
    match replaced.starts_with('/') {
        true => replaced,
        false => format!("/{replaced}"),
    }
}

/// `path` with `query` put back, if there was one.
pub fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// The `Location` of a redirect: each part the filter leaves out is the request's own. The
/// port is the filter's; else the new scheme's well-known one; else the port the caller
/// addressed (the Service port: a mesh route's listener). A scheme's well-known port is left
/// out of the URL.
pub fn redirect_location(
    redirect: &Redirect,
    matched: &PathMatch,
    request: &RequestAttrs<'_>,
    addressed_port: u16,
) -> String {
    let scheme = redirect.scheme.unwrap_or(Scheme::Http);
    let host = (redirect.hostname.as_deref()).unwrap_or_else(|| host_without_port(request.host));
    let port = (redirect.port)
        .or(redirect.scheme.map(Scheme::default_port))
        .unwrap_or(addressed_port);
    let path = match &redirect.path {
        Some(rewrite) => rewrite_path(rewrite, matched, request.path),
        None => request.path.to_owned(),
    };
    let path = with_query(&path, request.query);
    match port == scheme.default_port() {
        true => format!("{}://{host}{path}", scheme.as_str()),
        false => format!("{}://{host}:{port}{path}", scheme.as_str()),
    }
}

/// `Host` without its port (an IPv6 literal keeps its brackets).
fn host_without_port(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(_) => host.find(']').map_or(host, |end| &host[..=end]),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn prefix(path: &str, matched: &str, replacement: &str) -> String {
        let rewrite = PathRewrite::Prefix(replacement.into());
        rewrite_path(&rewrite, &PathMatch::Prefix(matched.into()), path)
    }

    /// The table of Gateway API's `HTTPPathModifier` documentation, row by row.
    #[test]
    fn prefix_replacement_follows_the_gateway_api_table() {
        let rows = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
        ];
        for (path, matched, replacement, want) in rows {
            assert_eq!(
                prefix(path, matched, replacement),
                want,
                "{path} {matched} {replacement}"
            );
        }
        // The conformance suite's cases, and a root prefix.
        assert_eq!(prefix("/prefix/one/two", "/prefix/one", "/one"), "/one/two");
        assert_eq!(
            prefix("/strip-prefix/three", "/strip-prefix", "/"),
            "/three"
        );
        assert_eq!(prefix("/a/b", "/", "/xyz"), "/xyz/a/b");
    }

    #[test]
    fn a_full_path_replaces_the_whole_path() {
        let rewrite = PathRewrite::Full("/one".into());
        let matched = PathMatch::Exact("/full/one/two".into());
        assert_eq!(rewrite_path(&rewrite, &matched, "/full/one/two"), "/one");
    }

    fn location(redirect: Redirect, host: &str, path_and_query: &str, port: u16) -> String {
        let headers = HeaderMap::new();
        let request = RequestAttrs::new("GET", path_and_query, host, &headers);
        redirect_location(&redirect, &PathMatch::Prefix("/old".into()), &request, port)
    }

    fn redirect() -> Redirect {
        Redirect {
            scheme: None,
            hostname: None,
            port: None,
            path: None,
            status: 302,
        }
    }

    #[test]
    fn a_redirect_keeps_what_it_does_not_change() {
        let plain = location(redirect(), "echo", "/old/x?a=1", 80);
        assert_eq!(plain, "http://echo/old/x?a=1");
        // The addressed port stays unless it is the scheme's own.
        let on_8080 = location(redirect(), "echo:8080", "/old", 8080);
        assert_eq!(on_8080, "http://echo:8080/old");
        let moved = Redirect {
            hostname: Some("example.org".into()),
            path: Some(PathRewrite::Prefix("/new".into())),
            ..redirect()
        };
        assert_eq!(
            location(moved, "echo", "/old/x?a=1", 80),
            "http://example.org/new/x?a=1"
        );
        let v6 = location(redirect(), "[fd00::1]:9080", "/old", 9080);
        assert_eq!(v6, "http://[fd00::1]:9080/old");
    }

    /// Gateway API's port rules: a scheme change brings its well-known port, which is left
    /// out; an explicit port is kept unless it is the scheme's own.
    #[test]
    fn redirect_ports_follow_the_scheme() {
        let https = |port| Redirect {
            scheme: Some(Scheme::Https),
            port,
            ..redirect()
        };
        let http = |port| Redirect {
            scheme: Some(Scheme::Http),
            port,
            ..redirect()
        };
        let only_port = |port| Redirect {
            port: Some(port),
            ..redirect()
        };
        let cases = [
            (https(None), 8080, "https://echo/old"),
            (https(Some(443)), 80, "https://echo/old"),
            (https(Some(8443)), 80, "https://echo:8443/old"),
            (http(None), 8080, "http://echo/old"),
            (http(Some(8080)), 80, "http://echo:8080/old"),
            (only_port(80), 8080, "http://echo/old"),
            (only_port(8083), 80, "http://echo:8083/old"),
        ];
        for (redirect, addressed, want) in cases {
            assert_eq!(
                location(redirect.clone(), "echo", "/old", addressed),
                want,
                "{redirect:?}"
            );
        }
    }
}
