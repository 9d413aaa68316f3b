//! A root CA that mints short-lived workload certificates: created in memory, or loaded from
//! files (`ca-cert.pem`, `ca-key.pem`: the names of Istio's plugged-in CA) so that separate
//! processes, and `mesh ca`, sign under one root.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{CertError, CertificateProvider, WorkloadCertificate};
use crate::identity::Identity;

/// The CA's certificate (PEM), as Istio's plugged-in CA names it.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// The CA's private key (PKCS#8 PEM), as Istio's plugged-in CA names it.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Istio's default workload certificate lifetime.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Backdating of notBefore, tolerating small clock differences between peers.
const BACKDATE: Duration = Duration::from_secs(60);

/// A minted certificate and when to replace it.
struct Minted {
    renew_at: SystemTime,
    cert: Arc<WorkloadCertificate>,
}

/// In-memory root CA (ECDSA P-256) for one trust domain. Leaf certificates carry exactly one URI
/// SAN (the SPIFFE id) and EKU serverAuth + clientAuth; they are cached per identity and
/// re-minted once half their lifetime has passed.
pub struct LocalCa {
    trust_domain: String,
    lifetime: Duration,
    root_der: CertificateDer<'static>,
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
    minted: Mutex<HashMap<Identity, Minted>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("trust_domain", &self.trust_domain)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// A new root for `trust_domain`; workload certificates live 24 h.
    pub fn new(trust_domain: &str) -> Result<Self, CertError> {
        Self::with_lifetime(trust_domain, DEFAULT_LIFETIME)
    }

    /// A new root whose workload certificates live `workload_lifetime`.
    pub fn with_lifetime(
        trust_domain: &str,
        workload_lifetime: Duration,
    ) -> Result<Self, CertError> {
        let generate = |source| CertError::Generate {
            subject: format!("root CA of {trust_domain}"),
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let params = root_params(trust_domain, SystemTime::now());
        let root = params.self_signed(&key).map_err(generate)?;
        Ok(LocalCa {
            trust_domain: trust_domain.to_string(),
            lifetime: workload_lifetime,
            root_der: root.der().clone(),
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// The root certificate as PEM (`root-cert.pem`).
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// Writes the root (`ca-cert.pem`, and `root-cert.pem` for clients) and its key
    /// (`ca-key.pem`, readable by the owner only) into `dir`, which is created if need be.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertError::Read { path, source }
        };
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        let key = self.issuer.key().serialize_pem();
        let key_path = dir.join(CA_KEY_FILE);
        write_private(&key_path, key.as_bytes()).map_err(fail(&key_path))?;
        for name in [CA_CERT_FILE, super::files::ROOT_CERT_FILE] {
            let path = dir.join(name);
            std::fs::write(&path, &self.root_pem).map_err(fail(&path))?;
        }
        Ok(())
    }

    /// Signs under the self-signed root CA saved in `dir` (`ca-cert.pem`, `ca-key.pem`), for
    /// `trust_domain`; workload certificates live 24 h.
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CertError::Read { path, source })
        };
        let invalid = |name: &str, reason: String| CertError::Invalid {
            path: dir.join(name),
            reason,
        };
        let (cert_pem, key_pem) = (read(CA_CERT_FILE)?, read(CA_KEY_FILE)?);
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(CA_KEY_FILE, format!("not a usable private key: {e}")))?;
        let mut reader = cert_pem.as_bytes();
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut reader)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(CA_CERT_FILE, format!("bad PEM: {e}")))?;
        let [root] = certs.as_slice() else {
            let reason = format!(
                "expected one certificate (a self-signed root), found {}",
                certs.len()
            );
            return Err(invalid(CA_CERT_FILE, reason));
        };
        let check = |result: Result<bool, String>, why: &str| match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(invalid(CA_CERT_FILE, why.to_string())),
            Err(e) => Err(invalid(CA_CERT_FILE, e)),
        };
        check(super::x509::is_ca(root), "not a CA certificate")?;
        let spki =
            super::x509::public_key_info(root).map(|spki| spki == key.subject_public_key_info());
        check(spki, "does not belong to the key in ca-key.pem")?;
        let issuer = Issuer::from_ca_cert_der(root, key)
            .map_err(|e| invalid(CA_CERT_FILE, e.to_string()))?;
        Ok(LocalCa {
            trust_domain: trust_domain.to_string(),
            lifetime: DEFAULT_LIFETIME,
            root_der: root.clone(),
            root_pem: cert_pem,
            issuer,
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// Signs a fresh certificate for `id` (bypassing the cache).
    pub fn mint(&self, id: &Identity) -> Result<WorkloadCertificate, CertError> {
        if id.trust_domain != self.trust_domain {
            return Err(CertError::ForeignTrustDomain {
                identity: id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let generate = |source| CertError::Generate {
            subject: id.to_string(),
            source,
        };
        let now = SystemTime::now();
        let not_after = whole_seconds(now + self.lifetime);
        let params = leaf_params(id, now, not_after).map_err(generate)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(WorkloadCertificate {
            identity: id.clone(),
            chain: vec![cert.der().clone()],
            key: Arc::new(key_der),
            not_after,
        })
    }
}

impl CertificateProvider for LocalCa {
    fn certificate(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        let mut minted = self.minted.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        if let Some(entry) = minted.get(id).filter(|entry| now < entry.renew_at) {
            return Ok(entry.cert.clone());
        }
        let cert = Arc::new(self.mint(id)?);
        let renew_at = now + self.lifetime / 2;
        minted.insert(
            id.clone(),
            Minted {
                renew_at,
                cert: cert.clone(),
            },
        );
        Ok(cert)
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.root_der.clone()]
    }

    fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

/// Sets notBefore/notAfter (rcgen truncates them to whole seconds, as X.509 times are).
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = epoch + since_epoch(not_before);
    params.not_after = epoch + since_epoch(not_after);
}

/// Creates `path` readable and writable by its owner only (a private key).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn root_params(trust_domain: &str, now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "mesh root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now - BACKDATE, now + ROOT_LIFETIME);
    params.serial_number = Some(random_serial());
    params
}

fn leaf_params(
    id: &Identity,
    now: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    // Empty subject, as Istio issues; rcgen then marks the SAN extension critical.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, now - BACKDATE, not_after);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::x509;

    #[test]
    fn mints_one_spiffe_san_signed_by_the_root() {
        let ca = LocalCa::new("cluster.local").expect("ca");
        let id = Identity::new("cluster.local", "default", "bookinfo");
        let cert = ca.certificate(&id).expect("cert");
        assert_eq!(cert.identity, id);
        assert_eq!(cert.chain.len(), 1);
        assert_eq!(
            x509::spiffe_identities(&cert.chain[0]).expect("sans"),
            vec![id.clone()]
        );
        let expires = cert
            .not_after
            .duration_since(SystemTime::now())
            .expect("future");
        assert!(expires > Duration::from_secs(23 * 3600), "{expires:?}");
        assert_eq!(
            x509::not_after(&cert.chain[0]).expect("not_after"),
            cert.not_after
        );
        // cached: the same Arc comes back
        assert!(Arc::ptr_eq(&cert, &ca.certificate(&id).expect("again")));
        assert!(ca.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(ca.roots().len(), 1);
    }

    /// A root saved to files signs, once loaded elsewhere, leaves that chain to it; a key
    /// that is not the certificate's, or a file that is not a CA, is refused by name.
    #[test]
    fn a_saved_root_signs_again_after_loading() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = LocalCa::new("cluster.local").expect("ca");
        ca.save(dir.path()).expect("save");
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .expect("key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let loaded = LocalCa::load(dir.path(), "cluster.local").expect("load");
        assert_eq!(loaded.roots(), ca.roots());
        let id = Identity::new("cluster.local", "default", "web");
        let leaf = loaded.mint(&id).expect("mint");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.roots()[0].clone()).expect("root");
        let parsed = rustls::server::ParsedCertificate::try_from(&leaf.chain[0]).expect("leaf");
        let provider = crate::tls::crypto_provider();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            rustls::pki_types::UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .expect("the leaf chains to the saved root");

        let other = LocalCa::new("cluster.local").expect("other");
        let other_dir = tempfile::tempdir().expect("dir");
        other.save(other_dir.path()).expect("save");
        std::fs::copy(
            other_dir.path().join(CA_KEY_FILE),
            dir.path().join(CA_KEY_FILE),
        )
        .expect("swap the key");
        let error = LocalCa::load(dir.path(), "cluster.local").expect_err("foreign key");
        assert!(
            error.to_string().contains("does not belong to the key"),
            "{error}"
        );
        assert!(error.to_string().contains(CA_CERT_FILE), "{error}");
        std::fs::write(dir.path().join(CA_CERT_FILE), leaf.chain_pem()).expect("a leaf");
        let error = LocalCa::load(dir.path(), "cluster.local").expect_err("not a CA");
        assert!(error.to_string().contains("not a CA"), "{error}");
    }

    #[test]
    fn refuses_other_trust_domains() {
        let ca = LocalCa::new("cluster.local").expect("ca");
        let err = ca
            .certificate(&Identity::new("other.domain", "a", "b"))
            .expect_err("foreign");
        assert!(matches!(err, CertError::ForeignTrustDomain { .. }), "{err}");
    }
}
