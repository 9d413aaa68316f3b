//! Tracing at the waypoint, where a Telemetry names a tracing provider (otherwise trace
//! headers pass through untouched: a span id made up but never exported would leave a hole
//! in every trace). Each request gets a server span, a child of the caller's context
//! ([`context`]); the request goes on naming that span as its parent; when the request ends,
//! the span is tagged ([`tags`]) and, if sampled, exported ([`export`]).

pub mod context;
pub mod export;
pub mod tags;

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_config::traces::TracingSettings;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

pub use context::Incoming;
pub use export::{DEFAULT_EXPORT_DELAY, SamplingPlan, Tracers};

/// One request's span, from its head to its access-log line.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    incoming: Option<Incoming>,
    pub settings: Arc<TracingSettings>,
}

impl RequestSpan {
    /// Starts the span of a request that arrived at `start` with `headers`.
    pub fn start(
        tracers: &Tracers,
        settings: &Arc<TracingSettings>,
        headers: &HeaderMap,
        name: String,
        start: SystemTime,
    ) -> Self {
        let incoming = Incoming::of(headers);
        let plan = SamplingPlan {
            caller: incoming.as_ref().and_then(|i| i.sampled),
            percent: settings.sampling_percent,
        };
        let parent = match incoming.as_ref().and_then(|i| i.parent.clone()) {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let tracer = match settings.report_spans {
            true => tracers.exporting(&settings.provider),
            false => tracers.silent(),
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&tracer, &parent.with_value(plan));
        RequestSpan {
            span,
            incoming,
            settings: settings.clone(),
        }
    }

    /// Whether the span is sampled, so recorded (and exported, unless reporting is off): an
    /// unsampled one needs no tags.
    pub fn sampled(&self) -> bool {
        self.span.is_recording()
    }

    /// The trace headers the request goes on with, naming this span as the parent.
    pub fn outgoing(&self) -> Vec<(HeaderName, HeaderValue)> {
        context::outgoing(self.span.span_context(), self.incoming.as_ref())
    }

    /// Ends the span with `tags`, as an error if `error`.
    pub fn end(mut self, tags: Vec<KeyValue>, error: bool) {
        if !self.sampled() {
            return;
        }
        self.span.set_attributes(tags);
        if error {
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}
