//! A Service's traffic policy, compiled from the DestinationRule whose `host` it is: how its
//! endpoints are balanced, when a failing one is ejected, and the limits on what is sent to
//! it. Istio's defaults where a field is left out.

use std::time::Duration;

use http::HeaderName;

/// `trafficPolicy` of a DestinationRule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    pub load_balancer: LoadBalancer,
    pub outlier_detection: Option<OutlierDetection>,
    pub connection_pool: ConnectionPool,
}

/// `loadBalancer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LoadBalancer {
    /// The fewer requests in flight, the likelier: the better of two endpoints picked at
    /// random (Envoy's default, and Istio's).
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
    /// The same key, the same endpoint, while the endpoints stay the same; an endpoint added
    /// or removed moves only the keys it gains or loses.
    ConsistentHash(HashKey),
}

/// What a consistent hash is taken of. A request without it goes to a random endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    SourceIp,
    QueryParameter(String),
}

/// `outlierDetection`: an endpoint failing in a row is ejected (skipped) for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 5xx answers (and, unless split, local failures) in a row that eject; 0: never.
    pub consecutive_5xx: u32,
    /// 502, 503, 504 (and, unless split, local failures) in a row that eject; 0: never.
    pub consecutive_gateway: u32,
    /// Local failures (no connection, reset, timeout) counted apart from answers, ejecting
    /// after `consecutive_local_origin` in a row.
    pub split_local_origin: bool,
    pub consecutive_local_origin: u32,
    /// An endpoint's ejection count decays by one each interval it is not ejected.
    pub interval: Duration,
    /// An ejection lasts this long times the endpoint's ejection count.
    pub base_ejection_time: Duration,
    /// At most this share of a Service's endpoints is ejected at once (at least one).
    pub max_ejection_percent: u32,
    /// Below this share of endpoints not ejected, ejections are ignored (0: never).
    pub min_health_percent: u32,
}

impl Default for OutlierDetection {
    /// Istio's defaults for fields left out.
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            split_local_origin: false,
            consecutive_local_origin: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// `connectionPool`: limits on what is sent to the Service, across its endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    /// `http.http2MaxRequests`: requests in flight to the Service; more are answered 503 `UO`.
    pub max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`: a connection serves at most this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`: retries in flight to the Service (besides the retry budget).
    pub max_retries: Option<u32>,
    /// `http.idleTimeout`: an idle pooled connection is closed after this long.
    pub idle_timeout: Option<Duration>,
    /// `tcp.connectTimeout`: the connection (the HBONE tunnel) must be up within this.
    pub connect_timeout: Option<Duration>,
    /// `tcp.maxConnections`: connections open to the Service, across its endpoints.
    pub max_connections: Option<u32>,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection when all
    /// `max_connections` are busy; more are answered 503 `UO`.
    pub max_pending_requests: Option<u32>,
}
