//! Compiled HTTPRoute filters: what a rule (or one of its backends) does to a request besides
//! choosing where it goes. Compiled once (header names parsed, origins split, Services looked
//! up); the waypoint only carries them out.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::model::Service;

/// The filters of a rule or of one backendRef. Each kind appears at most once (Gateway API
/// forbids repeating one), except mirrors.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    /// Answers the request with a redirect instead of forwarding it.
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
}

/// `set`/`add`/`remove` of a header modifier, in manifest order, parsed at compile time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// How a redirect or a rewrite changes the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    /// The whole path is replaced (the query string is kept).
    Full(String),
    /// The part the rule's `PathPrefix` match matched is replaced (the rule has only prefix
    /// matches; config checks it).
    Prefix(String),
}

/// `http` or `https`, for a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// `RequestRedirect`: each part left out keeps the request's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<Scheme>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    /// 301, 302 (the default), 303, 307 or 308.
    pub status: u16,
}

/// `URLRewrite`: what the backend sees instead of the caller's host and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
}

/// `RequestMirror`: a copy of a share of the requests to another Service port; its answer is
/// thrown away.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub service: Arc<Service>,
    pub port: u16,
    /// The share of requests mirrored: `numerator / denominator` (100/100 unless set).
    pub numerator: u32,
    pub denominator: u32,
}

/// `CORS`, with origins parsed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<OriginPattern>,
    pub allow_credentials: bool,
    /// As written; `*` means every method.
    pub allow_methods: Vec<String>,
    /// Lower-case; `*` means every header.
    pub allow_headers: Vec<String>,
    /// Lower-case; `*` means every header.
    pub expose_headers: Vec<String>,
    /// Seconds a preflight answer may be cached (5 unless set).
    pub max_age: u32,
}

impl Cors {
    /// `maxAge` when a filter leaves it out (Gateway API's default).
    pub const DEFAULT_MAX_AGE: u32 = 5;

    /// Whether requests from `origin` (an `Origin` header's value) may be shared.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        self.allow_origins.iter().any(|p| p.matches(&origin))
    }
}

/// One `allowOrigins` entry: `*`, or `<scheme>://<host>[:<port>]` where the host may start
/// with `*` (any number of labels to its left).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Origin {
        scheme: String,
        /// Lower-case; a leading `*` stands for any non-empty run of characters.
        host: String,
        port: u16,
    },
}

impl OriginPattern {
    /// Parses an `allowOrigins` entry, or says why it is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let origin = Origin::parse(text)
            .ok_or_else(|| format!("{text:?} is not <scheme>://<host>[:<port>]"))?;
        if origin.host.rfind('*').is_some_and(|at| at > 0) {
            return Err(format!("{text:?}: '*' may only start the host"));
        }
        Ok(OriginPattern::Origin {
            scheme: origin.scheme,
            host: origin.host,
            port: origin.port,
        })
    }

    fn matches(&self, origin: &Origin) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Origin { scheme, host, port } => {
                *scheme == origin.scheme
                    && *port == origin.port
                    && match host.strip_prefix('*') {
                        None => *host == origin.host,
                        Some(suffix) => {
                            origin.host.len() > suffix.len() && origin.host.ends_with(suffix)
                        }
                    }
            }
        }
    }
}

/// An origin, with its default port filled in.
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        // An IPv6 host is bracketed: its colons are not the port's.
        let host_end = match rest.starts_with('[') {
            true => rest.find(']')? + 1,
            false => rest.find(':').unwrap_or(rest.len()),
        };
        let (host, port) = rest.split_at(host_end);
        let port = match port.strip_prefix(':') {
            Some(port) => port.parse().ok().filter(|p| *p > 0)?,
            None if port.is_empty() => default_port,
            None => return None,
        };
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.*[]:".contains(&b));
        valid.then(|| Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors {
            allow_origins: origins
                .iter()
                .map(|o| OriginPattern::parse(o).expect("valid"))
                .collect(),
            ..Cors::default()
        }
    }

    #[test]
    fn origins_match_scheme_host_and_port_with_default_ports() {
        let c = cors(&["https://www.foo.com", "http://foo.com:8080"]);
        assert!(c.allows_origin("https://www.foo.com"));
        assert!(c.allows_origin("https://www.foo.com:443"));
        assert!(c.allows_origin("https://WWW.foo.com"));
        assert!(!c.allows_origin("http://www.foo.com"));
        assert!(!c.allows_origin("https://www.foo.com:8443"));
        assert!(c.allows_origin("http://foo.com:8080"));
        assert!(!c.allows_origin("http://foo.com"));
        assert!(!c.allows_origin("null"));
    }

    #[test]
    fn a_leading_wildcard_matches_any_labels_to_its_left() {
        let c = cors(&["https://*.foo.com"]);
        assert!(c.allows_origin("https://a.foo.com"));
        assert!(c.allows_origin("https://a.b.foo.com"));
        assert!(!c.allows_origin("https://foo.com"));
        assert!(!c.allows_origin("https://afoo.com"));
        assert!(!c.allows_origin("http://a.foo.com"));
        assert!(cors(&["*"]).allows_origin("http://anything.example:1234"));
        assert!(!cors(&["*"]).allows_origin("not an origin"));
        assert!(cors(&["https://*"]).allows_origin("https://x.y"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        assert!(OriginPattern::parse("foo.com").is_err());
        assert!(OriginPattern::parse("ftp://foo.com").is_err());
        assert!(OriginPattern::parse("https://foo.*.com").is_err());
        assert!(OriginPattern::parse("https://foo.com:0").is_err());
        assert!(OriginPattern::parse("https://foo.com/path").is_err());
        assert!(cors(&["http://[::1]:8080"]).allows_origin("http://[::1]:8080"));
        assert!(cors(&["http://[::1]"]).allows_origin("http://[::1]:80"));
    }
}
