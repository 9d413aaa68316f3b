//! Opening one HBONE connection: TCP (optionally from a given source IP), mutual TLS, HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::{Ping, PingPong};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::PoolKey;
use crate::certs::CertificateProvider;
use crate::error::HboneError;
use crate::http2;
use crate::identity::Identity;

pub(super) type ClientConnection = Connection<TlsStream<TcpStream>, Bytes>;

/// A connection ready for CONNECT streams; `connection` must be polled by a task.
pub(super) struct Dialed {
    pub(super) send_request: SendRequest<Bytes>,
    pub(super) connection: ClientConnection,
    /// The connection's PING handle, for the keepalive.
    pub(super) ping_pong: Option<PingPong>,
    pub(super) peer_identity: Identity,
}

async fn tcp_connect(key: &PoolKey, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match &key.source_netns {
        Some(netns) => netns.tcp_socket(addr.is_ipv4())?,
        None if addr.is_ipv4() => TcpSocket::new_v4()?,
        None => TcpSocket::new_v6()?,
    };
    if let Some(ip) = key.source_ip {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Dials `key.destination` presenting `key.source` and expecting one of `key.expected`.
pub(super) async fn dial(
    provider: Arc<dyn CertificateProvider>,
    key: &PoolKey,
    stream_window: u32,
) -> Result<Dialed, HboneError> {
    let addr = key.destination;
    let tls_config = crate::tls::client_config(provider, key.source.clone(), key.expected.clone())?;
    let tcp = tcp_connect(key, addr)
        .await
        .map_err(|source| HboneError::Connect { addr, source })?;
    // SNI is disabled in the config; the name only satisfies the API and is never checked.
    let server_name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(tls_config)
        .connect(server_name, tcp)
        .await
        .map_err(|source| HboneError::Tls { addr, source })?;
    let peer_identity = crate::tls::verified_server_identity(tls.get_ref().1, &key.expected)?;
    let (send_request, mut connection) =
        http2::client_builder(stream_window).handshake(tls).await?;
    let mut ping_pong = connection.ping_pong();
    if let Some(ping_pong) = ping_pong.as_mut() {
        confirm(&mut connection, ping_pong, addr).await?;
    }
    Ok(Dialed {
        send_request,
        connection,
        ping_pong,
        peer_identity,
    })
}

/// One PING round trip before the connection is pooled. In TLS 1.3 the client finishes its
/// handshake before the server has checked the client certificate; a server that refuses us
/// says so (alert) only afterwards. The PONG proves the server accepted us and that its
/// SETTINGS (stream limit) are known.
async fn confirm(
    connection: &mut ClientConnection,
    ping_pong: &mut PingPong,
    addr: SocketAddr,
) -> Result<(), HboneError> {
    let refused = |source| HboneError::Tls { addr, source };
    let ping = ping_pong.ping(Ping::opaque());
    tokio::pin!(ping);
    let failure = tokio::select! {
        pong = &mut ping => match pong {
            Ok(_) => return Ok(()),
            Err(e) => e,
        },
        closed = &mut *connection => match closed {
            Ok(()) => {
                let aborted = std::io::ErrorKind::ConnectionAborted;
                return Err(refused(std::io::Error::new(aborted, "peer closed the connection")));
            }
            Err(e) => e,
        },
    };
    if failure.is_io() {
        let source = failure.into_io().expect("is_io was checked");
        return Err(refused(source));
    }
    Err(HboneError::H2(failure))
}
