//! Compiled `Telemetry` resources (telemetry.istio.io/v1), the subset a waypoint acts on:
//! which of Istio's request metrics it records, whether it writes access logs, and how it
//! traces ([`crate::traces`]).

use std::sync::Arc;

use crate::cel::Expression;
use crate::policy::PolicyScope;
use crate::traces::{TracingOverride, TracingSettings};

/// The labels of Istio's request metrics, in the order a waypoint writes them.
pub const STANDARD_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "grpc_response_status",
];

/// One of Istio's request metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestMetric {
    /// `istio_requests_total`.
    Count,
    /// `istio_request_duration_milliseconds`.
    Duration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
}

impl RequestMetric {
    pub const ALL: [RequestMetric; 4] = [
        RequestMetric::Count,
        RequestMetric::Duration,
        RequestMetric::RequestSize,
        RequestMetric::ResponseSize,
    ];
}

/// A metric label's value replaced (`UPSERT`, by a CEL expression) or removed (`REMOVE`:
/// written empty, which Prometheus reads as no label).
#[derive(Clone, Debug, PartialEq)]
pub struct TagOverride {
    pub metric: RequestMetric,
    /// Its index in [`STANDARD_LABELS`].
    pub label: usize,
    /// `None` removes the label.
    pub value: Option<Arc<Expression>>,
}

/// What one Telemetry changes: metrics switched off or on again, their labels, access logs,
/// tracing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetryOverrides {
    /// In order: `(metric, disabled)`.
    pub metrics: Vec<(RequestMetric, bool)>,
    /// In order.
    pub tags: Vec<TagOverride>,
    /// `accessLogging[].disabled`, the last one given.
    pub access_log_disabled: Option<bool>,
    /// When the Telemetry has `accessLogging`: its (last) filter, if any.
    pub access_log_filter: Option<Option<Arc<Expression>>>,
    pub tracing: TracingOverride,
}

/// One Telemetry resource.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub namespace: String,
    pub name: String,
    pub scope: PolicyScope,
    pub overrides: TelemetryOverrides,
}

/// What a waypoint records for a destination: every metric and the access log by default,
/// traces when a provider is named.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    pub request_count: bool,
    pub request_duration: bool,
    pub request_size: bool,
    pub response_size: bool,
    pub access_log: bool,
    /// Only requests it is true of are logged.
    pub access_log_filter: Option<Arc<Expression>>,
    /// At most one per metric and label.
    pub tag_overrides: Vec<TagOverride>,
    pub tracing: Option<Arc<TracingSettings>>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings::DEFAULT
    }
}

impl TelemetrySettings {
    /// With no Telemetry at all.
    pub const DEFAULT: TelemetrySettings = TelemetrySettings {
        request_count: true,
        request_duration: true,
        request_size: true,
        response_size: true,
        access_log: true,
        access_log_filter: None,
        tag_overrides: Vec::new(),
        tracing: None,
    };

    /// Whether `metric` is recorded.
    pub fn records(&self, metric: RequestMetric) -> bool {
        match metric {
            RequestMetric::Count => self.request_count,
            RequestMetric::Duration => self.request_duration,
            RequestMetric::RequestSize => self.request_size,
            RequestMetric::ResponseSize => self.response_size,
        }
    }

    /// These settings with `overrides`' metrics, labels and access-log settings applied over them (a
    /// more specific Telemetry's over a wider one's, as Istio layers root namespace,
    /// namespace, then targeted ones). Tracing layers on its own ([`TracingOverride::then`]).
    pub fn with(mut self, overrides: &TelemetryOverrides) -> Self {
        for (metric, disabled) in &overrides.metrics {
            let on = !disabled;
            match metric {
                RequestMetric::Count => self.request_count = on,
                RequestMetric::Duration => self.request_duration = on,
                RequestMetric::RequestSize => self.request_size = on,
                RequestMetric::ResponseSize => self.response_size = on,
            }
        }
        if let Some(disabled) = overrides.access_log_disabled {
            self.access_log = !disabled;
        }
        if let Some(filter) = &overrides.access_log_filter {
            self.access_log_filter.clone_from(filter);
        }
        for tag in &overrides.tags {
            self.tag_overrides
                .retain(|t| (t.metric, t.label) != (tag.metric, tag.label));
            self.tag_overrides.push(tag.clone());
        }
        self
    }

    /// The tag overrides of `metric`.
    pub fn tags_of(&self, metric: RequestMetric) -> impl Iterator<Item = &TagOverride> {
        self.tag_overrides
            .iter()
            .filter(move |t| t.metric == metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_layer_in_order() {
        let root = TelemetryOverrides {
            metrics: RequestMetric::ALL.iter().map(|m| (*m, true)).collect(),
            access_log_disabled: Some(true),
            ..TelemetryOverrides::default()
        };
        let targeted = TelemetryOverrides {
            metrics: vec![(RequestMetric::Count, false)],
            ..TelemetryOverrides::default()
        };
        let settings = TelemetrySettings::default().with(&root).with(&targeted);
        assert!(settings.records(RequestMetric::Count));
        assert!(!settings.records(RequestMetric::Duration));
        assert!(!settings.access_log);
    }
}
