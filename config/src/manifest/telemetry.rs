//! Hand-written serde types for Istio's `telemetry.istio.io` `Telemetry`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::authz::{TargetRefSpec, WorkloadSelector};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TelemetrySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<TargetRefSpec>,
    #[serde(default)]
    pub target_refs: Option<Vec<TargetRefSpec>>,
    #[serde(default)]
    pub tracing: Vec<TracingSpec>,
    #[serde(default)]
    pub metrics: Vec<MetricsSpec>,
    #[serde(default)]
    pub access_logging: Vec<AccessLoggingSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderRefSpec {
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricsSpec {
    #[serde(default)]
    pub providers: Vec<ProviderRefSpec>,
    #[serde(default)]
    pub overrides: Vec<MetricsOverrideSpec>,
    #[serde(default)]
    pub reporting_interval: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricsOverrideSpec {
    #[serde(default, rename = "match")]
    pub matching: Option<MetricSelectorSpec>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverrideSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagOverrideSpec {
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricSelectorSpec {
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AccessLoggingSpec {
    #[serde(default)]
    pub providers: Vec<ProviderRefSpec>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub filter: Option<FilterSpec>,
    #[serde(default, rename = "match")]
    pub matching: Option<ModeSelectorSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterSpec {
    pub expression: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TracingSpec {
    #[serde(default, rename = "match")]
    pub matching: Option<ModeSelectorSpec>,
    #[serde(default)]
    pub providers: Vec<ProviderRefSpec>,
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTagSpec>,
    #[serde(default)]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default)]
    pub enable_istio_tags: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModeSelectorSpec {
    #[serde(default)]
    pub mode: Option<String>,
}

/// One of `literal`, `environment`, `header`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomTagSpec {
    #[serde(default)]
    pub literal: Option<LiteralTagSpec>,
    #[serde(default)]
    pub environment: Option<NamedTagSpec>,
    #[serde(default)]
    pub header: Option<NamedTagSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiteralTagSpec {
    pub value: String,
}

/// An environment variable's or a header's value, with a default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NamedTagSpec {
    pub name: String,
    #[serde(default)]
    pub default_value: Option<String>,
}
