//! What the pipeline decides for a request: its plan (where it goes, what it becomes on the
//! way), which the Pingora hooks and the upstream carry out.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use mesh_config::{Destination, Endpoint, Filters, PathMatch, RouteRule, Service};

use crate::authn::JwtIdentity;
use crate::authz::PolicyMatch;
use crate::ext_authz::Check;
use crate::filters::rewrite;
use crate::request::attrs::RequestAttrs;
use crate::upstream::UpstreamProtocol;

/// Where a request goes.
#[derive(Clone, Debug)]
pub struct Plan {
    pub destination: Destination,
    /// What the request's JWT proved, if it had one.
    pub jwt: Option<Arc<JwtIdentity>>,
    /// What authentication changes in the request sent on (a token dropped, claims added).
    pub request_edits: RequestEdits,
    /// The check a CUSTOM policy asks for, made before the request goes on.
    pub ext_authz: Option<Check>,
    /// The AUDIT policies' rules the request matched (for the access log).
    pub audited: Vec<PolicyMatch>,
    pub rule: Option<Arc<RouteRule>>,
    /// The rule's backendRef that serves it (its filters apply after the rule's).
    pub backend_ref: Option<usize>,
    /// What serves it; the upstream balances over it per try.
    pub backend: Backend,
    /// What the serving Service port declares its backends speak (`None`: as the caller).
    pub declared_protocol: Option<UpstreamProtocol>,
    /// The host and path the backend sees instead of the caller's (`URLRewrite`).
    pub rewrite: UrlRewrite,
    /// Headers the response gains (CORS, for an allowed origin).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Where copies of the request go (`RequestMirror`, each drawn at its share).
    pub mirrors: Vec<MirrorTarget>,
}

/// Headers to take out of and put into the request the backend gets, in that order: what
/// authentication decided (a token not forwarded, its payload and claims) and what an external
/// authorizer asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestEdits {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub append: Vec<(HeaderName, HeaderValue)>,
}

impl RequestEdits {
    /// These edits, then `more`.
    pub fn extend(&mut self, more: RequestEdits) {
        self.remove.extend(more.remove);
        self.set.extend(more.set);
        self.append.extend(more.append);
    }
}

/// A Service port a copy of the request goes to; its answer is thrown away.
#[derive(Clone, Debug)]
pub struct MirrorTarget {
    pub service: Arc<Service>,
    pub port: u16,
}

impl Plan {
    /// The filters that apply: the rule's, then its chosen backendRef's.
    pub fn filters(&self) -> impl Iterator<Item = &Filters> {
        chosen_filters(self.rule.as_deref(), self.backend_ref)
    }
}

/// The filters of `rule`, then those of its backendRef `backend_ref`.
pub(super) fn chosen_filters(
    rule: Option<&RouteRule>,
    backend_ref: Option<usize>,
) -> impl Iterator<Item = &Filters> {
    let backend = rule.zip(backend_ref).and_then(|(r, i)| r.backends.get(i));
    (rule.map(|r| &r.filters).into_iter()).chain(backend.map(|b| &b.filters))
}

/// What `URLRewrite` makes of a request on its way up; `None` parts are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlRewrite {
    /// The new `Host` (`:authority`).
    pub host: Option<String>,
    /// The new path, with the request's query string.
    pub path_and_query: Option<String>,
}

impl UrlRewrite {
    /// The rewrite `filters` (the rule's, then the backend's: the more specific wins each
    /// part) make of `request`, `matched` being the match that held.
    pub(super) fn of<'f>(
        filters: impl IntoIterator<Item = &'f Filters>,
        matched: &PathMatch,
        request: &RequestAttrs<'_>,
    ) -> Self {
        let mut out = UrlRewrite::default();
        for rewrite in filters.into_iter().filter_map(|f| f.rewrite.as_ref()) {
            if let Some(host) = &rewrite.hostname {
                out.host = Some(host.clone());
            }
            if let Some(path) = &rewrite.path {
                let path = rewrite::rewrite_path(path, matched, request.path);
                out.path_and_query = Some(rewrite::with_query(&path, request.query));
            }
        }
        out
    }
}

/// What serves a request.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A Service port; its endpoints (never none) are the request's snapshot's.
    Service { service: Arc<Service>, port: u16 },
    /// A pod addressed directly.
    Pod(Endpoint),
}

/// Randomness the pipeline consumes, supplied by the caller so tests are deterministic.
#[derive(Clone, Copy, Debug)]
pub struct Rolls {
    /// Picks among a rule's weighted backends.
    pub backend: u64,
    /// Draws whether each mirror gets a copy (each mirror its own roll, derived from this).
    pub mirror: u64,
}

impl Rolls {
    pub fn random() -> Self {
        Rolls {
            backend: rand::random(),
            mirror: rand::random(),
        }
    }

    /// The roll of the `n`th mirror: independent of the others' (SplitMix64's mix).
    pub(super) fn mirror_roll(&self, n: usize) -> u64 {
        let mut z = (self.mirror).wrapping_add((n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
