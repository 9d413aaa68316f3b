//! Plain TCP dials shared by inbound (to the app) and outbound (passthrough).

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// TCP from `source_ip` when it is a local address (loopback pods), else from any address.
/// Nagle is off: a proxy forwards what it reads at once.
pub async fn connect_from(source_ip: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let stream = if source_ip.is_ipv4() == addr.is_ipv4()
        && socket.bind(SocketAddr::new(source_ip, 0)).is_ok()
    {
        socket.connect(addr).await?
    } else {
        TcpStream::connect(addr).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}
