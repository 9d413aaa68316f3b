//! Peer verification by SPIFFE identity: the chain must end at the provider's current roots;
//! names are SPIFFE URI SANs, never DNS names.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::certs::{CertificateProvider, x509};
use crate::identity::Identity;

/// Something derived from the trust anchors, rebuilt only when the provider's roots change.
struct Derived<T> {
    roots: Vec<CertificateDer<'static>>,
    value: T,
}

struct RootsCache<T> {
    provider: Arc<dyn CertificateProvider>,
    cache: ArcSwapOption<Derived<T>>,
    build: fn(&[CertificateDer<'static>]) -> Result<T, rustls::Error>,
}

impl<T: Clone> RootsCache<T> {
    fn new(
        provider: Arc<dyn CertificateProvider>,
        build: fn(&[CertificateDer<'static>]) -> Result<T, rustls::Error>,
    ) -> Self {
        RootsCache {
            provider,
            cache: ArcSwapOption::empty(),
            build,
        }
    }

    fn get(&self) -> Result<T, rustls::Error> {
        let roots = self.provider.roots();
        if let Some(cached) = self.cache.load().as_ref()
            && cached.roots == roots
        {
            return Ok(cached.value.clone());
        }
        let value = (self.build)(&roots)?;
        self.cache.store(Some(Arc::new(Derived {
            roots,
            value: value.clone(),
        })));
        Ok(value)
    }
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, rustls::Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    if store.is_empty() {
        return Err(rustls::Error::General("no mesh root certificates".into()));
    }
    Ok(Arc::new(store))
}

fn client_chain_verifier(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    WebPkiClientVerifier::builder_with_provider(root_store(roots)?, crate::tls::crypto_provider())
        .build()
        .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    crate::tls::crypto_provider().signature_verification_algorithms
}

fn identities(end_entity: &CertificateDer<'_>) -> Result<Vec<Identity>, rustls::Error> {
    x509::spiffe_identities(end_entity).map_err(|_| CertificateError::BadEncoding.into())
}

/// Whether a client's SPIFFE ids admit it to a server of `trust_domain`: exactly one SPIFFE id,
/// in the same trust domain.
pub(crate) fn client_admitted(ids: &[Identity], trust_domain: &str) -> bool {
    matches!(ids, [id] if id.trust_domain == trust_domain)
}

/// Whether a server's SPIFFE ids include one the client expects.
pub(crate) fn server_expected(ids: &[Identity], expected: &[Identity]) -> bool {
    ids.iter().any(|id| expected.contains(id))
}

/// Server side: verifies client certificates.
pub(crate) struct SpiffeClientVerifier {
    chain: RootsCache<Arc<dyn ClientCertVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("trust_domain", &self.chain.provider.trust_domain())
            .finish_non_exhaustive()
    }
}

impl SpiffeClientVerifier {
    pub(crate) fn new(provider: Arc<dyn CertificateProvider>) -> Self {
        SpiffeClientVerifier {
            chain: RootsCache::new(provider, client_chain_verifier),
            algorithms: algorithms(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain
            .get()?
            .verify_client_cert(end_entity, intermediates, now)?;
        let ids = identities(end_entity)?;
        if !client_admitted(&ids, self.chain.provider.trust_domain()) {
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Client side: verifies the server certificate against the expected identities.
pub(crate) struct SpiffeServerVerifier {
    roots: RootsCache<Arc<RootCertStore>>,
    expected: Vec<Identity>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl SpiffeServerVerifier {
    pub(crate) fn new(provider: Arc<dyn CertificateProvider>, expected: Vec<Identity>) -> Self {
        SpiffeServerVerifier {
            roots: RootsCache::new(provider, root_store),
            expected,
            algorithms: algorithms(),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let store = self.roots.get()?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &store,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if !server_expected(&identities(end_entity)?, &self.expected) {
            return Err(CertificateError::NotValidForName.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(td: &str, sa: &str) -> Identity {
        Identity::new(td, "default", sa)
    }

    #[test]
    fn client_admission_requires_one_id_in_the_trust_domain() {
        assert!(client_admitted(
            &[id("cluster.local", "a")],
            "cluster.local"
        ));
        assert!(!client_admitted(
            &[id("other.domain", "a")],
            "cluster.local"
        ));
        assert!(!client_admitted(&[], "cluster.local"));
        assert!(!client_admitted(
            &[id("cluster.local", "a"), id("cluster.local", "b")],
            "cluster.local"
        ));
    }

    #[test]
    fn server_must_carry_an_expected_id() {
        let expected = [id("cluster.local", "a"), id("cluster.local", "b")];
        assert!(server_expected(&[id("cluster.local", "b")], &expected));
        assert!(!server_expected(&[id("cluster.local", "c")], &expected));
        assert!(!server_expected(&[], &expected));
    }
}
