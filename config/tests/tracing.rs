//! Tracing: OpenTelemetry providers of the mesh config, the default provider, and Telemetry's
//! `tracing` layered root namespace → namespace → targetRefs; what is invalid refused with
//! its field, what has no effect said so.

mod common;

use std::time::Duration;

use common::*;
use mesh_config::ObjectRef;
use mesh_config::traces::{CustomTag, OtlpExport};
use serde_json::{Value, json};

fn config_map(mesh: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"}, "data": {"mesh": mesh}})
}

fn telemetry(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// The waypoint, web and db, a collector Service, and `extra`.
fn mesh(mesh_config: &str, extra: Vec<Value>) -> Vec<Value> {
    let mut objs = waypoint_and_two_services();
    let mut collector = service(
        "observability",
        "otel",
        "127.0.100.9",
        json!({"app": "otel"}),
    );
    collector["spec"]["ports"] = json!([{"name": "grpc", "port": 4317, "targetPort": 4317},
                                        {"name": "http", "port": 4318, "targetPort": 4318}]);
    objs.push(collector);
    objs.push(config_map(mesh_config));
    objs.extend(extra);
    objs
}

const PROVIDERS: &str = r#"
extensionProviders:
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
- name: otel-http
  opentelemetry:
    service: observability/otel.observability.svc.cluster.local
    port: 4318
    maxTagLength: 64
    http:
      timeout: 2s
      headers: [{name: X-Tenant, value: team-a}]
"#;

#[test]
fn providers_compile_and_telemetry_layers_per_destination() {
    let snap = must_compile(&mesh(
        PROVIDERS,
        vec![
            telemetry(
                "istio-system",
                "mesh-default",
                json!({"tracing": [{"providers": [{"name": "otel"}],
                    "randomSamplingPercentage": 20,
                    "customTags": {"cluster": {"literal": {"value": "east"}},
                                   "pod": {"environment": {"name": "POD_NAME", "defaultValue": "-"}}}}]}),
            ),
            telemetry(
                "default",
                "for-db",
                json!({"targetRefs": [{"group": "", "kind": "Service", "name": "db"}],
                    "tracing": [{"providers": [{"name": "otel-http"}],
                        "disableSpanReporting": false,
                        "enableIstioTags": false,
                        "customTags": {"cluster": {"header": {"name": "X-Cluster"}}}}]}),
            ),
        ],
    ));
    assert!(snap.warnings().is_empty(), "{:?}", snap.warnings());
    let wp = ObjectRef::new("default", "wp");
    let web = snap.service("default", "web").expect("web");
    let db = snap.service("default", "db").expect("db");

    let for_web = (snap.waypoint_telemetry(&wp, Some(web)).tracing.clone()).expect("traced");
    assert_eq!(for_web.provider.name, "otel");
    assert_eq!(for_web.provider.port, 4317);
    assert_eq!(for_web.provider.max_tag_length, 256);
    assert_eq!(
        for_web.provider.export,
        OtlpExport::Grpc {
            timeout: Duration::from_secs(10),
            metadata: Vec::new()
        }
    );
    assert_eq!(for_web.sampling_percent, 20.0);
    assert!(for_web.report_spans && for_web.istio_tags);
    assert_eq!(for_web.custom_tags.len(), 2);

    let for_db = (snap.waypoint_telemetry(&wp, Some(db)).tracing.clone()).expect("traced");
    assert_eq!(for_db.provider.name, "otel-http");
    assert_eq!(for_db.provider.max_tag_length, 64);
    let OtlpExport::Http {
        path,
        timeout,
        headers,
    } = &for_db.provider.export
    else {
        panic!("OTLP/HTTP");
    };
    assert_eq!(
        (path.as_str(), *timeout),
        ("/v1/traces", Duration::from_secs(2))
    );
    assert_eq!(headers[0].0.as_str(), "x-tenant");
    // Inherited from the root namespace: the sampling, and the tag not overridden.
    assert_eq!(for_db.sampling_percent, 20.0);
    assert!(!for_db.istio_tags);
    let tags: Vec<(&str, &CustomTag)> = (for_db.custom_tags.iter())
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    assert!(
        matches!(tags[0], ("cluster", CustomTag::Header { name, default: None }) if name == "x-cluster")
    );
    assert!(matches!(tags[1], ("pod", CustomTag::Environment { name, .. }) if name == "POD_NAME"));

    let mut names: Vec<String> = (snap.waypoint_tracing_providers(&wp).iter())
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["otel", "otel-http"]);
}

#[test]
fn no_provider_means_no_tracing_and_the_default_provider_fills_in() {
    let wp = ObjectRef::new("default", "wp");
    let untraced = must_compile(&mesh(
        PROVIDERS,
        vec![telemetry(
            "default",
            "sampling-only",
            json!({"tracing": [{"randomSamplingPercentage": 100}]}),
        )],
    ));
    assert!(untraced.waypoint_telemetry(&wp, None).tracing.is_none());
    assert!(untraced.waypoint_tracing_providers(&wp).is_empty());

    let with_default = format!("{PROVIDERS}defaultProviders: {{tracing: [otel]}}\n");
    let snap = must_compile(&mesh(
        &with_default,
        vec![telemetry(
            "default",
            "sampling-only",
            json!({"tracing": [{"randomSamplingPercentage": 100}]}),
        )],
    ));
    let tracing = (snap.waypoint_telemetry(&wp, None).tracing.clone()).expect("traced");
    assert_eq!(
        (tracing.provider.name.as_str(), tracing.sampling_percent),
        ("otel", 100.0)
    );

    // Span reporting switched off: propagated, but nothing is exported anywhere.
    let silent = must_compile(&mesh(
        &with_default,
        vec![telemetry(
            "default",
            "silent",
            json!({"tracing": [{"disableSpanReporting": true}]}),
        )],
    ));
    let tracing = (silent.waypoint_telemetry(&wp, None).tracing.clone()).expect("traced");
    assert!(!tracing.report_spans);
    assert!(silent.waypoint_tracing_providers(&wp).is_empty());
}

#[test]
fn invalid_tracing_config_is_refused_with_its_field() {
    for (mesh_config, telemetry_spec, needles) in [
        (
            "extensionProviders: [{name: o, opentelemetry: {service: nope.default.svc.cluster.local, port: 4317}}]",
            json!({}),
            vec!["opentelemetry.service", "no Service"],
        ),
        (
            "extensionProviders: [{name: o, opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317, http: {}, grpc: {}}}]",
            json!({}),
            vec!["extensionProviders[0].opentelemetry", "not both"],
        ),
        (
            "extensionProviders: [{name: o, opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317, resourceDetectors: {environment: {}}}}]",
            json!({}),
            vec!["opentelemetry.resourceDetectors", "not supported"],
        ),
        (
            "extensionProviders: [{name: o, opentelemetry: {service: otel.observability.svc.cluster.local, port: 4318, http: {path: v1/traces, timeout: soon}}}]",
            json!({}),
            vec!["opentelemetry.http.path", "must start with /"],
        ),
        (
            "extensionProviders: [{name: o, opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317, grpc: {timeout: soon}}}]",
            json!({}),
            vec!["opentelemetry.grpc.timeout", "invalid duration"],
        ),
        (
            PROVIDERS,
            json!({"tracing": [{"randomSamplingPercentage": 101}]}),
            vec![
                "spec.tracing[0].randomSamplingPercentage",
                "not a percentage",
            ],
        ),
        (
            PROVIDERS,
            json!({"tracing": [{"customTags": {"t": {"literal": {"value": "a"}, "header": {"name": "x"}}}}]}),
            vec!["spec.tracing[0].customTags[t]", "one of literal"],
        ),
        (
            PROVIDERS,
            json!({"tracing": [{"match": {"mode": "BOTH"}}]}),
            vec!["spec.tracing[0].match.mode", "unknown mode"],
        ),
        (
            PROVIDERS,
            json!({"tracing": [{"samplingPercentage": 5}]}),
            vec!["spec.tracing[0]", "samplingPercentage"],
        ),
    ] {
        let errors = must_fail(&mesh(
            mesh_config,
            vec![telemetry("default", "t", telemetry_spec)],
        ));
        assert_error(&errors, &needles);
    }
}

#[test]
fn what_a_waypoint_cannot_act_on_warns() {
    let with_defaults = format!(
        "{PROVIDERS}defaultProviders: {{tracing: [zipkin], metrics: [stackdriver], accessLogging: [envoy]}}\n"
    );
    let snap = must_compile(&mesh(
        &with_defaults,
        vec![telemetry(
            "default",
            "t",
            json!({"tracing": [
                {"match": {"mode": "CLIENT"}, "providers": [{"name": "otel"}]},
                {"providers": [{"name": "zipkin"}]}]}),
        )],
    ));
    let fields: Vec<&str> = (snap.warnings().iter())
        .filter(|w| w.message.contains("no effect") || w.message.contains("traces nothing"))
        .map(|w| w.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "data.mesh.defaultProviders.tracing[0]",
            "data.mesh.defaultProviders.metrics[0]",
            "spec.tracing[0].match.mode",
            "spec.tracing[1].providers[0]",
        ]
    );
    // The CLIENT entry is not applied; the other names no provider this mesh has.
    let wp = ObjectRef::new("default", "wp");
    assert!(snap.waypoint_telemetry(&wp, None).tracing.is_none());
}
