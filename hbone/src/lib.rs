//! HBONE: HTTP/2 CONNECT tunnels over mutual TLS 1.3, as Istio's ambient mesh speaks it.
//!
//! - [`identity`]: SPIFFE identities.
//! - [`certs`]: certificate providers ([`LocalCa`], [`FileCertificates`]).
//! - [`tls`]: rustls configurations with SPIFFE verification.
//! - [`server`]: the inbound [`Server`] handing each CONNECT to a handler as [`InboundConnect`].
//! - [`client`]: the outbound connection [`Pool`].
//! - [`stream`]: [`HboneStream`], one tunnel as `AsyncRead + AsyncWrite`.

pub mod certs;
pub mod client;
pub mod error;
pub mod http2;
pub use mesh_core::identity;
pub mod server;
pub mod stream;
pub mod tls;

pub use certs::{
    CertError, CertificateProvider, FileCertificates, IstioCa, IstioCaConfig, LocalCa,
    WorkloadCertificate,
};
pub use client::{ConnectRequest, Pool, PoolConfig, PoolKey, PoolStats};
pub use error::HboneError;
pub use mesh_core::{Identity, IdentityError};
pub use server::{InboundConnect, Server};
pub use stream::HboneStream;
pub use tls::{client_config, peer_identity, server_config};
