//! Telemetry manifests → `Telemetry`: metric overrides and access-log switches a waypoint acts
//! on; what it cannot act on yet (tracing, tag overrides, CEL filters, custom metrics, other
//! providers) warns that it has no effect, naming the field.

use std::sync::Arc;

use super::policies::{Attachment, Cx};
use crate::error::{Diagnostics, Reason};
use crate::manifest::telemetry::{MetricsOverrideSpec, ProviderRefSpec, TelemetrySpec};
use crate::manifest::{Doc, TelemetryObject};
use crate::policy::PolicyScope;
use crate::telemetry::{RequestMetric, Telemetry, TelemetryOverrides};

/// Compiles every Telemetry, sorted by namespace/name.
pub(crate) fn telemetries(
    docs: &[Doc<TelemetryObject>],
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
        let overrides = overrides(&mut cx, spec);
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

fn overrides(cx: &mut Cx<'_>, spec: &TelemetrySpec) -> TelemetryOverrides {
    let mut out = TelemetryOverrides::default();
    if !spec.tracing.is_empty() {
        no_effect(cx, "spec.tracing".into(), "tracing");
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
        if logging.filter.is_some() {
            no_effect(cx, format!("{field}.filter"), "a CEL filter expression");
        }
        if logging.matching.is_some() {
            no_effect(cx, format!("{field}.match"), "match");
        }
        if logging.disabled.is_some() {
            out.access_log_disabled = logging.disabled;
        }
    }
    out
}

fn metric_override(
    cx: &mut Cx<'_>,
    field: &str,
    o: &MetricsOverrideSpec,
    out: &mut TelemetryOverrides,
) {
    if !o.tag_overrides.is_empty() {
        no_effect(cx, format!("{field}.tagOverrides"), "tagOverrides");
    }
    let selector = o.matching.clone().unwrap_or_default();
    if selector.custom_metric.is_some() {
        no_effect(cx, format!("{field}.match.customMetric"), "customMetric");
        return;
    }
    match selector.mode.as_deref() {
        None | Some("CLIENT_AND_SERVER" | "SERVER") => {}
        Some("CLIENT") => {
            // A waypoint reports as the server side of the request (reporter="waypoint").
            no_effect(
                cx,
                format!("{field}.match.mode"),
                "mode CLIENT at a waypoint",
            );
            return;
        }
        Some(other) => {
            let msg = format!("unknown mode {other:?}: CLIENT_AND_SERVER, CLIENT or SERVER");
            cx.error(format!("{field}.match.mode"), msg);
            return;
        }
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
}
