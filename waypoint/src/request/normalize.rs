//! The path a request names, normalized as Istio does by default (`meshConfig.pathNormalization:
//! BASE`, Envoy's `normalize_path`: RFC 3986 section 6's syntax-based normalization). Routes
//! and policies see the normalized path and the backend gets it, so `/public/../admin` or
//! `/%61dmin` cannot slip past a rule on `/admin` to an app that resolves them. Slashes are
//! not merged and `%2F` is not decoded (Istio's `MERGE_SLASHES` and `DECODE_AND_MERGE_SLASHES`
//! are not the default). Pure.

/// The normalized form of `path` (a request's path, without its query), or `None` when it is
/// normal already (or not a path: `*`, an empty one).
pub fn normalize_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let decoded = decode_unreserved(rest);
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded.split('/').peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            other => {
                segments.push(other);
                continue;
            }
        }
        // A path ending in a dot segment names a directory: it keeps its trailing slash.
        if last {
            segments.push("");
        }
    }
    let normal = format!("/{}", segments.join("/"));
    (normal != path).then_some(normal)
}

/// RFC 3986 section 2.3: a percent-encoded unreserved character is that character; every
/// other escape is kept, with uppercase hex digits (section 6.2.2.1); a `%` that starts no
/// escape is escaped itself (`%25`, as Envoy's canonicalization does), so no decoding can
/// make a new escape of what follows it (`%%34%32` is `%2542`, not `%42`).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escape {
            Some((high, low)) => {
                let byte = high << 4 | low;
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
            }
            None if bytes[i] == b'%' => {
                out.push_str("%25");
                i += 1;
            }
            None => {
                // Request targets are ASCII (Pingora and hyper refuse others), but a char
                // boundary is respected all the same.
                let ch = path[i..].chars().next().expect("i is at a char boundary");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> String {
        normalize_path(path).unwrap_or_else(|| path.to_string())
    }

    #[test]
    fn dot_segments_are_resolved_as_rfc_3986_says() {
        for (path, want) in [
            ("/public/../admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/..", "/"),
            ("/a//../b", "/a/b"),
            ("/a/..b/c.", "/a/..b/c."),
        ] {
            assert_eq!(normal(path), want, "{path}");
        }
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_others_kept() {
        for (path, want) in [
            ("/%61dmin", "/admin"),
            ("/x/%2e%2E/admin", "/admin"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb%3f", "/a%2Fb%3F"),
            ("/%7euser", "/~user"),
            ("/100%", "/100%25"),
            ("/bad%zz", "/bad%25zz"),
            ("/%%34%32", "/%2542"),
        ] {
            assert_eq!(normal(path), want, "{path}");
        }
    }

    #[test]
    fn a_normal_path_is_left_alone_and_slashes_are_not_merged() {
        for path in ["/", "/a/b/", "/a//b", "/api/v1/items", "/%2F"] {
            assert_eq!(normalize_path(path), None, "{path}");
        }
        assert_eq!(normalize_path("*"), None, "OPTIONS * is not a path");
    }
}
