//! What the waypoint reports about each request: Istio-compatible metrics, one access-log
//! line and a span, all from the request's context (and so from the snapshot it was decided
//! with).

pub mod access_log;
pub mod attributes;
pub mod metrics;
pub mod report;
pub mod trace;

pub use metrics::{BodySizes, Metrics, RequestLabels};
