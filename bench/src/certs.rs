//! A throw-away root and SPIFFE leaf certificates (ECDSA P-256, like the mesh's CA) written
//! into the run directory for the Envoy paths.

use std::path::{Path, PathBuf};

use mesh_hbone::{Identity, LocalCa};

use crate::error::{BenchError, io};

/// The trust domain of every bench identity.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// PEM files of one identity, plus the root that verifies peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub root: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
}

/// Writes `root-cert.pem` and, per service account, `<sa>-cert.pem` / `<sa>-key.pem` into `dir`,
/// minted by the mesh's own CA (so Envoy gets exactly the certificates the mesh would use).
pub struct BenchCa {
    dir: PathBuf,
    root: PathBuf,
    ca: LocalCa,
}

impl BenchCa {
    pub fn create(dir: &Path) -> Result<BenchCa, BenchError> {
        let ca = LocalCa::new(TRUST_DOMAIN).map_err(|source| BenchError::Certificate {
            subject: "bench root".to_owned(),
            source,
        })?;
        let root = dir.join("root-cert.pem");
        std::fs::write(&root, ca.root_pem()).map_err(io("writing", &root))?;
        Ok(BenchCa {
            dir: dir.to_owned(),
            root,
            ca,
        })
    }

    /// A leaf with exactly one URI SAN, the SPIFFE id of `service_account`.
    pub fn issue(&self, service_account: &str) -> Result<CertFiles, BenchError> {
        let identity = Identity::new(TRUST_DOMAIN, "default", service_account);
        let cert = self
            .ca
            .mint(&identity)
            .map_err(|source| BenchError::Certificate {
                subject: identity.to_string(),
                source,
            })?;
        let files = CertFiles {
            root: self.root.clone(),
            chain: self.dir.join(format!("{service_account}-cert.pem")),
            key: self.dir.join(format!("{service_account}-key.pem")),
        };
        std::fs::write(&files.chain, cert.chain_pem()).map_err(io("writing", &files.chain))?;
        std::fs::write(&files.key, cert.key_pem()).map_err(io("writing", &files.key))?;
        Ok(files)
    }
}
