//! A throw-away root and SPIFFE leaf certificates (ECDSA P-256, like the mesh's CA) written
//! into the run directory for the Envoy paths.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use crate::error::{BenchError, io};

/// The trust domain of every bench identity.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// `spiffe://cluster.local/ns/default/sa/<service_account>`.
pub fn spiffe_id(service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{service_account}")
}

/// PEM files of one identity, plus the root that verifies peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub root: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
}

/// Writes `root-cert.pem` and, per service account, `<sa>-cert.pem` / `<sa>-key.pem` into `dir`.
pub struct BenchCa {
    dir: PathBuf,
    root: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl BenchCa {
    pub fn create(dir: &Path) -> Result<BenchCa, BenchError> {
        let failed = |source| BenchError::Certificate {
            subject: "bench root".to_owned(),
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(failed)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, TRUST_DOMAIN);
        name.push(DnType::CommonName, "mesh-bench root");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root = params.self_signed(&key).map_err(failed)?;
        let root_path = dir.join("root-cert.pem");
        std::fs::write(&root_path, root.pem()).map_err(io("writing", &root_path))?;
        Ok(BenchCa {
            dir: dir.to_owned(),
            root: root_path,
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf with exactly one URI SAN, the SPIFFE id of `service_account`.
    pub fn issue(&self, service_account: &str) -> Result<CertFiles, BenchError> {
        let id = spiffe_id(service_account);
        let failed = |source| BenchError::Certificate {
            subject: id.clone(),
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.clone().try_into().map_err(failed)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        let files = CertFiles {
            root: self.root.clone(),
            chain: self.dir.join(format!("{service_account}-cert.pem")),
            key: self.dir.join(format!("{service_account}-key.pem")),
        };
        std::fs::write(&files.chain, cert.pem()).map_err(io("writing", &files.chain))?;
        std::fs::write(&files.key, key.serialize_pem()).map_err(io("writing", &files.key))?;
        Ok(files)
    }
}
