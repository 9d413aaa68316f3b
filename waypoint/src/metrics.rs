//! Istio-compatible request metrics (`reporter="waypoint"`) on an explicit registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

const LABELS: &[&str] = &[
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
];

/// Label values for one request; `unknown` where a value is not known.
#[derive(Clone, Debug)]
pub struct RequestLabels {
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub response_flags: &'static str,
}

impl Default for RequestLabels {
    fn default() -> Self {
        let unknown = || "unknown".to_string();
        RequestLabels {
            source_workload: unknown(),
            source_workload_namespace: unknown(),
            source_principal: unknown(),
            source_canonical_service: unknown(),
            source_canonical_revision: unknown(),
            destination_workload: unknown(),
            destination_workload_namespace: unknown(),
            destination_principal: unknown(),
            destination_service: unknown(),
            destination_service_name: unknown(),
            destination_service_namespace: unknown(),
            destination_canonical_service: unknown(),
            destination_canonical_revision: unknown(),
            request_protocol: "http",
            response_code: 0,
            response_flags: "-",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Metrics { requests, duration })
    }

    pub fn record(&self, l: &RequestLabels, duration_ms: f64) {
        let code = l.response_code.to_string();
        let values = [
            "waypoint",
            &l.source_workload,
            &l.source_workload_namespace,
            &l.source_principal,
            &l.source_canonical_service,
            &l.source_canonical_revision,
            &l.destination_workload,
            &l.destination_workload_namespace,
            &l.destination_principal,
            &l.destination_service,
            &l.destination_service_name,
            &l.destination_service_namespace,
            &l.destination_canonical_service,
            &l.destination_canonical_revision,
            l.request_protocol,
            &code,
            l.response_flags,
            "mutual_tls",
        ];
        self.requests.with_label_values(&values).inc();
        self.duration
            .with_label_values(&values)
            .observe(duration_ms);
    }
}
