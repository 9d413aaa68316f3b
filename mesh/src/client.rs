//! A small HTTP/1.1 client that enters the mesh through a pod's SOCKS5 listener and keeps its
//! connection alive between requests (what a pod's app would do). Used by the demo and tests.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_socks::tcp::Socks5Stream;

/// One keep-alive HTTP/1.1 connection through the mesh.
pub struct MeshClient {
    sender: SendRequest<Empty<Bytes>>,
    authority: String,
}

/// A buffered response.
#[derive(Debug)]
pub struct MeshResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl MeshResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }
}

impl MeshClient {
    /// Connects to `host:port` through the SOCKS5 listener at `socks` (the source pod's).
    pub async fn connect(socks: SocketAddr, host: &str, port: u16) -> anyhow::Result<Self> {
        let stream = Socks5Stream::connect(socks, (host, port))
            .await
            .with_context(|| format!("SOCKS5 {socks} → {host}:{port}"))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream.into_inner()))
                .await
                .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(MeshClient {
            sender,
            authority: format!("{host}:{port}"),
        })
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<MeshResponse> {
        self.request(Method::GET, path, &[]).await
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<MeshResponse> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::new()).context("building request")?;
        self.sender.ready().await.context("connection closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("sending request")?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.context("reading body")?.to_bytes();
        Ok(MeshResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A gRPC channel (h2c) that enters the mesh through the SOCKS5 listener at `socks`, as a
/// pod's gRPC client would; each connection tonic opens is its own SOCKS5 connection.
pub async fn grpc_channel(
    socks: SocketAddr,
    host: &str,
    port: u16,
) -> anyhow::Result<tonic::transport::Channel> {
    let target = (host.to_string(), port);
    let connector = tower::service_fn(move |_: http::Uri| {
        let target = target.clone();
        async move {
            let stream = Socks5Stream::connect(socks, (target.0.as_str(), target.1)).await?;
            Ok::<_, tokio_socks::Error>(TokioIo::new(stream.into_inner()))
        }
    });
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .with_context(|| format!("gRPC endpoint {host}:{port}"))?;
    endpoint
        .connect_with_connector(connector)
        .await
        .with_context(|| format!("gRPC over SOCKS5 {socks} → {host}:{port}"))
}
