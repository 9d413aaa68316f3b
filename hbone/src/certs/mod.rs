//! Workload certificates and where they come from.
//!
//! A [`CertificateProvider`] hands out the certificate for a SPIFFE identity and the mesh's trust
//! anchors. Two providers live here: [`LocalCa`] (an in-memory root that mints short-lived leaf
//! certificates, for local meshes and tests) and [`FileCertificates`] (Istio's on-disk layout,
//! reloaded when the files change).

mod files;
pub mod istio_ca;
mod local_ca;
mod pem;
pub(crate) mod x509;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::Identity;

pub use files::FileCertificates;
pub use istio_ca::{IstioCa, IstioCaConfig};
pub use local_ca::LocalCa;

/// A leaf certificate with its chain and private key.
#[derive(Debug)]
pub struct WorkloadCertificate {
    pub identity: Identity,
    /// Leaf first, then intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub not_after: SystemTime,
}

impl WorkloadCertificate {
    /// The chain as PEM (`cert-chain.pem` in Istio's layout).
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|cert| pem::encode("CERTIFICATE", cert.as_ref()))
            .collect()
    }

    /// The private key as PEM (`key.pem` in Istio's layout).
    pub fn key_pem(&self) -> String {
        let label = match self.key.as_ref() {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem::encode(label, self.key.secret_der())
    }
}

/// Source of workload certificates and trust anchors.
pub trait CertificateProvider: Send + Sync + 'static {
    /// Certificate for `id`, cached; re-minted/reloaded before expiry (local CA: when less than
    /// half the lifetime remains). Cheap when cached (called on every handshake).
    fn certificate(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, CertError>;
    /// Trust anchors of the mesh (the root certificates).
    fn roots(&self) -> Vec<CertificateDer<'static>>;
    fn trust_domain(&self) -> &str;
    /// Waits until `id`'s certificate is at hand (a provider that fetches it from elsewhere
    /// fetches it now), or says why it cannot be had. Others have it at once.
    fn prepare<'a>(&'a self, id: &'a Identity) -> BoxFuture<'a, Result<(), CertError>> {
        Box::pin(async move { self.certificate(id).map(drop) })
    }
}

/// Why a certificate could not be minted, loaded or served.
#[derive(thiserror::Error, Debug)]
pub enum CertError {
    #[error("generating certificate for {subject}: {source}")]
    Generate {
        subject: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot issue a certificate for {identity}: outside trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        identity: Identity,
        trust_domain: String,
    },
    #[error("no certificate for {requested}: {} holds {available}", dir.display())]
    UnknownIdentity {
        requested: Box<Identity>,
        available: Box<Identity>,
        dir: PathBuf,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("no certificate for {identity} from the CA yet")]
    Pending { identity: Box<Identity> },
    #[error("no certificate for {identity}: {reason}")]
    Unavailable {
        identity: Box<Identity>,
        reason: String,
    },
}

/// Which part of issued material does not fit the rest.
#[derive(Debug)]
pub(crate) enum Mismatch {
    /// The key is not the leaf's.
    Key(String),
    /// A root cannot be used as a trust anchor.
    Root(String),
    /// The chain does not lead from the leaf to a root.
    Chain(String),
}

/// Checks that `key` belongs to the leaf `chain[0]` and that the chain leads to `roots`, now.
pub(crate) fn check_issued(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    roots: &[CertificateDer<'static>],
) -> Result<(), Mismatch> {
    let provider = crate::tls::crypto_provider();
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| Mismatch::Chain("no certificate".into()))?;
    rustls::sign::CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider)
        .map_err(|e| Mismatch::Key(format!("key does not match the certificate: {e}")))?;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        (store.add(root.clone())).map_err(|e| Mismatch::Root(format!("unusable root: {e}")))?;
    }
    let parsed = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| Mismatch::Chain(e.to_string()))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &store,
        intermediates,
        rustls::pki_types::UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| Mismatch::Chain(format!("does not chain to the roots: {e}")))?;
    Ok(())
}
