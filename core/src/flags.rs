//! Response flags: why a request or connection ended the way it did, in the short codes that
//! Envoy's access logs and Istio's `response_flags` metric label use, so dashboards and
//! alerts written for Istio read ours unchanged.

use std::fmt;

/// One response flag. `None` ("-") means the request or connection was served normally.
///
/// The codes are Envoy's, except `Deny` and `Connect`, which are Istio ztunnel's own
/// (`DENY`: refused by an AuthorizationPolicy; `CONNECT`: no upstream connection could be
/// made). The waypoint reports Envoy's codes, the ztunnel ztunnel's, as the proxies they
/// stand in for do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    #[default]
    None,
    /// `UH`: no healthy upstream endpoint.
    NoHealthyUpstream,
    /// `UF`: the upstream connection (HBONE dial) failed.
    UpstreamConnectionFailure,
    /// `UO`: upstream overflow (connection pool or circuit breaker limit).
    UpstreamOverflow,
    /// `NR`: no route, or no destination this proxy serves.
    NoRouteFound,
    /// `URX`: retries or the retry budget exhausted.
    UpstreamRetryLimitExceeded,
    /// `NC`: the route's backend does not exist.
    NoClusterFound,
    /// `DT`: the request exceeded its overall duration.
    DurationTimeout,
    /// `DC`: the downstream connection ended before the response was complete.
    DownstreamConnectionTermination,
    /// `UT`: the upstream did not answer in time.
    UpstreamRequestTimeout,
    /// `LR`: the proxy reset the stream itself.
    LocalReset,
    /// `UR`: the upstream reset the stream.
    UpstreamRemoteReset,
    /// `UC`: the upstream connection closed before the response was complete.
    UpstreamConnectionTermination,
    /// `RL`: rate limited.
    RateLimited,
    /// `UAEX`: denied by an external authorization service.
    UnauthorizedExternalService,
    /// `IH`: a request header was invalid.
    InvalidRequestHeaders,
    /// `SI`: a stream was idle too long.
    StreamIdleTimeout,
    /// `DPE`: the downstream spoke the protocol wrongly.
    DownstreamProtocolError,
    /// `UPE`: the upstream spoke the protocol wrongly.
    UpstreamProtocolError,
    /// `OM`: shed by overload protection.
    OverloadManager,
    /// `DR`: the downstream reset the stream.
    DownstreamRemoteReset,
    /// `DENY` (ztunnel's): refused by an AuthorizationPolicy.
    Deny,
    /// `CONNECT` (ztunnel's): no upstream connection could be made.
    Connect,
}

impl ResponseFlag {
    /// Every flag, in declaration order.
    pub const ALL: [ResponseFlag; 23] = [
        Self::None,
        Self::NoHealthyUpstream,
        Self::UpstreamConnectionFailure,
        Self::UpstreamOverflow,
        Self::NoRouteFound,
        Self::UpstreamRetryLimitExceeded,
        Self::NoClusterFound,
        Self::DurationTimeout,
        Self::DownstreamConnectionTermination,
        Self::UpstreamRequestTimeout,
        Self::LocalReset,
        Self::UpstreamRemoteReset,
        Self::UpstreamConnectionTermination,
        Self::RateLimited,
        Self::UnauthorizedExternalService,
        Self::InvalidRequestHeaders,
        Self::StreamIdleTimeout,
        Self::DownstreamProtocolError,
        Self::UpstreamProtocolError,
        Self::OverloadManager,
        Self::DownstreamRemoteReset,
        Self::Deny,
        Self::Connect,
    ];

    /// The short code, as access logs and the `response_flags` label write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectionFailure => "UF",
            Self::UpstreamOverflow => "UO",
            Self::NoRouteFound => "NR",
            Self::UpstreamRetryLimitExceeded => "URX",
            Self::NoClusterFound => "NC",
            Self::DurationTimeout => "DT",
            Self::DownstreamConnectionTermination => "DC",
            Self::UpstreamRequestTimeout => "UT",
            Self::LocalReset => "LR",
            Self::UpstreamRemoteReset => "UR",
            Self::UpstreamConnectionTermination => "UC",
            Self::RateLimited => "RL",
            Self::UnauthorizedExternalService => "UAEX",
            Self::InvalidRequestHeaders => "IH",
            Self::StreamIdleTimeout => "SI",
            Self::DownstreamProtocolError => "DPE",
            Self::UpstreamProtocolError => "UPE",
            Self::OverloadManager => "OM",
            Self::DownstreamRemoteReset => "DR",
            Self::Deny => "DENY",
            Self::Connect => "CONNECT",
        }
    }

    /// The flag with short code `code`.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == code)
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for flag in ResponseFlag::ALL {
            assert_eq!(ResponseFlag::from_code(flag.as_str()), Some(flag));
        }
        let mut codes: Vec<_> = ResponseFlag::ALL.iter().map(|f| f.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ResponseFlag::ALL.len());
        assert_eq!(ResponseFlag::default().to_string(), "-");
        assert_eq!(ResponseFlag::from_code("XX"), None);
    }
}
