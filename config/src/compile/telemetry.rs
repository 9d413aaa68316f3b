//! Telemetry manifests → `Telemetry`: metric overrides and tag overrides, access-log switches
//! and CEL filters, and tracing, as a waypoint acts on them; what it cannot act on (custom
//! metrics, new metric labels, other providers) warns that it has no effect, naming the
//! field.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;

use super::policies::{Attachment, Cx};
use crate::cel::Expression;
use crate::error::{Diagnostics, Reason};
use crate::manifest::telemetry::{
    CustomTagSpec, MetricsOverrideSpec, ProviderRefSpec, TelemetrySpec, TracingSpec,
};
use crate::manifest::{Doc, TelemetryObject};
use crate::policy::PolicyScope;
use crate::telemetry::{
    RequestMetric, STANDARD_LABELS, TagOverride, Telemetry, TelemetryOverrides,
};
use crate::traces::{CustomTag, TracingOverride, TracingProvider};

/// Compiles every Telemetry, sorted by namespace/name; `tracers` are the mesh config's
/// OpenTelemetry providers a `tracing` entry may name.
pub(crate) fn telemetries(
    docs: &[Doc<TelemetryObject>],
    tracers: &BTreeMap<String, Arc<TracingProvider>>,
    diag: &mut Diagnostics,
) -> Vec<Arc<Telemetry>> {
    let mut out = Vec::new();
    for doc in docs {
        let mut cx = Cx::new(&doc.origin, diag);
        let spec = &doc.obj.spec;
        let attachment = Attachment::of(&spec.selector, &spec.target_ref, &spec.target_refs);
        let scope = cx.scope(&doc.namespace, &attachment);
        if matches!(scope, PolicyScope::Selector(_)) {
            let what = "a selector (a waypoint reads the root namespace's, its namespace's and \
                        targetRefs Telemetry)";
            no_effect(&mut cx, "spec.selector".into(), what);
        }
        let overrides = overrides(&mut cx, spec, tracers);
        if !cx.failed {
            out.push(Arc::new(Telemetry {
                namespace: doc.namespace.clone(),
                name: doc.name.clone(),
                scope,
                overrides,
            }));
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn no_effect(cx: &mut Cx<'_>, field: String, what: &str) {
    let msg = format!("{what}: not supported yet, it has no effect");
    (cx.diag).warn_because(Reason::NoEffect, cx.origin, field, msg);
}

/// Providers other than the defaults (`prometheus` for metrics, `envoy` for access logs)
/// name sinks this mesh does not have.
fn providers(cx: &mut Cx<'_>, field: &str, list: &[ProviderRefSpec], default: &str) {
    for (i, provider) in list.iter().enumerate() {
        if provider.name != default {
            let what = format!("provider {:?} (only {default:?} is)", provider.name);
            no_effect(cx, format!("{field}.providers[{i}]"), &what);
        }
    }
}

fn overrides(
    cx: &mut Cx<'_>,
    spec: &TelemetrySpec,
    tracers: &BTreeMap<String, Arc<TracingProvider>>,
) -> TelemetryOverrides {
    let mut out = TelemetryOverrides::default();
    for (i, tracing) in spec.tracing.iter().enumerate() {
        let field = format!("spec.tracing[{i}]");
        if let Some(layer) = tracing_override(cx, &field, tracing, tracers) {
            out.tracing = std::mem::take(&mut out.tracing).then(&layer);
        }
    }
    for (i, metrics) in spec.metrics.iter().enumerate() {
        let field = format!("spec.metrics[{i}]");
        providers(cx, &field, &metrics.providers, "prometheus");
        if metrics.reporting_interval.is_some() {
            let what = "reportingInterval (metrics are scraped from /metrics)";
            no_effect(cx, format!("{field}.reportingInterval"), what);
        }
        for (j, o) in metrics.overrides.iter().enumerate() {
            metric_override(cx, &format!("{field}.overrides[{j}]"), o, &mut out);
        }
    }
    for (i, logging) in spec.access_logging.iter().enumerate() {
        let field = format!("spec.accessLogging[{i}]");
        providers(cx, &field, &logging.providers, "envoy");
        let mode = logging.matching.as_ref().and_then(|m| m.mode.as_deref());
        if !applies_at_waypoint(cx, &field, mode) {
            continue;
        }
        let filter = logging.filter.as_ref().and_then(|f| {
            let parsed = Expression::parse(&f.expression);
            parsed
                .map_err(|e| cx.error(format!("{field}.filter.expression"), e))
                .ok()
        });
        out.access_log_filter = Some(filter.map(Arc::new));
        if logging.disabled.is_some() {
            out.access_log_disabled = logging.disabled;
        }
    }
    out
}

/// Whether an entry with `match.mode` `mode` applies at a waypoint, the server side of the
/// request (`reporter="waypoint"`): CLIENT warns that it has no effect, an unknown mode is
/// refused.
fn applies_at_waypoint(cx: &mut Cx<'_>, field: &str, mode: Option<&str>) -> bool {
    match mode {
        None | Some("CLIENT_AND_SERVER" | "SERVER") => true,
        Some("CLIENT") => {
            no_effect(
                cx,
                format!("{field}.match.mode"),
                "mode CLIENT at a waypoint",
            );
            false
        }
        Some(other) => {
            let msg = format!("unknown mode {other:?}: CLIENT_AND_SERVER, CLIENT or SERVER");
            cx.error(format!("{field}.match.mode"), msg);
            false
        }
    }
}

/// One `tracing` entry; `None` when it does not apply at a waypoint (mode CLIENT).
fn tracing_override(
    cx: &mut Cx<'_>,
    field: &str,
    spec: &TracingSpec,
    tracers: &BTreeMap<String, Arc<TracingProvider>>,
) -> Option<TracingOverride> {
    let mode = spec.matching.as_ref().and_then(|m| m.mode.as_deref());
    if !applies_at_waypoint(cx, field, mode) {
        return None;
    }
    for (i, provider) in spec.providers.iter().enumerate() {
        if !tracers.contains_key(&provider.name) {
            let what = format!(
                "provider {:?} (not an opentelemetry provider of the mesh config)",
                provider.name
            );
            no_effect(cx, format!("{field}.providers[{i}]"), &what);
        }
    }
    if spec.use_request_id_for_trace_sampling.is_some() {
        let what = "useRequestIdForTraceSampling (sampling is decided on the trace id)";
        no_effect(cx, format!("{field}.useRequestIdForTraceSampling"), what);
    }
    let sampling = spec.random_sampling_percentage;
    if let Some(percent) = sampling.filter(|p| !(0.0..=100.0).contains(p)) {
        let msg = format!("{percent} is not a percentage (0 to 100)");
        cx.error(format!("{field}.randomSamplingPercentage"), msg);
    }
    let mut custom_tags = BTreeMap::new();
    for (name, tag) in &spec.custom_tags {
        let at = format!("{field}.customTags[{name}]");
        if let Some(tag) = custom_tag(cx, &at, tag) {
            custom_tags.insert(name.clone(), tag);
        }
    }
    Some(TracingOverride {
        providers: (!spec.providers.is_empty())
            .then(|| spec.providers.iter().map(|p| p.name.clone()).collect()),
        sampling_percent: sampling,
        disable_span_reporting: spec.disable_span_reporting,
        custom_tags,
        istio_tags: spec.enable_istio_tags,
    })
}

fn custom_tag(cx: &mut Cx<'_>, field: &str, spec: &CustomTagSpec) -> Option<CustomTag> {
    match (&spec.literal, &spec.environment, &spec.header) {
        (Some(literal), None, None) => Some(CustomTag::Literal(literal.value.clone())),
        (None, Some(env), None) => Some(CustomTag::Environment {
            name: env.name.clone(),
            default: env.default_value.clone(),
        }),
        (None, None, Some(header)) => {
            match HeaderName::from_bytes(header.name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => Some(CustomTag::Header {
                    name,
                    default: header.default_value.clone(),
                }),
                Err(_) => {
                    let msg = format!("{:?} is not a header name", header.name);
                    cx.error(format!("{field}.header.name"), msg);
                    None
                }
            }
        }
        _ => {
            cx.error(field.to_string(), "one of literal, environment or header");
            None
        }
    }
}

fn metric_override(
    cx: &mut Cx<'_>,
    field: &str,
    o: &MetricsOverrideSpec,
    out: &mut TelemetryOverrides,
) {
    let selector = o.matching.clone().unwrap_or_default();
    if selector.custom_metric.is_some() {
        no_effect(cx, format!("{field}.match.customMetric"), "customMetric");
        return;
    }
    if !applies_at_waypoint(cx, field, selector.mode.as_deref()) {
        return;
    }
    let metrics: &[RequestMetric] = match selector.metric.as_deref() {
        None | Some("ALL_METRICS") => &RequestMetric::ALL,
        Some("REQUEST_COUNT") => &[RequestMetric::Count],
        Some("REQUEST_DURATION") => &[RequestMetric::Duration],
        Some("REQUEST_SIZE") => &[RequestMetric::RequestSize],
        Some("RESPONSE_SIZE") => &[RequestMetric::ResponseSize],
        Some(
            tcp @ ("TCP_OPENED_CONNECTIONS"
            | "TCP_CLOSED_CONNECTIONS"
            | "TCP_SENT_BYTES"
            | "TCP_RECEIVED_BYTES"
            | "GRPC_REQUEST_MESSAGES"
            | "GRPC_RESPONSE_MESSAGES"),
        ) => {
            no_effect(
                cx,
                format!("{field}.match.metric"),
                &format!("{tcp} at a waypoint"),
            );
            return;
        }
        Some(other) => {
            let msg = format!("unknown metric {other:?}");
            cx.error(format!("{field}.match.metric"), msg);
            return;
        }
    };
    if let Some(disabled) = o.disabled {
        out.metrics.extend(metrics.iter().map(|m| (*m, disabled)));
    }
    for (name, spec) in &o.tag_overrides {
        let at = format!("{field}.tagOverrides[{name}]");
        let Some(label) = STANDARD_LABELS.iter().position(|l| l == name) else {
            let what = format!(
                "a new label {name:?} (a waypoint's metrics have Istio's standard labels; \
                 their values can be replaced or removed)"
            );
            no_effect(cx, at, &what);
            continue;
        };
        if name == "reporter" {
            cx.error(at, "reporter is the waypoint's own, it is not overridden");
            continue;
        }
        let value = match (spec.operation.as_deref(), spec.value.as_deref()) {
            (None | Some("UPSERT"), Some(value)) => match Expression::parse(value) {
                Ok(expression) => Some(Arc::new(expression)),
                Err(e) => {
                    cx.error(format!("{at}.value"), e);
                    continue;
                }
            },
            (None | Some("UPSERT"), None) => {
                cx.error(format!("{at}.value"), "required for UPSERT");
                continue;
            }
            (Some("REMOVE"), _) => None,
            (Some(other), _) => {
                let msg = format!("unknown operation {other:?}: UPSERT or REMOVE");
                cx.error(format!("{at}.operation"), msg);
                continue;
            }
        };
        out.tags.extend(metrics.iter().map(|metric| TagOverride {
            metric: *metric,
            label,
            value: value.clone(),
        }));
    }
}
