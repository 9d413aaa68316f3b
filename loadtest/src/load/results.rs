//! fortio's `HTTPRunnerResults` JSON document: the same field names, order and JSON types,
//! so fortio's and Istio's report tools read our runs. Durations are integer nanoseconds,
//! latencies float seconds, `RequestedQPS` a string, `RetCodes` a map of strings to counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::histogram::HistogramData;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRunnerResults {
    // --- fortio periodic.RunnerResults ---
    #[serde(rename = "RunType")]
    pub run_type: String,
    #[serde(rename = "Labels")]
    pub labels: String,
    /// RFC 3339 with nanoseconds.
    #[serde(rename = "StartTime")]
    pub start_time: String,
    /// `"max"` or the rate, as a string.
    #[serde(rename = "RequestedQPS")]
    pub requested_qps: String,
    #[serde(rename = "RequestedDuration")]
    pub requested_duration: String,
    #[serde(rename = "ActualQPS")]
    pub actual_qps: f64,
    /// Nanoseconds.
    #[serde(rename = "ActualDuration")]
    pub actual_duration: i64,
    #[serde(rename = "NumThreads")]
    pub num_threads: usize,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "DurationHistogram")]
    pub duration_histogram: HistogramData,
    #[serde(rename = "ErrorsDurationHistogram")]
    pub errors_duration_histogram: HistogramData,
    #[serde(rename = "Exactly")]
    pub exactly: u64,
    #[serde(rename = "Jitter")]
    pub jitter: bool,
    #[serde(rename = "Uniform")]
    pub uniform: bool,
    #[serde(rename = "NoCatchUp")]
    pub no_catch_up: bool,
    #[serde(rename = "RunID")]
    pub run_id: i64,
    #[serde(rename = "AccessLoggerInfo")]
    pub access_logger_info: String,
    #[serde(rename = "ID")]
    pub id: String,
    // --- fhttp.HTTPRunnerResults ---
    #[serde(rename = "RetCodes")]
    pub ret_codes: BTreeMap<String, u64>,
    #[serde(rename = "IPCountMap")]
    pub ip_count_map: BTreeMap<String, u64>,
    #[serde(flatten)]
    pub options: HttpOptions,
    #[serde(rename = "Sizes")]
    pub sizes: HistogramData,
    #[serde(rename = "HeaderSizes")]
    pub header_sizes: HistogramData,
    #[serde(rename = "Sockets")]
    pub sockets: Vec<u64>,
    #[serde(rename = "SocketCount")]
    pub socket_count: u64,
    #[serde(rename = "ConnectionStats")]
    pub connection_stats: HistogramData,
    #[serde(rename = "AbortOn")]
    pub abort_on: i64,
}

/// fortio's `fhttp.HTTPOptions` (embedded, so its fields sit at the top level).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpOptions {
    #[serde(rename = "Insecure")]
    pub insecure: bool,
    #[serde(rename = "MTLS")]
    pub mtls: bool,
    #[serde(rename = "CACert")]
    pub ca_cert: String,
    #[serde(rename = "Cert")]
    pub cert: String,
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "UnixDomainSocket")]
    pub unix_domain_socket: String,
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "NumConnections")]
    pub num_connections: u64,
    #[serde(rename = "Compression")]
    pub compression: bool,
    #[serde(rename = "DisableFastClient")]
    pub disable_fast_client: bool,
    #[serde(rename = "HTTP10")]
    pub http10: bool,
    #[serde(rename = "H2")]
    pub h2: bool,
    #[serde(rename = "DisableKeepAlive")]
    pub disable_keep_alive: bool,
    #[serde(rename = "AllowHalfClose")]
    pub allow_half_close: bool,
    #[serde(rename = "FollowRedirects")]
    pub follow_redirects: bool,
    #[serde(rename = "Resolve")]
    pub resolve: String,
    /// Nanoseconds.
    #[serde(rename = "HTTPReqTimeOut")]
    pub http_req_timeout: i64,
    #[serde(rename = "UserCredentials")]
    pub user_credentials: String,
    #[serde(rename = "ContentType")]
    pub content_type: String,
    /// Base64 of the request body (Go's `[]byte`), `null` without one.
    #[serde(rename = "Payload")]
    pub payload: Option<String>,
    #[serde(rename = "MethodOverride")]
    pub method_override: String,
    #[serde(rename = "LogErrors")]
    pub log_errors: bool,
    #[serde(rename = "SequentialWarmup")]
    pub sequential_warmup: bool,
    #[serde(rename = "ConnReuseRange")]
    pub conn_reuse_range: [i64; 2],
    #[serde(rename = "NoResolveEachConn")]
    pub no_resolve_each_conn: bool,
    /// Nanoseconds.
    #[serde(rename = "Offset")]
    pub offset: i64,
    #[serde(rename = "Resolution")]
    pub resolution: f64,
}
