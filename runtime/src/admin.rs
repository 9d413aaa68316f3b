//! The admin HTTP server: readiness, Prometheus metrics and an optional config dump.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Readiness;
use crate::serve::{http_builder, serve_connections};

/// Produces the JSON served at `/config_dump`.
pub type ConfigDump = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Serves `/healthz/ready`, `/metrics` and `/config_dump` (see [`AdminServer::serve`]).
#[derive(Clone)]
pub struct AdminServer {
    registry: Registry,
    readiness: Readiness,
    config_dump: Option<ConfigDump>,
}

impl AdminServer {
    pub fn new(registry: Registry, readiness: Readiness) -> Self {
        Self {
            registry,
            readiness,
            config_dump: None,
        }
    }

    pub fn with_config_dump(mut self, dump: ConfigDump) -> Self {
        self.config_dump = Some(dump);
        self
    }

    /// Serves on an already-bound listener until shutdown: GET /healthz/ready (200 "ready" when
    /// ready, else 503), GET /metrics (Prometheus text format of the registry), GET /config_dump
    /// (JSON, 404 if none), others 404.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let admin = Arc::new(self);
        serve_connections(listener, shutdown, http_builder(), move |_peer| {
            let admin = Arc::clone(&admin);
            hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = admin.respond(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            })
        })
        .await;
    }

    /// The response for one request; the admin endpoints ignore request bodies.
    pub fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match path {
            "/healthz/ready" if self.readiness.is_ready() => text(StatusCode::OK, "ready\n"),
            "/healthz/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => self.metrics(),
            "/config_dump" => match &self.config_dump {
                Some(dump) => json(&dump()),
                None => text(StatusCode::NOT_FOUND, "no config dump\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let encoder = TextEncoder::new();
        let mut buffer = Vec::new();
        match encoder.encode(&self.registry.gather(), &mut buffer) {
            Ok(()) => response(StatusCode::OK, encoder.format_type(), buffer),
            Err(error) => {
                tracing::warn!(%error, "cannot encode metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        }
    }
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => response(StatusCode::OK, "application/json", body),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode config dump: {error}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
