//! Compiled `Telemetry` resources (telemetry.istio.io/v1), the subset a waypoint acts on:
//! which of Istio's request metrics it records, whether it writes access logs, and how it
//! traces ([`crate::traces`]).

use std::sync::Arc;

use crate::policy::PolicyScope;
use crate::traces::{TracingOverride, TracingSettings};

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

/// What one Telemetry changes: metrics switched off or on again, access logs, tracing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetryOverrides {
    /// In order: `(metric, disabled)`.
    pub metrics: Vec<(RequestMetric, bool)>,
    /// `accessLogging[].disabled`, the last one given.
    pub access_log_disabled: Option<bool>,
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

    /// These settings with `overrides`' metrics and access-log switches applied over them (a
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
        self
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
