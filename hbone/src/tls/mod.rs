//! rustls configurations for HBONE: TLS 1.3 only, AES-GCM suites, ALPN `h2`, no SNI, mutual
//! authentication by SPIFFE identity (chain to the mesh roots; DNS names are ignored).

mod resolve;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::CommonState;
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};

use crate::certs::{CertificateProvider, x509};
use crate::error::HboneError;
use crate::identity::Identity;

use resolve::CertResolver;
use verify::{SpiffeClientVerifier, SpiffeServerVerifier};

/// The ALPN protocol both sides offer.
pub const ALPN_H2: &[u8] = b"h2";

/// ring, restricted to TLS13_AES_256_GCM_SHA384 and TLS13_AES_128_GCM_SHA256.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = vec![TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256];
            Arc::new(provider)
        })
        .clone()
}

fn config_error(e: rustls::Error) -> HboneError {
    HboneError::Config(format!("rustls: {e}"))
}

/// Server side of HBONE: presents `provider.certificate(identity)` (resolved per handshake, so
/// rotation works) and requires a client certificate that chains to `provider.roots()` and
/// carries a SPIFFE id in `provider.trust_domain()`.
pub fn server_config(
    provider: Arc<dyn CertificateProvider>,
    identity: Identity,
) -> Result<Arc<rustls::ServerConfig>, HboneError> {
    provider.certificate(&identity)?; // fail early on a misconfigured identity
    let resolver = Arc::new(CertResolver::new(provider.clone(), identity));
    let verifier = Arc::new(SpiffeClientVerifier::new(provider));
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Every connection is fully authenticated; no resumption that would skip the checks.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client side of HBONE: presents `identity`'s certificate and accepts a server whose chain ends
/// at `provider.roots()`, with EKU serverAuth and a URI SAN equal to one of `expected`.
pub fn client_config(
    provider: Arc<dyn CertificateProvider>,
    identity: Identity,
    expected: Vec<Identity>,
) -> Result<Arc<rustls::ClientConfig>, HboneError> {
    if expected.is_empty() {
        return Err(HboneError::Config(
            "no expected server identity for HBONE client".into(),
        ));
    }
    provider.certificate(&identity)?;
    let resolver = Arc::new(CertResolver::new(provider.clone(), identity));
    let verifier = Arc::new(SpiffeServerVerifier::new(provider, expected));
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The peer's SPIFFE identity, from the single `spiffe://` URI SAN of its leaf certificate.
pub fn peer_identity(conn: &CommonState) -> Result<Identity, HboneError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| HboneError::PeerIdentity("peer presented no certificate".into()))?;
    x509::unique_identity(leaf).map_err(HboneError::PeerIdentity)
}

/// The peer identity a client verified: the first URI SAN that is one of `expected`.
pub(crate) fn verified_server_identity(
    conn: &CommonState,
    expected: &[Identity],
) -> Result<Identity, HboneError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| HboneError::PeerIdentity("server presented no certificate".into()))?;
    let ids = x509::spiffe_identities(leaf).map_err(HboneError::PeerIdentity)?;
    ids.into_iter()
        .find(|id| expected.contains(id))
        .ok_or_else(|| HboneError::PeerIdentity("server identity is not an expected one".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::LocalCa;

    #[test]
    fn client_config_needs_an_expected_identity() {
        let ca: Arc<dyn CertificateProvider> = Arc::new(LocalCa::new("cluster.local").expect("ca"));
        let me = Identity::new("cluster.local", "a", "b");
        let err = client_config(ca.clone(), me.clone(), vec![]).expect_err("empty expected");
        assert!(matches!(err, HboneError::Config(_)), "{err}");
        let config = client_config(ca, me.clone(), vec![me]).expect("config");
        assert!(!config.enable_sni);
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn server_config_fails_early_for_an_unavailable_identity() {
        let ca: Arc<dyn CertificateProvider> = Arc::new(LocalCa::new("cluster.local").expect("ca"));
        let foreign = Identity::new("other.domain", "a", "b");
        let err = server_config(ca, foreign).expect_err("foreign identity");
        assert!(matches!(err, HboneError::Certificate(_)), "{err}");
    }

    #[test]
    fn provider_offers_only_tls13_aes_gcm() {
        let suites: Vec<_> = crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            suites,
            vec![
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            ]
        );
    }
}
