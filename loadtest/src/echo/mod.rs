//! A fortio-style echo server: HTTP/1.1 and h2c on any path, driven by query parameters
//! (`size`, `status`, `delay`, `header`, `close`), with `/debug` describing the request, and
//! gRPC health and reflection for gRPC calls on the same port.

mod body;
mod debug;
pub mod grpc;
pub mod params;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{HeaderName, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use mesh_runtime::CancellationToken;
use mesh_runtime::serve::{http_builder, serve_connections};
use tokio::net::TcpListener;

pub use body::{BodyError, CHUNK, EchoBody, SizedBody};
pub use debug::debug_json;
pub use params::{EchoParams, ParamError, parse_query};

/// Name of the header every response carries with the server's name.
pub const SERVER_HEADER: HeaderName = HeaderName::from_static("x-echo-server");

/// The echo server. `new` does no I/O; `serve` runs on an already-bound listener.
#[derive(Debug, Clone)]
pub struct EchoServer {
    name: String,
    keepalive_timeout: Option<Duration>,
}

struct Shared {
    name: String,
    header: HeaderValue,
    grpc: grpc::GrpcApps,
}

impl EchoServer {
    /// `name` is reported in `/debug` and in the `x-echo-server` header.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            keepalive_timeout: None,
        }
    }

    /// Closes an HTTP/1.1 connection that brings no new request head for `timeout` after
    /// its last response (and a new one whose first head takes as long), with no
    /// `Connection: close` before: an app whose keep-alive timeout races its clients.
    /// Default: hyper's 30 s.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = Some(timeout);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves until `shutdown` is cancelled, then drains open connections.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let header = header_value_lossy(&self.name);
        let shared = Arc::new(Shared {
            name: self.name,
            header,
            grpc: grpc::GrpcApps::default(),
        });
        let mut builder = http_builder();
        if let Some(timeout) = self.keepalive_timeout {
            builder.http1().header_read_timeout(timeout);
        }
        serve_connections(listener, shutdown, builder, move |peer| {
            let shared = Arc::clone(&shared);
            hyper::service::service_fn(move |request| handle(Arc::clone(&shared), peer, request))
        })
        .await;
    }
}

/// A header value for an arbitrary name: characters a header cannot carry become `_`.
fn header_value_lossy(name: &str) -> HeaderValue {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&cleaned).unwrap_or_else(|_| HeaderValue::from_static("echo"))
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<EchoBody>, Infallible> {
    if grpc::is_grpc(&request) {
        let version = request.version();
        let mut response = shared.grpc.call(request).await.map(EchoBody::Grpc);
        finish(&shared, &mut response, &[], false, version);
        return Ok(response);
    }
    let query = request.uri().query().unwrap_or("");
    let params = match parse_query(query, &mut || rand::random::<f64>() * 100.0) {
        Ok(params) => params,
        Err(error) => {
            let mut response = Response::new(EchoBody::full(format!("{error}\n")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            finish(&shared, &mut response, &[], false, request.version());
            return Ok(response);
        }
    };
    if !params.delay.is_zero() {
        tokio::time::sleep(params.delay).await;
    }
    let version = request.version();
    let mut response = if request.uri().path() == "/debug" {
        debug_response(&shared.name, peer, request).await
    } else {
        echo_response(&params, request).await
    };
    *response.status_mut() = params.status;
    finish(
        &shared,
        &mut response,
        &params.headers,
        params.close,
        version,
    );
    Ok(response)
}

async fn echo_response(params: &EchoParams, request: Request<Incoming>) -> Response<EchoBody> {
    let (parts, body) = request.into_parts();
    match params.size {
        Some(size) => {
            // Read what the client sent (as fortio does) so the connection stays reusable.
            drain(body).await;
            let mut response = Response::new(EchoBody::Sized(SizedBody::new(size)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        None => {
            let mut response = Response::new(EchoBody::Echo(body));
            if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
            }
            response
        }
    }
}

async fn debug_response(
    name: &str,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<EchoBody> {
    let (parts, body) = request.into_parts();
    let body_size = drain(body).await;
    let document = debug_json(name, &parts, peer, body_size);
    let text = serde_json::to_vec_pretty(&document).unwrap_or_default();
    let mut response = Response::new(EchoBody::full(text));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Reads and discards a request body, returning how many bytes it had.
async fn drain(mut body: Incoming) -> u64 {
    let mut total = 0u64;
    if body.is_end_stream() {
        return 0;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(error) => {
                tracing::debug!(%error, "request body ended with an error");
                break;
            }
        }
    }
    total
}

/// Headers every response gets: requested extra headers, `x-echo-server`, and
/// `Connection: close` when asked for (HTTP/1 only; HTTP/2 has no such header).
fn finish(
    shared: &Shared,
    response: &mut Response<EchoBody>,
    extra: &[(HeaderName, HeaderValue)],
    close: bool,
    version: Version,
) {
    let headers = response.headers_mut();
    for (name, value) in extra {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(SERVER_HEADER, shared.header.clone());
    if close && version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_header_survives_odd_names() {
        assert_eq!(header_value_lossy("echo-1"), "echo-1");
        assert_eq!(header_value_lossy("a\nb"), "a_b");
        assert_eq!(header_value_lossy("é"), "_");
    }
}
