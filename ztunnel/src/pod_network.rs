//! Where a local pod's sockets live: on the node, bound to the pod's own loopback address
//! (loopback mode), or inside the pod's network namespace (in-pod capture).

use std::io;
use std::net::{IpAddr, SocketAddr};

use mesh_runtime::Netns;
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PodNetwork {
    /// Listeners on the pod's address; connections made from it when it is local.
    Loopback,
    /// Every socket made inside the pod's namespace, marked so that the pod's capture rules let
    /// it pass (see [`crate::capture::rules`]).
    InPod(Netns),
}

impl PodNetwork {
    /// A listener on `addr`: on the node, or inside the pod.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        mesh_runtime::listen_in(self.netns(), addr)
    }

    /// A TCP connection to `to` that appears to come from `from`: in loopback mode when `from`
    /// is a local address; in a pod, by binding `from` transparently (the pod's policy route
    /// brings the answers back to us), so an app sees its real client's address.
    /// Nagle is off: a proxy forwards what it reads at once.
    pub async fn connect(&self, from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
        let stream = match self {
            PodNetwork::Loopback => {
                let socket = if to.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                if from.is_ipv4() == to.is_ipv4() && socket.bind(SocketAddr::new(from, 0)).is_ok() {
                    socket.connect(to).await?
                } else {
                    TcpStream::connect(to).await?
                }
            }
            PodNetwork::InPod(netns) => {
                let socket = netns.tcp_socket(to.is_ipv4())?;
                // IPv4 only: IPv6 pods connect from the pod's own address.
                if from.is_ipv4() && to.is_ipv4() && from != to.ip() {
                    setsockopt(&socket, sockopt::IpTransparent, &true)?;
                    socket.bind(SocketAddr::new(from, 0))?;
                }
                socket.connect(to).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The namespace outbound HBONE connections of this pod are dialled from.
    pub fn netns(&self) -> Option<&Netns> {
        match self {
            PodNetwork::Loopback => None,
            PodNetwork::InPod(netns) => Some(netns),
        }
    }
}
