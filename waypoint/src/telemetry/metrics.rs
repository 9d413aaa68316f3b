//! Istio-compatible request metrics (`reporter="waypoint"`) on an explicit registry.

use mesh_core::ResponseFlag;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::request::RequestCtx;
use crate::upstream::forward::Tries;
use mesh_config::telemetry::{RequestMetric, STANDARD_LABELS, TagOverride, TelemetrySettings};

use super::attributes::Attributes;

const LABELS: &[&str] = &STANDARD_LABELS;
use mesh_config::{Destination, Workload};

/// The cluster every workload is in, as Istio names a cluster by default (`CLUSTER_ID`).
const CLUSTER: &str = "Kubernetes";

/// Label values for one request, borrowed from the request's context (nothing is copied);
/// `unknown` where a value is not known.
#[derive(Clone, Debug)]
pub struct RequestLabels<'a> {
    pub source_workload: &'a str,
    pub source_workload_namespace: &'a str,
    pub source_principal: &'a str,
    pub source_canonical_service: &'a str,
    pub source_canonical_revision: &'a str,
    pub destination_workload: &'a str,
    pub destination_workload_namespace: &'a str,
    pub destination_principal: &'a str,
    pub destination_service: &'a str,
    pub destination_service_name: &'a str,
    pub destination_service_namespace: &'a str,
    pub destination_canonical_service: &'a str,
    pub destination_canonical_revision: &'a str,
    pub source_app: &'a str,
    pub source_version: &'a str,
    pub destination_app: &'a str,
    pub destination_version: &'a str,
    pub request_protocol: &'static str,
    pub response_code: u16,
    /// The response's `grpc-status`; empty for a response that has none.
    pub grpc_response_status: &'a str,
    pub response_flags: ResponseFlag,
}

const UNKNOWN: &str = "unknown";

impl Default for RequestLabels<'_> {
    fn default() -> Self {
        RequestLabels {
            source_workload: UNKNOWN,
            source_workload_namespace: UNKNOWN,
            source_principal: UNKNOWN,
            source_canonical_service: UNKNOWN,
            source_canonical_revision: UNKNOWN,
            destination_workload: UNKNOWN,
            destination_workload_namespace: UNKNOWN,
            destination_principal: UNKNOWN,
            destination_service: UNKNOWN,
            destination_service_name: UNKNOWN,
            destination_service_namespace: UNKNOWN,
            destination_canonical_service: UNKNOWN,
            destination_canonical_revision: UNKNOWN,
            source_app: UNKNOWN,
            source_version: UNKNOWN,
            destination_app: UNKNOWN,
            destination_version: UNKNOWN,
            request_protocol: "http",
            response_code: 0,
            grpc_response_status: "",
            response_flags: ResponseFlag::None,
        }
    }
}

impl<'a> RequestLabels<'a> {
    /// The labels of the request `ctx` describes, answered with `code` (and `grpc_status`).
    pub fn of(ctx: &'a RequestCtx, code: u16, grpc_status: &'a str, http2: bool) -> Self {
        let mut labels = RequestLabels {
            response_code: code,
            grpc_response_status: grpc_status,
            response_flags: ctx.flag,
            request_protocol: if http2 { "grpc_or_http2" } else { "http" },
            ..RequestLabels::default()
        };
        if let Some(tunnel) = &ctx.tunnel {
            labels.source_principal = &tunnel.peer_uri;
            labels.source_workload_namespace = &tunnel.peer_identity.namespace;
            if let Some(source) = ctx.snapshot.workload_by_ip(tunnel.client_addr().ip()) {
                labels.source_workload = &source.name;
                labels.source_workload_namespace = &source.namespace;
                labels.source_canonical_service = &source.canonical_service;
                labels.source_canonical_revision = &source.canonical_revision;
                (labels.source_app, labels.source_version) = app_and_version(source);
            }
        }
        if let Some(endpoint) = &ctx.endpoint {
            let w = &endpoint.workload;
            labels.destination_workload = &w.name;
            labels.destination_workload_namespace = &w.namespace;
            labels.destination_canonical_service = &w.canonical_service;
            labels.destination_canonical_revision = &w.canonical_revision;
            (labels.destination_app, labels.destination_version) = app_and_version(w);
        }
        if let Some(target) = &ctx.target {
            labels.destination_principal = &target.identity_uri;
        }
        if let Some(service) = ctx.destination().and_then(|d| d.service()) {
            labels.destination_service = &service.hostname;
            labels.destination_service_name = &service.name;
            labels.destination_service_namespace = &service.namespace;
        }
        labels
    }
}

/// The bytes of a request's body as read from its caller, and of its response's as sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct BodySizes {
    pub request: usize,
    pub response: usize,
}

/// A workload's `app` and `version` labels, as Istio reads them (`app`, else
/// `app.kubernetes.io/name`; `version`, else `app.kubernetes.io/version`).
fn app_and_version(workload: &Workload) -> (&str, &str) {
    let label = |keys: [&str; 2]| {
        keys.iter()
            .find_map(|key| workload.labels.get(*key))
            .map_or(UNKNOWN, String::as_str)
    };
    (
        label(["app", "app.kubernetes.io/name"]),
        label(["version", "app.kubernetes.io/version"]),
    )
}

#[derive(Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: HistogramVec,
    response_bytes: HistogramVec,
    retries: IntCounterVec,
    retries_refused: IntCounterVec,
    ejections: IntCounterVec,
    mirrors: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        // The process's connection caps, refusals and open connections.
        mesh_runtime::ConnectionLimit::process().register(registry)?;
        let requests = IntCounterVec::new(
            Opts::new("istio_requests_total", "Requests handled by the waypoint"),
            LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("istio_request_duration_milliseconds", "Request duration").buckets(
                vec![
                    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                    10000.0, 30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
                ],
            ),
            LABELS,
        )?;
        // Body sizes, in powers of ten from 1 B to 1 GB.
        let size_buckets = prometheus::exponential_buckets(1.0, 10.0, 10)?;
        let sizes = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(size_buckets.clone());
            HistogramVec::new(opts, LABELS)
        };
        let request_bytes = sizes("istio_request_bytes", "Request body sizes")?;
        let response_bytes = sizes("istio_response_bytes", "Response body sizes")?;
        let retries = IntCounterVec::new(
            Opts::new(
                "mesh_upstream_retries_total",
                "Retries of upstream requests, by destination service and reason (Envoy's \
                 retry_on names)",
            ),
            &["destination_service", "reason"],
        )?;
        let retries_refused = IntCounterVec::new(
            Opts::new(
                "mesh_upstream_retry_budget_exhausted_total",
                "Retries not made because the destination's retry budget was spent",
            ),
            &["destination_service"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "mesh_upstream_outlier_ejections_total",
                "Endpoints ejected by outlier detection, by destination service",
            ),
            &["destination_service"],
        )?;
        let mirrors = IntCounterVec::new(
            Opts::new(
                "mesh_upstream_mirrors_total",
                "Mirrored copies of requests (RequestMirror), by the mirror's service and how \
                 each ended: answered, failed (including a body cut off for falling behind), \
                 timed_out, overflow (the destination was full), no_endpoint",
            ),
            &["destination_service", "outcome"],
        )?;
        for metric in [&requests, &retries, &retries_refused, &ejections, &mirrors] {
            registry.register(Box::new(metric.clone()))?;
        }
        for histogram in [&duration, &request_bytes, &response_bytes] {
            registry.register(Box::new(histogram.clone()))?;
        }
        Ok(Metrics {
            requests,
            duration,
            request_bytes,
            response_bytes,
            retries,
            retries_refused,
            ejections,
            mirrors,
        })
    }

    /// Counts one mirrored copy of a request to `service` (a hostname) by how it ended.
    pub fn record_mirror(&self, service: &str, outcome: &str) {
        self.mirrors.with_label_values(&[service, outcome]).inc();
    }

    /// Counts what the retries of one request did.
    pub fn record_tries(&self, destination: &Destination, tries: &Tries) {
        let service = destination
            .service()
            .map_or(UNKNOWN, |s| s.hostname.as_str());
        for reason in &tries.retries {
            self.retries
                .with_label_values(&[service, reason.as_str()])
                .inc();
        }
        if tries.budget_exhausted {
            self.retries_refused.with_label_values(&[service]).inc();
        }
        if tries.ejected > 0 {
            (self.ejections.with_label_values(&[service])).inc_by(tries.ejected.into());
        }
    }

    /// Counts one request with its duration and its bodies' sizes, in the metrics `settings`
    /// (the destination's Telemetry) keep on, with the label values its tag overrides set
    /// (evaluated over `attributes`).
    pub fn record(
        &self,
        l: &RequestLabels<'_>,
        duration_ms: f64,
        sizes: BodySizes,
        settings: &TelemetrySettings,
        attributes: Option<&Attributes<'_>>,
    ) {
        let code = l.response_code.to_string();
        let values = [
            "waypoint",
            l.source_workload,
            l.source_workload_namespace,
            l.source_principal,
            l.source_canonical_service,
            l.source_canonical_revision,
            l.destination_workload,
            l.destination_workload_namespace,
            l.destination_principal,
            l.destination_service,
            l.destination_service_name,
            l.destination_service_namespace,
            l.destination_canonical_service,
            l.destination_canonical_revision,
            l.request_protocol,
            &code,
            l.response_flags.as_str(),
            "mutual_tls",
            l.source_app,
            l.source_version,
            CLUSTER,
            l.destination_app,
            l.destination_version,
            CLUSTER,
            l.grpc_response_status,
        ];
        let label_values = |metric: RequestMetric| -> Option<Vec<String>> {
            let tags: Vec<&TagOverride> = settings.tags_of(metric).collect();
            if tags.is_empty() {
                return None;
            }
            let evaluate = |e: &_| attributes.and_then(|a| a.text(e));
            Some(with_tags(&values, &tags, evaluate))
        };
        let record = |metric: RequestMetric, observe: &dyn Fn(&[&str])| {
            if !settings.records(metric) {
                return;
            }
            match label_values(metric) {
                None => observe(&values),
                Some(owned) => observe(&owned.iter().map(String::as_str).collect::<Vec<_>>()),
            }
        };
        record(RequestMetric::Count, &|v| {
            self.requests.with_label_values(v).inc()
        });
        record(RequestMetric::Duration, &|v| {
            self.duration.with_label_values(v).observe(duration_ms)
        });
        record(RequestMetric::RequestSize, &|v| {
            (self.request_bytes.with_label_values(v)).observe(sizes.request as f64)
        });
        record(RequestMetric::ResponseSize, &|v| {
            (self.response_bytes.with_label_values(v)).observe(sizes.response as f64)
        });
    }
}

/// `values` with `tags` applied: an UPSERT's value as its expression evaluates (`unknown`
/// when it cannot be), a REMOVE's empty (Prometheus reads an empty label as none).
fn with_tags(
    values: &[&str],
    tags: &[&TagOverride],
    evaluate: impl Fn(&mesh_config::cel::Expression) -> Option<String>,
) -> Vec<String> {
    let mut owned: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    for tag in tags {
        owned[tag.label] = match &tag.value {
            Some(expression) => evaluate(expression).unwrap_or_else(|| UNKNOWN.to_string()),
            None => String::new(),
        };
    }
    owned
}
