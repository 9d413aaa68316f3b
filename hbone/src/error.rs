//! The crate's error type and its mapping to HTTP statuses and `std::io::Error`.

use std::io;
use std::net::SocketAddr;

use http::StatusCode;

use crate::certs::CertError;

/// Everything that can go wrong opening or serving an HBONE tunnel.
#[derive(thiserror::Error, Debug)]
pub enum HboneError {
    /// The peer answered 400 (not a CONNECT, bad authority, wrong destination).
    #[error("HBONE peer answered 400 Bad Request")]
    BadRequest,
    /// The peer answered 401 (policy denied).
    #[error("HBONE peer answered 401 Unauthorized (policy denied)")]
    Unauthorized,
    /// The peer answered 503 (destination unreachable).
    #[error("HBONE peer answered 503 Service Unavailable")]
    Unavailable,
    #[error("HBONE peer answered unexpected status {0}")]
    UnexpectedStatus(StatusCode),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The TLS handshake with `addr` failed, including a peer with the wrong identity.
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("timed out connecting to {addr}")]
    Timeout { addr: SocketAddr },
    /// Missing or invalid SPIFFE identity on a peer certificate.
    #[error("peer identity: {0}")]
    PeerIdentity(String),
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl HboneError {
    /// The HTTP status the peer answered with, for the status variants.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HboneError::BadRequest => Some(StatusCode::BAD_REQUEST),
            HboneError::Unauthorized => Some(StatusCode::UNAUTHORIZED),
            HboneError::Unavailable => Some(StatusCode::SERVICE_UNAVAILABLE),
            HboneError::UnexpectedStatus(status) => Some(*status),
            _ => None,
        }
    }

    /// The error for a non-200 CONNECT answer.
    pub fn from_status(status: StatusCode) -> HboneError {
        match status {
            StatusCode::BAD_REQUEST => HboneError::BadRequest,
            StatusCode::UNAUTHORIZED => HboneError::Unauthorized,
            StatusCode::SERVICE_UNAVAILABLE => HboneError::Unavailable,
            other => HboneError::UnexpectedStatus(other),
        }
    }

    /// A copy for callers that waited on the same failed dial to `dialed` (errors hold
    /// non-Clone sources; those are rebuilt from their kind and message).
    pub(crate) fn duplicate(&self, dialed: SocketAddr) -> HboneError {
        let io_copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            HboneError::BadRequest => HboneError::BadRequest,
            HboneError::Unauthorized => HboneError::Unauthorized,
            HboneError::Unavailable => HboneError::Unavailable,
            HboneError::UnexpectedStatus(status) => HboneError::UnexpectedStatus(*status),
            HboneError::Connect { addr, source } => HboneError::Connect {
                addr: *addr,
                source: io_copy(source),
            },
            HboneError::Tls { addr, source } => HboneError::Tls {
                addr: *addr,
                source: io_copy(source),
            },
            HboneError::Timeout { addr } => HboneError::Timeout { addr: *addr },
            HboneError::PeerIdentity(why) => HboneError::PeerIdentity(why.clone()),
            HboneError::H2(e) => match (e.get_io(), e.reason()) {
                (Some(io), _) => HboneError::Connect {
                    addr: dialed,
                    source: io_copy(io),
                },
                (None, Some(reason)) => HboneError::H2(reason.into()),
                (None, None) => HboneError::Config(format!("HTTP/2: {e}")),
            },
            HboneError::Certificate(e) => HboneError::Config(format!("certificate: {e}")),
            HboneError::Config(why) => HboneError::Config(why.clone()),
        }
    }

    fn io_kind(&self) -> io::ErrorKind {
        match self {
            HboneError::BadRequest | HboneError::Config(_) => io::ErrorKind::InvalidInput,
            HboneError::Unauthorized | HboneError::PeerIdentity(_) => {
                io::ErrorKind::PermissionDenied
            }
            HboneError::Unavailable => io::ErrorKind::ConnectionRefused,
            HboneError::Connect { source, .. } => source.kind(),
            HboneError::Tls { .. } => io::ErrorKind::ConnectionAborted,
            HboneError::Timeout { .. } => io::ErrorKind::TimedOut,
            HboneError::H2(e) => match e.get_io() {
                Some(io) => io.kind(),
                None => io::ErrorKind::ConnectionReset,
            },
            HboneError::UnexpectedStatus(_) | HboneError::Certificate(_) => io::ErrorKind::Other,
        }
    }
}

impl From<HboneError> for io::Error {
    fn from(error: HboneError) -> io::Error {
        io::Error::new(error.io_kind(), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_both_ways() {
        for (code, expect) in [
            (400, "BadRequest"),
            (401, "Unauthorized"),
            (503, "Unavailable"),
        ] {
            let status = StatusCode::from_u16(code).expect("status");
            let err = HboneError::from_status(status);
            assert!(format!("{err:?}").starts_with(expect), "{err:?}");
            assert_eq!(err.status(), Some(status));
        }
        let teapot = HboneError::from_status(StatusCode::IM_A_TEAPOT);
        assert!(matches!(teapot, HboneError::UnexpectedStatus(s) if s == StatusCode::IM_A_TEAPOT));
        assert_eq!(teapot.status(), Some(StatusCode::IM_A_TEAPOT));
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(HboneError::Timeout { addr }.status(), None);
    }

    #[test]
    fn converts_to_io_errors_with_useful_kinds() {
        let addr: SocketAddr = "127.0.0.1:15008".parse().expect("addr");
        let timeout: io::Error = HboneError::Timeout { addr }.into();
        assert_eq!(timeout.kind(), io::ErrorKind::TimedOut);
        assert!(timeout.to_string().contains("127.0.0.1:15008"));
        let refused: io::Error = HboneError::Connect {
            addr,
            source: io::ErrorKind::ConnectionRefused.into(),
        }
        .into();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        let denied: io::Error = HboneError::Unauthorized.into();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
    }
}
