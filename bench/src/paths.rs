//! The benchmarked paths: their names, what each measures, which Envoy path a mesh path is
//! compared with, and the loopback addresses every process of the harness uses (pure).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;

/// One way from the load generator to the echo backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathId {
    /// Straight to the echo backend: the baseline.
    Direct,
    /// Envoy as a sidecar pair: plaintext in, mutual TLS between two Envoys, plaintext out.
    EnvoyTls,
    /// Envoy as an HBONE encap + decap pair (the ztunnel pair's job).
    EnvoyHbone,
    /// Envoy encap, Envoy HBONE waypoint (terminate CONNECT, route, re-originate), Envoy decap.
    EnvoyHboneWaypoint,
    /// The mesh: ztunnel → ztunnel over HBONE.
    MeshZtunnel,
    /// The mesh: ztunnel → waypoint → ztunnel.
    MeshWaypoint,
}

impl PathId {
    /// Every path, in the order rounds visit them.
    pub const ALL: [PathId; 6] = [
        PathId::Direct,
        PathId::EnvoyTls,
        PathId::EnvoyHbone,
        PathId::EnvoyHboneWaypoint,
        PathId::MeshZtunnel,
        PathId::MeshWaypoint,
    ];

    /// The name used on the command line, in file names and in the report.
    pub fn name(self) -> &'static str {
        match self {
            PathId::Direct => "direct",
            PathId::EnvoyTls => "envoy-tls",
            PathId::EnvoyHbone => "envoy-hbone",
            PathId::EnvoyHboneWaypoint => "envoy-hbone-waypoint",
            PathId::MeshZtunnel => "mesh-ztunnel",
            PathId::MeshWaypoint => "mesh-waypoint",
        }
    }

    /// One line for the report: what the requests pass through.
    pub fn describe(self) -> &'static str {
        match self {
            PathId::Direct => "load → echo backend",
            PathId::EnvoyTls => {
                "load → Envoy (HTTP/1.1 in, mTLS out) → Envoy (mTLS in, HTTP/1.1 out) → backend"
            }
            PathId::EnvoyHbone => {
                "load → Envoy encap (TCP → HBONE) → Envoy decap (HBONE → TCP) → backend"
            }
            PathId::EnvoyHboneWaypoint => {
                "load → Envoy encap → Envoy waypoint (HBONE in, HTTP route, HBONE out) → Envoy decap → backend"
            }
            PathId::MeshZtunnel => "load → SOCKS5 → ztunnel A → HBONE → ztunnel B → backend",
            PathId::MeshWaypoint => {
                "load → SOCKS5 → ztunnel A → HBONE → waypoint (L7 route) → HBONE → ztunnel B → backend"
            }
        }
    }

    /// The Envoy path doing the same job, for the "× Envoy" ratios.
    pub fn envoy_counterpart(self) -> Option<PathId> {
        match self {
            PathId::MeshZtunnel => Some(PathId::EnvoyHbone),
            PathId::MeshWaypoint => Some(PathId::EnvoyHboneWaypoint),
            _ => None,
        }
    }

    pub fn is_mesh(self) -> bool {
        matches!(self, PathId::MeshZtunnel | PathId::MeshWaypoint)
    }

    pub fn is_envoy(self) -> bool {
        matches!(
            self,
            PathId::EnvoyTls | PathId::EnvoyHbone | PathId::EnvoyHboneWaypoint
        )
    }

    /// Whether a proxy process sits on the path (its CPU and memory are measured).
    pub fn has_proxy(self) -> bool {
        self != PathId::Direct
    }

    /// The addresses this path's processes listen on (they must be free before the run).
    pub fn listen_addresses(self) -> Vec<SocketAddr> {
        let envoys = |listeners: &[SocketAddr]| {
            listeners
                .iter()
                .flat_map(|&l| [l, addr::envoy_admin(l)])
                .collect()
        };
        let readiness = |ip| SocketAddr::new(ip, addr::MESH_READINESS_PORT);
        match self {
            PathId::Direct => Vec::new(),
            PathId::EnvoyTls => envoys(&[addr::TLS_OUT, addr::TLS_IN]),
            PathId::EnvoyHbone => envoys(&[addr::PAIR_ENCAP, addr::PAIR_DECAP]),
            PathId::EnvoyHboneWaypoint => {
                envoys(&[addr::WP_ENCAP, addr::WP_WAYPOINT, addr::WP_DECAP])
            }
            PathId::MeshZtunnel | PathId::MeshWaypoint => vec![
                addr::MESH_CLIENT_SOCKS,
                readiness(addr::MESH_NODE_A),
                readiness(addr::MESH_NODE_B),
                readiness(addr::MESH_WAYPOINT_POD),
            ],
        }
    }

    /// Where the load generator sends requests for this path.
    pub fn entry(self) -> Entry {
        let http = |addr: SocketAddr| Entry {
            base_url: format!("http://{addr}"),
            socks5: None,
        };
        let mesh = |host: &str| Entry {
            base_url: format!("http://{host}:{}", addr::BACKEND_PORT),
            socks5: Some(addr::MESH_CLIENT_SOCKS),
        };
        match self {
            PathId::Direct => http(addr::BACKEND),
            PathId::EnvoyTls => http(addr::TLS_OUT),
            PathId::EnvoyHbone => http(addr::PAIR_ENCAP),
            PathId::EnvoyHboneWaypoint => http(addr::WP_ENCAP),
            PathId::MeshZtunnel => mesh(addr::MESH_SERVICE_HOST),
            PathId::MeshWaypoint => mesh(addr::MESH_WAYPOINT_SERVICE_HOST),
        }
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the load generator reaches a path: a base URL, and a SOCKS5 proxy for mesh paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `http://host:port`, without a path.
    pub base_url: String,
    pub socks5: Option<SocketAddr>,
}

impl Entry {
    /// The echo URL answering with `size` bytes.
    pub fn echo_url(&self, size: u64) -> String {
        format!("{}/echo?size={size}", self.base_url)
    }
}

/// Every address the harness binds or dials: 127.0.50.0/24, nothing off the machine.
pub mod addr {
    use super::*;

    const fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 50, last))
    }
    const fn at(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(ip(last), port)
    }

    pub const BACKEND_PORT: u16 = 8080;
    /// The echo backend every path ends at (also the mesh's backend pod IP).
    pub const BACKEND: SocketAddr = at(10, BACKEND_PORT);
    /// Envoy admin port (readiness `/ready`), on each Envoy's own address.
    pub const ENVOY_ADMIN_PORT: u16 = 19000;
    pub const HBONE_PORT: u16 = 15008;

    pub const TLS_OUT: SocketAddr = at(20, 8080);
    pub const TLS_IN: SocketAddr = at(21, 8443);
    pub const PAIR_ENCAP: SocketAddr = at(30, 8080);
    pub const PAIR_DECAP: SocketAddr = at(31, HBONE_PORT);
    pub const WP_ENCAP: SocketAddr = at(40, 8080);
    pub const WP_WAYPOINT: SocketAddr = at(41, HBONE_PORT);
    pub const WP_DECAP: SocketAddr = at(42, HBONE_PORT);

    pub const MESH_NODE_A: IpAddr = ip(101);
    pub const MESH_NODE_B: IpAddr = ip(102);
    pub const MESH_CLIENT_POD: IpAddr = ip(111);
    pub const MESH_WAYPOINT_POD: IpAddr = ip(112);
    pub const MESH_SERVICE_VIP: IpAddr = ip(201);
    pub const MESH_WAYPOINT_SERVICE_VIP: IpAddr = ip(202);
    /// The client pod's ztunnel SOCKS5 entry.
    pub const MESH_CLIENT_SOCKS: SocketAddr = at(111, 15080);
    pub const MESH_READINESS_PORT: u16 = 15021;
    pub const MESH_SERVICE_HOST: &str = "echo.default.svc.cluster.local";
    pub const MESH_WAYPOINT_SERVICE_HOST: &str = "echo-waypoint.default.svc.cluster.local";

    /// The admin (readiness) address of an Envoy listening on `listener`'s IP.
    pub fn envoy_admin(listener: SocketAddr) -> SocketAddr {
        SocketAddr::new(listener.ip(), ENVOY_ADMIN_PORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_match_the_command_line_values() {
        for path in PathId::ALL {
            let parsed = PathId::from_str(path.name(), false).expect("parses");
            assert_eq!(parsed, path);
            assert_eq!(path.to_string(), path.name());
        }
    }

    #[test]
    fn mesh_paths_compare_with_the_envoy_path_doing_the_same_job() {
        assert_eq!(
            PathId::MeshWaypoint.envoy_counterpart(),
            Some(PathId::EnvoyHboneWaypoint)
        );
        assert_eq!(
            PathId::MeshZtunnel.envoy_counterpart(),
            Some(PathId::EnvoyHbone)
        );
        assert_eq!(PathId::Direct.envoy_counterpart(), None);
        assert!(!PathId::Direct.has_proxy());
    }

    #[test]
    fn listen_addresses_are_distinct_across_paths() {
        let mut all: Vec<SocketAddr> = vec![addr::BACKEND];
        for path in [
            PathId::EnvoyTls,
            PathId::EnvoyHbone,
            PathId::EnvoyHboneWaypoint,
            PathId::MeshZtunnel,
        ] {
            all.extend(path.listen_addresses());
        }
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "an address is shared between paths");
        assert!(all.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(
            PathId::MeshWaypoint.listen_addresses(),
            PathId::MeshZtunnel.listen_addresses()
        );
    }

    #[test]
    fn entries_are_loopback_and_mesh_goes_through_socks() {
        for path in PathId::ALL {
            let entry = path.entry();
            assert_eq!(entry.socks5.is_some(), path.is_mesh(), "{path}");
            assert!(entry.base_url.starts_with("http://"));
        }
        assert_eq!(
            PathId::Direct.entry().echo_url(1024),
            "http://127.0.50.10:8080/echo?size=1024"
        );
        assert_eq!(
            PathId::MeshWaypoint.entry().echo_url(1),
            "http://echo-waypoint.default.svc.cluster.local:8080/echo?size=1"
        );
    }
}
