//! Which destination a tunnel addressed: the CONNECT authority names a Service VIP, a pod IP or a
//! Service hostname, with a port. Pure: snapshot in, decision out.

use std::net::IpAddr;
use std::sync::Arc;

use mesh_config::{ObjectRef, Service, Snapshot, Waypoint, Workload};

/// The original destination of a request, resolved against the current snapshot.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A Service port (addressed by VIP or hostname): routes apply.
    Service { service: Arc<Service>, port: u16 },
    /// A pod addressed directly: sent to that pod, no service routes.
    Workload { workload: Arc<Workload>, port: u16 },
}

impl Destination {
    pub fn service(&self) -> Option<&Arc<Service>> {
        match self {
            Destination::Service { service, .. } => Some(service),
            Destination::Workload { .. } => None,
        }
    }

    /// The address the caller addressed: the Service VIP (also when it used the hostname) or
    /// the pod IP.
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    #[error("authority {0:?} is not host:port")]
    BadAuthority(String),
    #[error("authority {0:?} names no known service or workload")]
    Unknown(String),
    #[error("authority {authority:?} is not served by waypoint {waypoint}")]
    NotServedHere { authority: String, waypoint: String },
    #[error("service {service} has no port {port}")]
    NoSuchPort { service: String, port: u16 },
}

/// Splits `host:port` (also `[v6]:port`).
pub fn split_authority(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Resolves `authority` to a destination that `waypoint` serves.
pub fn dispatch(
    snapshot: &Snapshot,
    waypoint: &Waypoint,
    authority: &str,
) -> Result<Destination, DispatchError> {
    let (host, port) =
        split_authority(authority).ok_or_else(|| DispatchError::BadAuthority(authority.into()))?;
    let me = ObjectRef {
        namespace: waypoint.namespace.clone(),
        name: waypoint.name.clone(),
    };
    let not_here = || DispatchError::NotServedHere {
        authority: authority.into(),
        waypoint: format!("{}/{}", me.namespace, me.name),
    };
    let service = match host.parse::<IpAddr>() {
        Ok(ip) => match snapshot.service_by_vip(ip) {
            Some(service) => service,
            None => {
                let workload = snapshot
                    .workload_by_ip(ip)
                    .ok_or_else(|| DispatchError::Unknown(authority.into()))?;
                if workload.waypoint.as_ref() != Some(&me) {
                    return Err(not_here());
                }
                return Ok(Destination::Workload {
                    workload: workload.clone(),
                    port,
                });
            }
        },
        Err(_) => snapshot
            .service_by_host(host)
            .ok_or_else(|| DispatchError::Unknown(authority.into()))?,
    };
    if service.waypoint.as_ref() != Some(&me) {
        return Err(not_here());
    }
    if !service.ports.iter().any(|p| p.port == port) {
        return Err(DispatchError::NoSuchPort {
            service: format!("{}/{}", service.namespace, service.name),
            port,
        });
    }
    Ok(Destination::Service {
        service: service.clone(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authorities() {
        assert_eq!(split_authority("10.0.0.1:80"), Some(("10.0.0.1", 80)));
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(
            split_authority("reviews.default.svc.cluster.local:9080"),
            Some(("reviews.default.svc.cluster.local", 9080))
        );
        assert_eq!(split_authority("reviews"), None);
        assert_eq!(split_authority(":80"), None);
        assert_eq!(split_authority("a:99999"), None);
    }
}
