//! Which destination a tunnel addressed, and whether this waypoint serves it: the CONNECT
//! authority names a Service VIP, a pod IP or a Service hostname, with a port. Resolution is
//! the snapshot's (the ztunnel resolves the same way); this adds the waypoint's own checks.

use mesh_config::{Destination, ObjectRef, Snapshot, split_authority};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    #[error("waypoint {0} is not configured")]
    NotConfigured(String),
    #[error("authority {0:?} is not host:port")]
    BadAuthority(String),
    #[error("authority {0:?} names no known service or workload")]
    Unknown(String),
    #[error("authority {authority:?} is not served by waypoint {waypoint}")]
    NotServedHere { authority: String, waypoint: String },
    #[error("service {service} has no port {port}")]
    NoSuchPort { service: String, port: u16 },
}

/// Resolves `authority` to a destination that waypoint `me` serves.
pub fn dispatch(
    snapshot: &Snapshot,
    me: &ObjectRef,
    authority: &str,
) -> Result<Destination, DispatchError> {
    if snapshot.waypoint(me).is_none() {
        return Err(DispatchError::NotConfigured(me.to_string()));
    }
    let (host, port) =
        split_authority(authority).ok_or_else(|| DispatchError::BadAuthority(authority.into()))?;
    let destination = snapshot
        .destination(host, port)
        .ok_or_else(|| DispatchError::Unknown(authority.into()))?;
    let bound = match &destination {
        Destination::Service { service, .. } => service.waypoint.as_ref(),
        Destination::Workload { workload, .. } => workload.waypoint.as_ref(),
    };
    if bound != Some(me) {
        return Err(DispatchError::NotServedHere {
            authority: authority.into(),
            waypoint: me.to_string(),
        });
    }
    if let Destination::Service { service, port } = &destination
        && service.port(*port).is_none()
    {
        return Err(DispatchError::NoSuchPort {
            service: format!("{}/{}", service.namespace, service.name),
            port: *port,
        });
    }
    Ok(destination)
}
