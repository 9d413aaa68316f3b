//! Certificate resolvers: ask the provider on every handshake (so rotation takes effect) and
//! reuse the parsed signing key while the provider returns the same certificate.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::warn;

use crate::certs::{CertificateProvider, WorkloadCertificate};
use crate::identity::Identity;

struct Parsed {
    source: Arc<WorkloadCertificate>,
    key: Arc<CertifiedKey>,
}

pub(crate) struct CertResolver {
    provider: Arc<dyn CertificateProvider>,
    identity: Identity,
    cache: ArcSwapOption<Parsed>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    pub(crate) fn new(provider: Arc<dyn CertificateProvider>, identity: Identity) -> Self {
        CertResolver {
            provider,
            identity,
            cache: ArcSwapOption::empty(),
        }
    }

    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        let cert = match self.provider.certificate(&self.identity) {
            Ok(cert) => cert,
            Err(e) => {
                warn!(identity = %self.identity, error = %e, "no certificate for handshake");
                return None;
            }
        };
        if let Some(cached) = self.cache.load().as_ref()
            && Arc::ptr_eq(&cached.source, &cert)
        {
            return Some(cached.key.clone());
        }
        let provider = crate::tls::crypto_provider();
        match CertifiedKey::from_der(cert.chain.clone(), cert.key.clone_key(), &provider) {
            Ok(key) => {
                let key = Arc::new(key);
                self.cache.store(Some(Arc::new(Parsed {
                    source: cert,
                    key: key.clone(),
                })));
                Some(key)
            }
            Err(e) => {
                warn!(identity = %self.identity, error = %e, "unusable certificate or key");
                None
            }
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
