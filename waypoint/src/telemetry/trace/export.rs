//! Where a waypoint's spans go: one OpenTelemetry SDK tracer provider per `opentelemetry`
//! provider the config names, made when a request first needs it and made again when the
//! provider changes. Its spans are batched (Envoy's flush interval, 5 s; at most 2048 spans
//! waiting, the rest dropped) and exported over OTLP, gRPC (tonic) or HTTP (protobuf), to an
//! endpoint of the collector's Service reached through the mesh: an HBONE tunnel, as the
//! waypoint, so the collector's policies see the waypoint's identity.
//!
//! The sampling decision is the request's own ([`super::context::sampled`]), carried to the
//! SDK's sampler in the span's parent context.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mesh_config::traces::{OtlpExport, TracingProvider};
use mesh_config::{ObjectRef, Snapshot, Store};
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SamplingDecision, SamplingResult, SdkTracerProvider,
    ShouldSample, Tracer,
};

use super::context;
use crate::upstream::client::read_answer;
use crate::upstream::{Target, Upstreams};

/// Envoy's OpenTelemetry flush interval.
pub const DEFAULT_EXPORT_DELAY: Duration = Duration::from_secs(5);
/// Spans waiting for export, at most; more are dropped (the SDK's default).
const MAX_QUEUED_SPANS: usize = 2048;
/// The most of a collector's answer read.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How a request's span is to be sampled: as the caller decided, else `percent` of traces.
#[derive(Clone, Copy, Debug)]
pub struct SamplingPlan {
    pub caller: Option<bool>,
    pub percent: f64,
}

/// The SDK's sampler: carries out the [`SamplingPlan`] in the parent context (none: not
/// sampled).
#[derive(Clone, Debug)]
struct Planned;

impl ShouldSample for Planned {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let plan = parent.and_then(|cx| cx.get::<SamplingPlan>()).copied();
        let sampled = plan.is_some_and(|p| context::sampled(p.caller, p.percent, trace_id));
        let trace_state = parent
            .map(|cx| cx.span().span_context().trace_state().clone())
            .unwrap_or_default();
        SamplingResult {
            decision: match sampled {
                true => SamplingDecision::RecordAndSample,
                false => SamplingDecision::Drop,
            },
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// A provider's live tracer.
struct Live {
    provider: Arc<TracingProvider>,
    sdk: Option<SdkTracerProvider>,
    tracer: Tracer,
}

/// The tracers of one waypoint, by provider name.
pub struct Tracers {
    waypoint: ObjectRef,
    store: Arc<Store>,
    upstreams: Upstreams,
    export_delay: Duration,
    live: ArcSwap<HashMap<String, Arc<Live>>>,
    building: Mutex<()>,
    /// Spans that are sampled and propagated but never exported (`disableSpanReporting`).
    silent: SdkTracerProvider,
}

impl Tracers {
    pub fn new(
        waypoint: ObjectRef,
        store: Arc<Store>,
        upstreams: Upstreams,
        export_delay: Duration,
    ) -> Self {
        Tracers {
            silent: SdkTracerProvider::builder().with_sampler(Planned).build(),
            waypoint,
            store,
            upstreams,
            export_delay,
            live: Default::default(),
            building: Mutex::new(()),
        }
    }

    /// The tracer that never exports.
    pub fn silent(&self) -> Tracer {
        self.silent.tracer("waypoint")
    }

    /// The tracer exporting to `provider`, made now if it is new or changed (a provider that
    /// cannot be set up traces silently, logged once).
    pub fn exporting(&self, provider: &Arc<TracingProvider>) -> Tracer {
        let current = |live: &HashMap<String, Arc<Live>>| {
            (live.get(&provider.name))
                .filter(|l| l.provider == *provider)
                .map(|l| l.tracer.clone())
        };
        if let Some(tracer) = current(&self.live.load()) {
            return tracer;
        }
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tracer) = current(&self.live.load()) {
            return tracer;
        }
        let live = match self.build(provider) {
            Ok(sdk) => Live {
                provider: provider.clone(),
                tracer: sdk.tracer("waypoint"),
                sdk: Some(sdk),
            },
            Err(error) => {
                tracing::warn!(provider = %provider.name, %error, "cannot export spans: they are dropped");
                Live {
                    provider: provider.clone(),
                    tracer: self.silent(),
                    sdk: None,
                }
            }
        };
        let tracer = live.tracer.clone();
        let mut next = HashMap::clone(&self.live.load());
        if let Some(old) = next.insert(provider.name.clone(), Arc::new(live)) {
            retire(old);
        }
        self.live.store(Arc::new(next));
        tracer
    }

    /// Flushes and drops the tracers of providers `snapshot` no longer has this waypoint use.
    pub fn retire_unused(&self, snapshot: &Snapshot) {
        let used = snapshot.waypoint_tracing_providers(&self.waypoint);
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let unused = |l: &Arc<Live>| !used.iter().any(|p| *p == l.provider);
        let mut kept = HashMap::clone(&self.live.load());
        let gone: Vec<String> = (kept.iter())
            .filter(|(_, l)| unused(l))
            .map(|(name, _)| name.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        let retired: Vec<Arc<Live>> = (gone.iter()).filter_map(|n| kept.remove(n)).collect();
        self.live.store(Arc::new(kept));
        for live in retired {
            retire(live);
        }
    }

    /// Exports what is waiting, and stops (the waypoint is stopping).
    pub async fn shutdown(&self) {
        let live = self.live.swap(Default::default());
        let flushing: Vec<_> = live.values().cloned().map(retire).collect();
        for flushed in flushing {
            let _ = flushed.await;
        }
    }

    fn build(&self, provider: &TracingProvider) -> Result<SdkTracerProvider, String> {
        let collector = ThroughMesh {
            store: self.store.clone(),
            upstreams: self.upstreams.clone(),
            host: provider.service.hostname.clone(),
            port: provider.port,
        };
        let origin = format!("http://{}:{}", collector.host, collector.port);
        let exporter = match &provider.export {
            OtlpExport::Grpc { timeout, metadata } => {
                let mut map = tonic::metadata::MetadataMap::new();
                for (name, value) in metadata {
                    let key = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())
                        .map_err(|e| format!("metadata {name}: {e}"))?;
                    let value = tonic::metadata::MetadataValue::try_from(value.as_bytes())
                        .map_err(|e| format!("metadata {name}: {e}"))?;
                    map.insert(key, value);
                }
                let channel = tonic::transport::Endpoint::from_shared(origin)
                    .map_err(|e| e.to_string())?
                    .timeout(*timeout)
                    .connect_timeout(*timeout)
                    .connect_with_connector_lazy(collector.timing_out(*timeout));
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_channel(channel)
                    .with_timeout(*timeout)
                    .with_metadata(map)
                    .build()
            }
            OtlpExport::Http {
                path,
                timeout,
                headers,
            } => {
                let headers = (headers.iter())
                    .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                let client = MeshHttpClient {
                    collector: collector.timing_out(*timeout),
                    runtime: tokio::runtime::Handle::current(),
                };
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("{origin}{path}"))
                    .with_timeout(*timeout)
                    .with_headers(headers)
                    .build()
            }
        }
        .map_err(|e| e.to_string())?;
        let batching = BatchConfigBuilder::default()
            .with_scheduled_delay(self.export_delay)
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batching)
            .build();
        let service_name = format!("{}.{}", self.waypoint.name, self.waypoint.namespace);
        Ok(SdkTracerProvider::builder()
            .with_sampler(Planned)
            .with_span_processor(processor)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service_name)
                    .build(),
            )
            .build())
    }
}

/// Flushes and stops `live`'s exporter off the async threads (the SDK's shutdown blocks).
fn retire(live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        if let Some(sdk) = &live.sdk
            && let Err(error) = sdk.shutdown()
        {
            tracing::debug!(provider = %live.provider.name, %error, "span exporter shutdown");
        }
    })
}

/// Connections to a collector: a tunnel to one of its Service's endpoints, looked up in the
/// config current when the connection is made.
#[derive(Clone)]
struct ThroughMesh {
    store: Arc<Store>,
    upstreams: Upstreams,
    host: String,
    port: u16,
}

impl ThroughMesh {
    fn timing_out(self, timeout: Duration) -> Connector {
        Connector {
            collector: self,
            timeout,
        }
    }
}

#[derive(Clone)]
struct Connector {
    collector: ThroughMesh,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.collector;
        write!(f, "collector {}:{}", c.host, c.port)
    }
}

impl Connector {
    async fn connect(self) -> Result<mesh_hbone::HboneStream, String> {
        let c = &self.collector;
        let snapshot = c.store.load();
        let service = (snapshot.service_by_host(&c.host))
            .ok_or_else(|| format!("no Service {} in the mesh", c.host))?;
        let endpoints = snapshot.endpoints(service, c.port);
        if endpoints.is_empty() {
            return Err(format!("{}:{} has no endpoint", c.host, c.port));
        }
        let endpoint = &endpoints[rand::random_range(0..endpoints.len())];
        let target = Target::for_endpoint(endpoint);
        let tunnel = c.upstreams.tunnel(&target, self.timeout).await;
        tunnel.map_err(|e| e.to_string())
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<mesh_hbone::HboneStream>, std::io::Error>> + Send>>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<mesh_hbone::HboneStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let stream = connector.connect().await.map_err(std::io::Error::other)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// OTLP/HTTP's client: one POST per export over a fresh tunnel, run on the waypoint's
/// runtime (the SDK exports from its own thread).
#[derive(Debug)]
struct MeshHttpClient {
    collector: Connector,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for MeshHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let collector = self.collector.clone();
        let timeout = collector.timeout;
        let posting = self.runtime.spawn(async move {
            let post = post(collector, request);
            match tokio::time::timeout(timeout, post).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        });
        let answer = posting.await.map_err(|e| Box::new(e) as HttpError)?;
        answer.map_err(HttpError::from)
    }
}

async fn post(
    collector: Connector,
    request: http::Request<Bytes>,
) -> Result<http::Response<Bytes>, String> {
    let io = collector.connect().await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    let authority = parts.uri.authority().map(|a| a.to_string());
    parts.uri = (parts.uri.path_and_query())
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| format!("{e}"))?;
    if let Some(authority) = authority {
        let host = http::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?;
        parts.headers.insert(http::header::HOST, host);
    }
    let response = sender
        .send_request(http::Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = read_answer(body, MAX_ANSWER_BYTES).await?;
    Ok(http::Response::from_parts(parts, body))
}
