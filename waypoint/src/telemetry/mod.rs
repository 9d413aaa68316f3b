//! What the waypoint reports about each request: Istio-compatible metrics and one access-log
//! line, both from the request's context (and so from the snapshot it was decided with).

pub mod access_log;
pub mod metrics;

pub use metrics::{BodySizes, Metrics, RequestLabels};
