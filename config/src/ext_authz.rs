//! Compiled ext_authz extension providers (Istio's `meshConfig.extensionProviders`): where a
//! CUSTOM AuthorizationPolicy's check goes, and what of the request and its answer is passed
//! on. Making the check is the waypoint's.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::model::Service;
use crate::policy::StringMatch;

/// Istio's default for how long a check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One ext_authz provider.
#[derive(Clone, Debug)]
pub struct ExtAuthzProvider {
    pub name: String,
    /// The Service the authorizer runs behind, and its port.
    pub service: Arc<Service>,
    pub port: u16,
    pub timeout: Duration,
    /// Allow the request when the authorizer cannot be reached or fails (5xx, an error).
    pub fail_open: bool,
    /// The status a caller gets when the check failed and `fail_open` is off (403).
    pub status_on_error: u16,
    /// `includeRequestBodyInCheck`: the request's body (or its start) goes with the check.
    pub request_body: Option<BodyInCheck>,
    pub api: ExtAuthzApi,
}

/// The most of a request's body a check may carry (`maxRequestBytes`), held in memory while
/// the check is made.
pub const MAX_BODY_IN_CHECK: u32 = 8 << 20;

/// `includeRequestBodyInCheck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyInCheck {
    /// The most of the body held; a longer body is answered 413 unless `allow_partial`.
    pub max_bytes: u32,
    /// A longer body is checked by its first `max_bytes`, marked `x-envoy-auth-partial-body`.
    pub allow_partial: bool,
    /// gRPC: the body goes as bytes (`raw_body`), not as text (`body`).
    pub pack_as_bytes: bool,
}

/// How the authorizer is asked.
#[derive(Clone, Debug)]
pub enum ExtAuthzApi {
    /// Envoy's HTTP check: the request's head, sent to the authorizer; 200 allows.
    Http(HttpCheck),
    /// `envoy.service.auth.v3.Authorization/Check`.
    Grpc,
}

/// What an HTTP check sends and passes on, name patterns in Istio's forms (exact, `prefix*`,
/// `*suffix`).
#[derive(Clone, Debug, Default)]
pub struct HttpCheck {
    pub path_prefix: String,
    /// The request's headers the check gets, besides `Host`, the method, the path and
    /// `Content-Length`.
    pub include_request_headers: Vec<StringMatch>,
    /// Headers every check carries.
    pub additional_headers: Vec<(HeaderName, HeaderValue)>,
    /// The authorizer's answer headers set on the request sent on, when allowed.
    pub headers_to_upstream_on_allow: Vec<StringMatch>,
    /// The authorizer's answer headers the caller gets, when denied (empty: all but `Host`).
    pub headers_to_downstream_on_deny: Vec<StringMatch>,
    /// The authorizer's answer headers added to the response, when allowed.
    pub headers_to_downstream_on_allow: Vec<StringMatch>,
}

impl HttpCheck {
    /// Whether header `name` is in `patterns` (names compare in lower case).
    pub fn listed(patterns: &[StringMatch], name: &str) -> bool {
        patterns.iter().any(|p| p.matches_ignore_ascii_case(name))
    }
}
