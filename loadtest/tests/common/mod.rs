//! Test helpers: an echo server on loopback and minimal HTTP/1.1 and h2c clients.
#![allow(dead_code)]

pub mod socks;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadtest::echo::EchoServer;
use mesh_runtime::CancellationToken;
use tokio::net::{TcpListener, TcpStream};

pub struct Echo {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_echo(name: &str) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(EchoServer::new(name).serve(listener, shutdown.clone()));
    Echo { addr, shutdown }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub frames: usize,
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("frame").data_ref() {
            bytes.extend_from_slice(data);
            frames += 1;
        }
    }
    Reply {
        status,
        headers,
        body: Bytes::from(bytes),
        frames,
    }
}

pub async fn h1_connect(addr: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

pub async fn h1_send(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &'static [u8],
) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "echo.test")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    collect(sender.send_request(request).await.expect("response")).await
}

pub async fn h1_get(addr: SocketAddr, path: &str) -> Reply {
    let mut sender = h1_connect(addr).await;
    h1_send(&mut sender, "GET", path, b"").await
}

pub async fn h2_get(addr: SocketAddr, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("http://echo.test{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    collect(sender.send_request(request).await.expect("response")).await
}
