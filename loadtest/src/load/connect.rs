//! Opening one client connection: TCP (directly or through a SOCKS5 proxy that resolves the
//! target name), then an HTTP/1.1 or HTTP/2 (prior knowledge) handshake driven by a task.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use super::LoadError;
use super::options::Target;

/// The request side of an open connection.
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Waits until the connection can take a request; `false` if it is closed.
    pub async fn ready(&mut self) -> bool {
        match self {
            Self::Http1(s) => s.ready().await.is_ok(),
            Self::Http2(s) => s.ready().await.is_ok(),
        }
    }

    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Self::Http1(s) => s.send_request(request).await,
            Self::Http2(s) => s.send_request(request).await,
        }
    }
}

/// A freshly opened connection.
pub struct Connected {
    pub sender: Sender,
    /// The address the socket is connected to (the proxy's, through SOCKS5).
    pub peer: String,
    pub connect_time: Duration,
}

/// How to open connections to one target.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub target: Target,
    pub socks5: Option<String>,
    pub h2: bool,
    pub timeout: Duration,
}

impl Dialer {
    pub async fn dial(&self) -> Result<Connected, LoadError> {
        let started = Instant::now();
        let stream = tokio::time::timeout(self.timeout, self.tcp())
            .await
            .map_err(|_| LoadError::ConnectTimeout {
                target: self.target.authority.clone(),
                timeout: self.timeout,
            })??;
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| self.target.authority.clone(), |a| a.to_string());
        let sender = self.handshake(stream).await?;
        Ok(Connected {
            sender,
            peer,
            connect_time: started.elapsed(),
        })
    }

    async fn tcp(&self) -> Result<TcpStream, LoadError> {
        let host = self.target.host.as_str();
        let port = self.target.port;
        match &self.socks5 {
            None => TcpStream::connect((host, port))
                .await
                .map_err(|source| LoadError::Connect {
                    target: self.target.authority.clone(),
                    source,
                }),
            Some(proxy) => Socks5Stream::connect(proxy.as_str(), (host, port))
                .await
                .map(Socks5Stream::into_inner)
                .map_err(|source| LoadError::Socks {
                    proxy: proxy.clone(),
                    target: self.target.authority.clone(),
                    source,
                }),
        }
    }

    async fn handshake(&self, stream: TcpStream) -> Result<Sender, LoadError> {
        let io = TokioIo::new(stream);
        let error = |source| LoadError::Handshake {
            target: self.target.authority.clone(),
            source,
        };
        if self.h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(error)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http2 connection ended");
                }
            });
            Ok(Sender::Http2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(error)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http1 connection ended");
                }
            });
            Ok(Sender::Http1(sender))
        }
    }
}
