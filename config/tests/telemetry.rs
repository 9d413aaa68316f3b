//! Telemetry: which request metrics and access logs a waypoint keeps, layered root namespace →
//! namespace → targetRefs, and what it cannot act on said to have no effect.

mod common;

use common::*;
use mesh_config::ObjectRef;
use mesh_config::telemetry::{RequestMetric, STANDARD_LABELS, TelemetrySettings};
use serde_json::{Value, json};

fn telemetry(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn mesh(extra: Vec<Value>) -> Vec<Value> {
    let mut objs = waypoint_and_two_services();
    objs.extend(extra);
    objs
}

fn metric(name: &str, disabled: bool) -> Value {
    json!({"match": {"metric": name}, "disabled": disabled})
}

#[test]
fn settings_layer_root_then_namespace_then_targets() {
    let snap = must_compile(&mesh(vec![
        telemetry(
            "istio-system",
            "mesh-default",
            json!({
            "metrics": [{"providers": [{"name": "prometheus"}], "overrides": [metric("ALL_METRICS", true)]}],
            "accessLogging": [{"disabled": true}]}),
        ),
        telemetry(
            "default",
            "namespace",
            json!({
            "metrics": [{"overrides": [metric("REQUEST_COUNT", false)]}]}),
        ),
        telemetry(
            "default",
            "for-web",
            json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "metrics": [{"overrides": [{"match": {"metric": "REQUEST_DURATION", "mode": "SERVER"}, "disabled": false}]}],
            "accessLogging": [{"providers": [{"name": "envoy"}], "disabled": false}]}),
        ),
        telemetry(
            "other",
            "elsewhere",
            json!({
            "metrics": [{"overrides": [metric("REQUEST_COUNT", true)]}]}),
        ),
    ]));
    assert!(snap.warnings().is_empty(), "{:?}", snap.warnings());
    let wp = ObjectRef::new("default", "wp");
    let web = snap.service("default", "web").expect("web");
    let db = snap.service("default", "db").expect("db");
    let on = |s: &TelemetrySettings| -> Vec<RequestMetric> {
        RequestMetric::ALL
            .into_iter()
            .filter(|m| s.records(*m))
            .collect()
    };
    let for_web = snap.waypoint_telemetry(&wp, Some(web));
    assert_eq!(on(for_web), [RequestMetric::Count, RequestMetric::Duration]);
    assert!(for_web.access_log);
    let for_db = snap.waypoint_telemetry(&wp, Some(db));
    assert_eq!(on(for_db), [RequestMetric::Count]);
    assert!(!for_db.access_log);
    assert_eq!(snap.waypoint_telemetry(&wp, None), for_db);
    // Without any Telemetry, everything is on.
    let plain = must_compile(&mesh(Vec::new()));
    assert_eq!(
        plain.waypoint_telemetry(&wp, Some(web)),
        &TelemetrySettings::default()
    );
}

#[test]
fn what_a_waypoint_cannot_act_on_warns_and_bad_values_are_refused() {
    let snap = must_compile(&mesh(vec![telemetry(
        "default",
        "t",
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "tracing": [{"providers": [{"name": "zipkin"}], "useRequestIdForTraceSampling": true}],
            "metrics": [{"providers": [{"name": "stackdriver"}], "reportingInterval": "10s", "overrides": [
                {"match": {"metric": "REQUEST_COUNT"}, "tagOverrides": {"x": {"operation": "REMOVE"}}},
                {"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"}, "disabled": true},
                {"match": {"customMetric": "mine"}, "disabled": true},
                {"match": {"metric": "TCP_SENT_BYTES"}, "disabled": true}]}],
            "accessLogging": [{"filter": {"expression": "response.code >= 400"}, "match": {"mode": "CLIENT"}}]
        }),
    )]));
    let fields: Vec<&str> = (snap.warnings().iter())
        .filter(|w| w.message.contains("no effect"))
        .map(|w| w.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.selector",
            "spec.tracing[0].providers[0]",
            "spec.tracing[0].useRequestIdForTraceSampling",
            "spec.metrics[0].providers[0]",
            "spec.metrics[0].reportingInterval",
            "spec.metrics[0].overrides[0].tagOverrides[x]",
            "spec.metrics[0].overrides[1].match.mode",
            "spec.metrics[0].overrides[2].match.customMetric",
            "spec.metrics[0].overrides[3].match.metric",
            "spec.accessLogging[0].match.mode",
        ]
    );
    for (spec, field, why) in [
        (
            json!({"metrics": [{"overrides": [metric("REQUEST_COUNTS", true)]}]}),
            "match.metric",
            "unknown metric",
        ),
        (
            json!({"metrics": [{"overrides": [{"match": {"mode": "BOTH"}}]}]}),
            "match.mode",
            "unknown mode",
        ),
        (json!({"metric": []}), "spec", "metric"),
        (
            json!({"accessLogging": [{"filter": {"expression": "response.code >="}}]}),
            "spec.accessLogging[0].filter.expression",
            "not a CEL expression",
        ),
        (
            json!({"accessLogging": [{"filter": {"expression": "xds.cluster_name == 'x'"}}]}),
            "spec.accessLogging[0].filter.expression",
            "xds.* is not available",
        ),
        (
            json!({"metrics": [{"overrides": [{"tagOverrides": {"source_app": {"operation": "SET"}}}]}]}),
            "tagOverrides[source_app].operation",
            "unknown operation",
        ),
        (
            json!({"metrics": [{"overrides": [{"tagOverrides": {"source_app": {}}}]}]}),
            "tagOverrides[source_app].value",
            "required for UPSERT",
        ),
        (
            json!({"metrics": [{"overrides": [{"tagOverrides": {"source_app": {"value": "request.host +"}}}]}]}),
            "tagOverrides[source_app].value",
            "not a CEL expression",
        ),
        (
            json!({"metrics": [{"overrides": [{"tagOverrides": {"reporter": {"operation": "REMOVE"}}}]}]}),
            "tagOverrides[reporter]",
            "not overridden",
        ),
    ] {
        let errors = must_fail(&mesh(vec![telemetry("default", "bad", spec)]));
        assert_error(&errors, &["Telemetry default/bad", field, why]);
    }
}

#[test]
fn access_log_filters_and_tag_overrides_layer_by_specificity() {
    let snap = must_compile(&mesh(vec![
        telemetry(
            "istio-system",
            "mesh-default",
            json!({
            "metrics": [{"overrides": [
                {"match": {"metric": "ALL_METRICS"}, "tagOverrides": {
                    "source_app": {"value": "request.headers['x-app']"},
                    "destination_version": {"operation": "REMOVE"}}}]}],
            "accessLogging": [{"filter": {"expression": "response.code >= 400"}}]}),
        ),
        telemetry(
            "default",
            "for-web",
            json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "metrics": [{"overrides": [
                {"match": {"metric": "REQUEST_COUNT"}, "tagOverrides": {
                    "source_app": {"operation": "UPSERT", "value": "'web-caller'"}}}]}],
            "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
    ]));
    assert!(snap.warnings().is_empty(), "{:?}", snap.warnings());
    let wp = ObjectRef::new("default", "wp");
    let web = snap.service("default", "web").expect("web");
    let db = snap.service("default", "db").expect("db");
    let label = |name: &str| {
        STANDARD_LABELS
            .iter()
            .position(|l| *l == name)
            .expect("label")
    };
    let source = |s: &TelemetrySettings, metric| -> Vec<Option<String>> {
        s.tags_of(metric)
            .filter(|t| t.label == label("source_app"))
            .map(|t| t.value.as_ref().map(|v| v.source().to_string()))
            .collect()
    };

    let for_db = snap.waypoint_telemetry(&wp, Some(db));
    let filter = for_db.access_log_filter.as_ref().expect("the root filter");
    assert_eq!(filter.source(), "response.code >= 400");
    assert_eq!(
        source(for_db, RequestMetric::Count),
        [Some("request.headers['x-app']".to_string())]
    );
    let removed = for_db.tags_of(RequestMetric::Duration);
    assert!(
        removed
            .into_iter()
            .any(|t| t.label == label("destination_version") && t.value.is_none())
    );

    // The Service's Telemetry: its accessLogging (no filter) replaces the root's; its tag
    // replaces the root's for REQUEST_COUNT only.
    let for_web = snap.waypoint_telemetry(&wp, Some(web));
    assert!(for_web.access_log_filter.is_none());
    assert_eq!(
        source(for_web, RequestMetric::Count),
        [Some("'web-caller'".to_string())]
    );
    assert_eq!(
        source(for_web, RequestMetric::Duration),
        [Some("request.headers['x-app']".to_string())]
    );
}
