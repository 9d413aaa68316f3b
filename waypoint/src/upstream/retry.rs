//! Whether a failed try goes again, and when: the retry policy (a route's `retry`, or the
//! default), what each way a try can end means for it, and the backoff. (Where a retry goes is
//! the balancer's: another endpoint while one is left.) Pure: every decision is a function of
//! its inputs.
//!
//! The default policy is Istio's for a waypoint (2 retries on connect failure, refused stream,
//! gRPC `unavailable` and `cancelled`; no status code, so never a 503) plus one it lacks: a
//! request sent on a reused connection that closed before any response byte goes again, for
//! idempotent methods always and for any method when it provably was not sent.

use std::time::Duration;

use http::Method;
use mesh_config::RetryPolicy;

/// Base of the exponential backoff when a route sets none (Envoy's default).
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// The backoff grows to at most this many times its base (Envoy's default cap).
const BACKOFF_CAP_FACTOR: u32 = 10;

/// gRPC status codes retried by default (`grpc-status` in a trailers-only response).
const GRPC_CANCELLED: u32 = 1;
const GRPC_UNAVAILABLE: u32 = 14;

/// The retry policy of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy<'a> {
    /// Retries after the first try.
    pub attempts: u32,
    /// Response statuses retried.
    pub codes: &'a [u16],
    /// The first retry waits at least this long.
    pub backoff: Duration,
}

impl<'a> Policy<'a> {
    /// The route's `retry`, or the default.
    pub fn of(route: Option<&'a RetryPolicy>) -> Self {
        match route {
            Some(r) => Policy {
                attempts: r.attempts,
                codes: &r.codes,
                backoff: r.backoff.unwrap_or(DEFAULT_BACKOFF),
            },
            None => Policy {
                attempts: RetryPolicy::DEFAULT_ATTEMPTS,
                codes: &[],
                backoff: DEFAULT_BACKOFF,
            },
        }
    }
}

/// How a try ended without its response reaching the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryEnd {
    /// No connection could be had: nothing was sent.
    ConnectFailure,
    /// The upstream refused the stream (HTTP/2 `REFUSED_STREAM`, or a `GOAWAY` above it): it
    /// was not processed.
    RefusedStream,
    /// The connection closed before the request was written: hyper handed it back unsent.
    NotSent,
    /// A reused connection closed or reset before any response byte: the backend had closed it
    /// (a keep-alive timeout) as the request went out.
    ReusedConnectionClosed,
    /// Failed after the request was (maybe partly) sent, in a way that says nothing of
    /// whether the application saw it.
    Failed,
    /// The try's timeout fired before a response: a 504 as far as `codes` go (as Envoy).
    TimedOut,
    /// A response head arrived: its status, and `grpc-status` if the head carries it.
    Answered { status: u16, grpc: Option<u32> },
}

/// Why a try was retried: Envoy's `retry_on` names, so dashboards read the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    ConnectFailure,
    RefusedStream,
    ResetBeforeRequest,
    RetriableStatusCodes,
    Unavailable,
    Cancelled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConnectFailure => "connect-failure",
            Reason::RefusedStream => "refused-stream",
            Reason::ResetBeforeRequest => "reset-before-request",
            Reason::RetriableStatusCodes => "retriable-status-codes",
            Reason::Unavailable => "unavailable",
            Reason::Cancelled => "cancelled",
        }
    }
}

/// Why `end` deserves a retry under `policy`, if it does (attempts and budget aside).
pub fn reason(policy: &Policy<'_>, end: TryEnd, method: &Method) -> Option<Reason> {
    match end {
        TryEnd::ConnectFailure => Some(Reason::ConnectFailure),
        TryEnd::RefusedStream => Some(Reason::RefusedStream),
        TryEnd::NotSent => Some(Reason::ResetBeforeRequest),
        TryEnd::ReusedConnectionClosed if idempotent(method) => Some(Reason::ResetBeforeRequest),
        TryEnd::ReusedConnectionClosed | TryEnd::Failed => None,
        TryEnd::TimedOut => policy
            .codes
            .contains(&504)
            .then_some(Reason::RetriableStatusCodes),
        TryEnd::Answered { status, .. } if policy.codes.contains(&status) => {
            Some(Reason::RetriableStatusCodes)
        }
        TryEnd::Answered {
            grpc: Some(GRPC_UNAVAILABLE),
            ..
        } => Some(Reason::Unavailable),
        TryEnd::Answered {
            grpc: Some(GRPC_CANCELLED),
            ..
        } => Some(Reason::Cancelled),
        TryEnd::Answered { .. } => None,
    }
}

/// RFC 9110 §9.2.2: a request that may be repeated without a different effect.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The wait before retry number `retry` (1 for the first): the base doubled per retry up to
/// ten times the base, plus up to half again of jitter (`jitter` in `[0, 1)`), never below
/// the base. A reused connection found closed is the connection's fault, not the backend's:
/// that retry goes at once.
pub fn backoff(policy: &Policy<'_>, reason: Reason, retry: u32, jitter: f64) -> Duration {
    if reason == Reason::ResetBeforeRequest {
        return Duration::ZERO;
    }
    let base = policy.backoff;
    let doubled = base.saturating_mul(1 << retry.saturating_sub(1).min(16));
    let exponential = doubled.min(base.saturating_mul(BACKOFF_CAP_FACTOR));
    exponential.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// The `grpc-status` a response head carries (a trailers-only gRPC response).
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Method = Method::GET;
    const POST: Method = Method::POST;

    fn answered(status: u16, grpc: Option<u32>) -> TryEnd {
        TryEnd::Answered { status, grpc }
    }

    #[test]
    fn the_default_policy_is_istios_plus_reused_connections() {
        let p = Policy::of(None);
        assert_eq!(p.attempts, 2);
        for method in [&GET, &POST] {
            assert_eq!(
                reason(&p, TryEnd::ConnectFailure, method),
                Some(Reason::ConnectFailure)
            );
            assert_eq!(
                reason(&p, TryEnd::RefusedStream, method),
                Some(Reason::RefusedStream)
            );
            assert_eq!(
                reason(&p, TryEnd::NotSent, method),
                Some(Reason::ResetBeforeRequest)
            );
            assert_eq!(reason(&p, TryEnd::Failed, method), None);
            assert_eq!(reason(&p, TryEnd::TimedOut, method), None);
            // Never a 503 (Istio ≥ 1.24), nor any other status.
            assert_eq!(reason(&p, answered(503, None), method), None);
            assert_eq!(
                reason(&p, answered(200, Some(14)), method),
                Some(Reason::Unavailable)
            );
            assert_eq!(
                reason(&p, answered(200, Some(1)), method),
                Some(Reason::Cancelled)
            );
            assert_eq!(reason(&p, answered(200, Some(13)), method), None);
        }
        // A reused connection that closed: the request may have reached the app.
        assert_eq!(
            reason(&p, TryEnd::ReusedConnectionClosed, &GET),
            Some(Reason::ResetBeforeRequest)
        );
        assert_eq!(reason(&p, TryEnd::ReusedConnectionClosed, &POST), None);
    }

    #[test]
    fn a_routes_codes_are_retried_and_a_try_timeout_counts_as_504() {
        let route = RetryPolicy {
            attempts: 3,
            codes: vec![503, 504],
            backoff: Some(Duration::from_millis(100)),
        };
        let p = Policy::of(Some(&route));
        assert_eq!((p.attempts, p.backoff), (3, Duration::from_millis(100)));
        assert_eq!(
            reason(&p, answered(503, None), &POST),
            Some(Reason::RetriableStatusCodes)
        );
        assert_eq!(reason(&p, answered(500, None), &GET), None);
        assert_eq!(
            reason(&p, TryEnd::TimedOut, &GET),
            Some(Reason::RetriableStatusCodes)
        );
        // Connection failures are retried with any route policy.
        assert_eq!(
            reason(&p, TryEnd::ConnectFailure, &POST),
            Some(Reason::ConnectFailure)
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter_and_never_under_the_base() {
        let p = Policy::of(None);
        let ms = Duration::from_millis;
        let at = |retry, jitter| backoff(&p, Reason::ConnectFailure, retry, jitter);
        assert_eq!(at(1, 0.0), ms(25));
        assert_eq!(at(2, 0.0), ms(50));
        assert_eq!(at(3, 0.0), ms(100));
        assert_eq!(at(5, 0.0), ms(250), "capped at ten times the base");
        assert_eq!(at(40, 0.0), ms(250), "no overflow");
        assert_eq!(at(1, 0.999_999).as_millis(), 37);
        for retry in 1..8 {
            for jitter in [0.0, 0.3, 0.99] {
                let wait = at(retry, jitter);
                assert!(
                    wait >= ms(25) && wait <= ms(375),
                    "{retry} {jitter}: {wait:?}"
                );
            }
        }
        let reused = backoff(&p, Reason::ResetBeforeRequest, 1, 0.5);
        assert_eq!(reused, Duration::ZERO);
    }

    #[test]
    fn grpc_status_is_read_from_a_trailers_only_head() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(grpc_status(&headers), Some(14));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&headers), None);
    }
}
