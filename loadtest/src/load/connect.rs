//! Opening one client connection: TCP (directly or through a SOCKS5 proxy that resolves the
//! target name), then the fast HTTP/1.1 client, or a hyper HTTP/1.1 or HTTP/2 (prior
//! knowledge) handshake.
//!
//! A hyper HTTP/1.1 connection is driven inline by the task that uses it (polled together with each
//! exchange) rather than by a spawned task: no cross-task wake-ups per request, which keeps the
//! generator cheap. HTTP/2 connections are driven by their own task.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{Either, select};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use super::LoadError;
use super::fast::FastConnection;
use super::options::Target;

type Http1Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// The request side of an open connection.
pub enum Sender {
    Http1 {
        sender: http1::SendRequest<Full<Bytes>>,
        /// `None` once the connection has ended.
        driver: Option<Pin<Box<Http1Driver>>>,
    },
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Waits until the connection can take a request; `false` if it is closed.
    pub async fn ready(&mut self) -> bool {
        match self {
            Self::Http1 { sender, driver } => drive(driver, sender.ready()).await.is_ok(),
            Self::Http2(sender) => sender.ready().await.is_ok(),
        }
    }

    /// Sends `request` and hands the response to `read` (which consumes the body), driving
    /// the connection meanwhile.
    pub async fn exchange<T, F, Fut>(
        &mut self,
        request: Request<Full<Bytes>>,
        read: F,
    ) -> Result<T, hyper::Error>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = Result<T, hyper::Error>>,
    {
        match self {
            Self::Http1 { sender, driver } => {
                let exchange = async { read(sender.send_request(request).await?).await };
                drive(driver, exchange).await
            }
            Self::Http2(sender) => read(sender.send_request(request).await?).await,
        }
    }
}

/// Runs `work` while polling the HTTP/1.1 connection. If the connection ends first (the
/// server closed it), `work` still completes: with what was already received, or an error.
async fn drive<F: Future>(driver: &mut Option<Pin<Box<Http1Driver>>>, work: F) -> F::Output {
    let work = pin!(work);
    let Some(connection) = driver.as_mut() else {
        return work.await;
    };
    match select(work, connection.as_mut()).await {
        Either::Left((output, _)) => output,
        Either::Right((ended, work)) => {
            if let Err(error) = ended {
                tracing::debug!(%error, "http1 connection ended");
            }
            *driver = None;
            work.await
        }
    }
}

/// Which client speaks on the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The fast HTTP/1.1 client (fortio's default).
    FastHttp1,
    /// hyper's HTTP/1.1 client (`-stdclient`).
    Http1,
    /// hyper's HTTP/2 client, prior knowledge (`-h2`).
    Http2,
}

/// An open connection, ready for requests.
pub enum Connection {
    Fast(FastConnection),
    Hyper(Sender),
}

/// A freshly opened connection.
pub struct Connected<C> {
    pub connection: C,
    /// The address the socket is connected to (the proxy's, through SOCKS5).
    pub peer: String,
    pub connect_time: Duration,
}

impl<C> Connected<C> {
    /// The same connection, wrapped or upgraded by `f`.
    fn map<D>(self, f: impl FnOnce(C) -> D) -> Connected<D> {
        Connected {
            connection: f(self.connection),
            peer: self.peer,
            connect_time: self.connect_time,
        }
    }
}

/// How to open connections to one target.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub target: Target,
    pub socks5: Option<String>,
    pub protocol: Protocol,
    pub timeout: Duration,
}

impl Dialer {
    /// Opens a connection for [`Self::protocol`].
    pub async fn dial(&self) -> Result<Connected<Connection>, LoadError> {
        if self.protocol == Protocol::FastHttp1 {
            Ok(self
                .open()
                .await?
                .map(|stream| Connection::Fast(FastConnection::new(stream))))
        } else {
            Ok(self.dial_hyper().await?.map(Connection::Hyper))
        }
    }

    /// Opens a connection with hyper's client (HTTP/2 for [`Protocol::Http2`], else
    /// HTTP/1.1).
    pub async fn dial_hyper(&self) -> Result<Connected<Sender>, LoadError> {
        let opened = self.open().await?;
        let sender = self.handshake(opened.connection).await?;
        Ok(Connected {
            connection: sender,
            peer: opened.peer,
            connect_time: opened.connect_time,
        })
    }

    /// The TCP connection, timed.
    async fn open(&self) -> Result<Connected<TcpStream>, LoadError> {
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
        Ok(Connected {
            connection: stream,
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
        if self.protocol == Protocol::Http2 {
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
            Ok(Sender::Http1 {
                sender,
                driver: Some(Box::pin(conn)),
            })
        }
    }
}
