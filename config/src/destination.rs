//! What a caller addressed, resolved the one way both proxies resolve it: a Service VIP, a
//! pod IP, or a Service hostname, with a port. Pure lookups on the snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{Service, Workload};
use crate::snapshot::Snapshot;

/// A mesh destination: a Service port (routes and waypoints of the Service apply) or a pod
/// addressed directly.
#[derive(Clone, Debug)]
pub enum Destination {
    Service { service: Arc<Service>, port: u16 },
    Workload { workload: Arc<Workload>, port: u16 },
}

impl Destination {
    pub fn service(&self) -> Option<&Arc<Service>> {
        match self {
            Destination::Service { service, .. } => Some(service),
            Destination::Workload { .. } => None,
        }
    }

    /// The address the caller used: the Service VIP (also when it used the hostname; none for
    /// a headless Service) or the pod IP.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Destination::Service { service, .. } => service.vip,
            Destination::Workload { workload, .. } => Some(workload.ip),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            Destination::Service { port, .. } | Destination::Workload { port, .. } => *port,
        }
    }
}

impl Snapshot {
    /// A Service VIP, else a pod IP.
    pub fn destination_by_ip(&self, ip: IpAddr, port: u16) -> Option<Destination> {
        if let Some(service) = self.service_by_vip(ip) {
            return Some(Destination::Service {
                service: service.clone(),
                port,
            });
        }
        let workload = self.workload_by_ip(ip)?;
        Some(Destination::Workload {
            workload: workload.clone(),
            port,
        })
    }

    /// An IP literal (as [`Snapshot::destination_by_ip`]) or a Service hostname.
    pub fn destination(&self, host: &str, port: u16) -> Option<Destination> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.destination_by_ip(ip, port);
        }
        let service = self.service_by_host(host)?;
        Some(Destination::Service {
            service: service.clone(),
            port,
        })
    }
}

/// Splits an authority `host:port` (also `[v6]:port`). Strict, as RFC 3986 has it: an IPv6
/// host must be bracketed and a bracketed host must be IPv6; the port is decimal digits.
pub fn split_authority(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => {
            let inner = bracketed.strip_suffix(']')?;
            inner.parse::<std::net::Ipv6Addr>().ok()?;
            inner
        }
        None if host.contains([':', '[', ']']) => return None,
        None => host,
    };
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// One of `items`, chosen by `roll` (uniform over `u64`, supplied by the caller so decisions
/// stay pure and tests deterministic). `None` when `items` is empty.
pub fn pick<T>(items: &[T], roll: u64) -> Option<&T> {
    if items.is_empty() {
        return None;
    }
    items.get((roll % items.len() as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authorities() {
        assert_eq!(split_authority("10.0.0.1:80"), Some(("10.0.0.1", 80)));
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", 8080)));
        // Found by fuzzing: brackets around something that is not IPv6, a signed port.
        assert_eq!(split_authority("[[]]:1"), None);
        assert_eq!(split_authority("[reviews]:80"), None);
        assert_eq!(split_authority("::1:80"), None);
        assert_eq!(split_authority("reviews:+80"), None);
        assert_eq!(
            split_authority("reviews.default.svc.cluster.local:9080"),
            Some(("reviews.default.svc.cluster.local", 9080))
        );
        assert_eq!(split_authority("reviews"), None);
        assert_eq!(split_authority(":80"), None);
        assert_eq!(split_authority("a:99999"), None);
    }

    #[test]
    fn pick_is_uniform_over_the_roll() {
        let items = [1, 2, 3];
        assert_eq!(pick(&items, 0), Some(&1));
        assert_eq!(pick(&items, 4), Some(&2));
        assert_eq!(pick(&items, u64::MAX), Some(&1));
        assert_eq!(pick::<u8>(&[], 7), None);
        let twos = (0..300u64).filter(|r| pick(&items, *r) == Some(&2)).count();
        assert_eq!(twos, 100);
    }
}
