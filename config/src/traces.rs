//! Tracing, as Istio configures it: OpenTelemetry providers in the mesh config
//! (`extensionProviders[].opentelemetry`, `defaultProviders.tracing`), and what Telemetry
//! resources say of tracing (`spec.tracing`: the provider, the sampling percentage, span
//! reporting, custom tags), layered as Istio layers them. Making and exporting spans is the
//! waypoint's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::model::Service;

/// Istio's sampling percentage when nothing sets one (`PILOT_TRACE_SAMPLING`).
pub const DEFAULT_SAMPLING_PERCENT: f64 = 1.0;
/// Envoy's default longest tag value (`max_tag_length`).
pub const DEFAULT_MAX_TAG_LENGTH: usize = 256;
/// How long one export may take when the provider sets no timeout (the OTLP exporters').
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// One `opentelemetry` extension provider: an OTLP collector, a Service of the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingProvider {
    pub name: String,
    pub service: Arc<Service>,
    pub port: u16,
    /// Longer tag values are cut to this many bytes.
    pub max_tag_length: usize,
    pub export: OtlpExport,
}

/// How spans are sent to the collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtlpExport {
    /// OTLP/gRPC (`TraceService/Export`), with this metadata on every call.
    Grpc {
        timeout: Duration,
        metadata: Vec<(HeaderName, HeaderValue)>,
    },
    /// OTLP/HTTP (protobuf) POSTed to `path`, with these headers.
    Http {
        path: String,
        timeout: Duration,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// A tag (span attribute) a Telemetry adds to every span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomTag {
    Literal(String),
    /// The waypoint's environment variable `name`, else `default`.
    Environment {
        name: String,
        default: Option<String>,
    },
    /// The request header `name`, else `default`.
    Header {
        name: HeaderName,
        default: Option<String>,
    },
}

/// What one Telemetry's `tracing` sets; what it leaves out is inherited from wider ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracingOverride {
    /// Provider names, the first one used (Istio uses one tracing provider per proxy).
    pub providers: Option<Vec<String>>,
    pub sampling_percent: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    /// Merged by name over wider ones'.
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Whether spans carry Istio's own tags (`istio.canonical_service`, …).
    pub istio_tags: Option<bool>,
}

impl TracingOverride {
    /// This override layered under `narrower` (a more specific Telemetry's).
    pub fn then(mut self, narrower: &TracingOverride) -> TracingOverride {
        if narrower.providers.is_some() {
            self.providers.clone_from(&narrower.providers);
        }
        self.sampling_percent = narrower.sampling_percent.or(self.sampling_percent);
        self.disable_span_reporting =
            (narrower.disable_span_reporting).or(self.disable_span_reporting);
        self.istio_tags = narrower.istio_tags.or(self.istio_tags);
        for (name, tag) in &narrower.custom_tags {
            self.custom_tags.insert(name.clone(), tag.clone());
        }
        self
    }

    /// What a waypoint does with these layers: trace with the first provider named here, or
    /// else the mesh config's default; `None` (no tracing, trace headers passed through as
    /// they came) when neither names one.
    pub fn resolve(
        &self,
        providers: &BTreeMap<String, Arc<TracingProvider>>,
        defaults: &[String],
    ) -> Option<Arc<TracingSettings>> {
        let named = self.providers.as_deref().unwrap_or(defaults);
        let provider = named.iter().find_map(|name| providers.get(name))?;
        Some(Arc::new(TracingSettings {
            provider: provider.clone(),
            sampling_percent: self.sampling_percent.unwrap_or(DEFAULT_SAMPLING_PERCENT),
            report_spans: !self.disable_span_reporting.unwrap_or(false),
            istio_tags: self.istio_tags.unwrap_or(true),
            custom_tags: (self.custom_tags.iter())
                .map(|(name, tag)| (name.clone(), tag.clone()))
                .collect(),
        }))
    }
}

/// How a waypoint traces the requests to one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    pub provider: Arc<TracingProvider>,
    /// Of requests that arrive without a sampling decision, the share traced (0–100).
    pub sampling_percent: f64,
    /// `false` (`disableSpanReporting`): spans are made and propagated, never exported.
    pub report_spans: bool,
    pub istio_tags: bool,
    pub custom_tags: Vec<(String, CustomTag)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> Arc<TracingProvider> {
        Arc::new(TracingProvider {
            name: name.into(),
            service: crate::fixtures::compiled_service("istio-system", "collector"),
            port: 4317,
            max_tag_length: DEFAULT_MAX_TAG_LENGTH,
            export: OtlpExport::Grpc {
                timeout: DEFAULT_EXPORT_TIMEOUT,
                metadata: Vec::new(),
            },
        })
    }

    #[test]
    fn narrower_layers_win_field_by_field_and_tags_merge() {
        let root = TracingOverride {
            providers: Some(vec!["otel".into()]),
            sampling_percent: Some(10.0),
            custom_tags: BTreeMap::from([
                ("team".into(), CustomTag::Literal("a".into())),
                ("zone".into(), CustomTag::Literal("z1".into())),
            ]),
            ..TracingOverride::default()
        };
        let service = TracingOverride {
            disable_span_reporting: Some(true),
            custom_tags: BTreeMap::from([("team".into(), CustomTag::Literal("b".into()))]),
            ..TracingOverride::default()
        };
        let layered = TracingOverride::default().then(&root).then(&service);
        let providers = BTreeMap::from([("otel".to_string(), provider("otel"))]);
        let settings = layered.resolve(&providers, &[]).expect("traced");
        assert_eq!(settings.provider.name, "otel");
        assert_eq!(settings.sampling_percent, 10.0);
        assert!(!settings.report_spans);
        assert_eq!(
            settings.custom_tags,
            [
                ("team".to_string(), CustomTag::Literal("b".into())),
                ("zone".to_string(), CustomTag::Literal("z1".into()))
            ]
        );
    }

    #[test]
    fn without_a_provider_nothing_is_traced_and_defaults_fill_in() {
        let providers = BTreeMap::from([("otel".to_string(), provider("otel"))]);
        let none = TracingOverride::default();
        assert!(none.resolve(&providers, &[]).is_none());
        let by_default = none.resolve(&providers, &["otel".into()]).expect("default");
        assert_eq!(by_default.sampling_percent, DEFAULT_SAMPLING_PERCENT);
        assert!(by_default.report_spans && by_default.istio_tags);
        let unknown = TracingOverride {
            providers: Some(vec!["zipkin".into()]),
            ..TracingOverride::default()
        };
        assert!(unknown.resolve(&providers, &["otel".into()]).is_none());
    }
}
