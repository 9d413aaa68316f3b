//! An in-memory root CA that mints short-lived workload certificates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{CertError, CertificateProvider, WorkloadCertificate};
use crate::identity::Identity;

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

    #[test]
    fn refuses_other_trust_domains() {
        let ca = LocalCa::new("cluster.local").expect("ca");
        let err = ca
            .certificate(&Identity::new("other.domain", "a", "b"))
            .expect_err("foreign");
        assert!(matches!(err, CertError::ForeignTrustDomain { .. }), "{err}");
    }
}
