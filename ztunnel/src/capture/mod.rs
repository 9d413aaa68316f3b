//! Transparent capture: how local pods' connections reach the ztunnel with no change to the
//! pods (Istio's in-pod redirection). The ztunnel opens its listeners inside each pod's network
//! namespace; the pod's redirect rules send its outgoing TCP to the outbound listener and its
//! incoming plaintext to the inbound one, where `SO_ORIGINAL_DST` says where it was going.
//!
//! - `rules` (pure) and `install`: the redirect rules, when the ztunnel sets pods up itself.
//! - `outbound`: the captured outbound listener (15001).
//! - `zds`: pods handed over by istio-cni's node agent, which writes the rules itself.

mod install;
pub mod outbound;
pub mod rules;
pub mod zds;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

use mesh_config::Workload;
use mesh_runtime::Netns;
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

pub use install::{InstallError, install, remove};

/// How local pods' traffic reaches the ztunnel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Capture {
    /// No capture: each pod's clients use its SOCKS5 listener on the pod's loopback address.
    #[default]
    Loopback,
    /// Each local pod's network namespace is the file `<dir>/<namespace>.<name>` (`ip netns`
    /// names, made by `mesh up --netns` or a test); the ztunnel writes its redirect rules.
    NetnsDir(PathBuf),
    /// Pods handed over by istio-cni's node agent at this socket, their namespaces with them;
    /// istio-cni writes the redirect rules.
    Zds(PathBuf),
}

/// The name of `pod`'s network namespace under [`Capture::NetnsDir`] (namespaces and pod names
/// hold no `.` before the first, so the name is unambiguous).
pub fn netns_name(pod: &Workload) -> String {
    format!("{}.{}", pod.namespace, pod.name)
}

/// Opens `pod`'s namespace under `dir`, its sockets marked as the ztunnel's.
pub fn open_pod_netns(dir: &Path, pod: &Workload) -> Result<Netns, mesh_runtime::NetnsError> {
    Ok(Netns::open(&dir.join(netns_name(pod)))?.with_socket_mark(rules::ZTUNNEL_MARK))
}

/// Where a redirected connection was going before the pod's rules sent it to us.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    if stream.local_addr()?.is_ipv4() {
        let sin = getsockopt(stream, sockopt::OriginalDst)?;
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Ok(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
    } else {
        let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        Ok(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, 0).into())
    }
}

/// Closes `stream` with a reset, so its client learns at once that nothing is behind it
/// (a plain close would look like a server that answered and hung up).
pub(crate) fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
