//! Reading the facts we need out of X.509 certificates: SPIFFE URI SANs and expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

use crate::identity::Identity;

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("malformed certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing data after certificate".into());
    }
    Ok(cert)
}

/// Every `spiffe://` URI SAN of the certificate, parsed. A malformed SPIFFE URI is an error;
/// URIs with other schemes are ignored.
pub(crate) fn spiffe_identities(der: &[u8]) -> Result<Vec<Identity>, String> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri),
            _ => None,
        })
        .map(|uri| uri.parse::<Identity>().map_err(|e| e.to_string()))
        .collect()
}

/// The single SPIFFE identity a workload certificate must carry.
pub(crate) fn unique_identity(der: &[u8]) -> Result<Identity, String> {
    let mut ids = spiffe_identities(der)?;
    match ids.len() {
        1 => Ok(ids.remove(0)),
        0 => Err("certificate has no spiffe:// URI SAN".into()),
        n => Err(format!(
            "certificate has {n} spiffe:// URI SANs, expected one"
        )),
    }
}

/// The certificate's notAfter.
pub(crate) fn not_after(der: &[u8]) -> Result<SystemTime, String> {
    let cert = parse(der)?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| format!("notAfter before 1970: {secs}"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The certificate's SubjectPublicKeyInfo (DER), to check a key belongs to it.
pub(crate) fn public_key_info(der: &[u8]) -> Result<Vec<u8>, String> {
    Ok(parse(der)?.tbs_certificate.subject_pki.raw.to_vec())
}

/// Whether the certificate may sign others (basicConstraints CA).
pub(crate) fn is_ca(der: &[u8]) -> Result<bool, String> {
    let cert = parse(der)?;
    let constraints = cert.basic_constraints().map_err(|e| e.to_string())?;
    Ok(constraints.is_some_and(|c| c.value.ca))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with_sans(sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().expect("ia5"))
    }

    #[test]
    fn finds_the_single_spiffe_uri() {
        let der = cert_with_sans(vec![
            SanType::DnsName("example.com".try_into().expect("ia5")),
            uri("https://example.com/"),
            uri("spiffe://cluster.local/ns/a/sa/b"),
        ]);
        assert_eq!(
            unique_identity(&der).expect("one id"),
            Identity::new("cluster.local", "a", "b")
        );
        assert!(not_after(&der).expect("time") > SystemTime::now());
    }

    #[test]
    fn rejects_missing_duplicate_and_malformed_spiffe_uris() {
        let none = cert_with_sans(vec![SanType::DnsName("x.example".try_into().expect("ia5"))]);
        assert!(unique_identity(&none).is_err());
        let two = cert_with_sans(vec![
            uri("spiffe://cluster.local/ns/a/sa/b"),
            uri("spiffe://cluster.local/ns/a/sa/c"),
        ]);
        assert_eq!(spiffe_identities(&two).expect("two").len(), 2);
        assert!(unique_identity(&two).is_err());
        let bad = cert_with_sans(vec![uri("spiffe://cluster.local/bogus")]);
        assert!(spiffe_identities(&bad).is_err());
        assert!(spiffe_identities(b"not a certificate").is_err());
    }
}
