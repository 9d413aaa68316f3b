//! Certificates from Istio's CA (istiod, or anything that speaks its API): gRPC
//! `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS, authenticated with the
//! pod's projected service-account token. The key is generated here and never leaves the
//! process; the CA signs a CSR. A ztunnel asks on behalf of the pods of its node
//! (`ImpersonatedIdentity`); a waypoint asks for itself. Certificates are renewed at half their
//! life; until a renewal succeeds the current certificate keeps serving.
//!
//! [`CertificateProvider::certificate`] is called on every handshake and must not wait: it
//! serves what is cached, and starts a fetch (or a renewal) in the background when there is
//! none (or it is due). [`CertificateProvider::prepare`] waits for one, so a proxy is ready
//! only once it holds the certificates it presents.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::{CertError, CertificateProvider, Mismatch, WorkloadCertificate, x509};
use crate::identity::Identity;

/// The gRPC method Istio's proxies call.
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";
/// After a failed fetch, how long handshakes wait before starting another (`prepare` does not).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How long a failure is remembered once its back-off has ended, if nobody tries again.
const FORGET_FAILURE_AFTER: Duration = Duration::from_secs(60);

/// The metadata key under which a ztunnel names the pod it asks for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// `IstioCertificateRequest` (istio/api `security/v1alpha1/ca.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// The CSR, PEM.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime, seconds.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `IstioCertificateResponse`: the leaf first, then its chain up to the root, PEM each.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// Where the CA is and how to talk to it.
#[derive(Clone, Debug)]
pub struct IstioCaConfig {
    /// `host:port` (Istio: `CA_ADDRESS`, `istiod.istio-system.svc:15012`).
    pub address: String,
    /// The name the CA's TLS certificate carries (the host part of the address by default).
    pub server_name: String,
    /// Roots the CA's TLS certificate chains to (Istio: `istio-ca-root-cert`); trusted as the
    /// mesh's roots too, with the roots the CA's answers end with.
    pub roots: Vec<CertificateDer<'static>>,
    /// The projected service-account token (audience `istio-ca`), read for every request so
    /// that its rotation is followed.
    pub token_file: PathBuf,
    pub trust_domain: String,
    /// Ask on behalf of other identities (a ztunnel) rather than only for the token's own.
    pub impersonate: bool,
    /// Requested certificate lifetime (Istio's default: 24 h).
    pub lifetime: Duration,
}

struct Cached {
    cert: Arc<WorkloadCertificate>,
    renew_at: SystemTime,
}

#[derive(Default)]
struct State {
    cached: HashMap<Identity, Cached>,
    /// Identities with a fetch under way, and who waits for it.
    fetching: HashMap<Identity, Arc<Notify>>,
    /// The last failure per identity (for `prepare` to report) and when a handshake may
    /// start another fetch (so an outage is not met with a fetch per handshake).
    failed: HashMap<Identity, (String, SystemTime)>,
    /// Roots the CA's answers ended with.
    issued_roots: Vec<CertificateDer<'static>>,
}

impl State {
    /// Forgets certificates that have expired (one in use is renewed at half its life, so an
    /// expired one is no pod's any more) and failures nobody has retried for a minute since
    /// their back-off ended: the state holds the identities in use, not every one ever seen.
    fn forget_unused(&mut self, now: SystemTime) {
        self.cached.retain(|_, c| now < c.cert.not_after);
        (self.failed).retain(|_, (_, retry_at)| now < *retry_at + FORGET_FAILURE_AFTER);
    }
}

/// A [`CertificateProvider`] backed by Istio's CA.
pub struct IstioCa {
    /// Itself, for the fetches it spawns.
    me: std::sync::Weak<IstioCa>,
    config: IstioCaConfig,
    channel: tonic::transport::Channel,
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
}

impl std::fmt::Debug for IstioCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioCa")
            .field("address", &self.config.address)
            .field("trust_domain", &self.config.trust_domain)
            .finish_non_exhaustive()
    }
}

impl IstioCa {
    /// A client of the CA at `config.address` (connected lazily; call from a tokio runtime).
    pub fn new(config: IstioCaConfig) -> Result<Arc<Self>, CertError> {
        let invalid = |reason: String| CertError::Invalid {
            path: PathBuf::from(&config.address),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for root in &config.roots {
            (roots.add(root.clone())).map_err(|e| invalid(format!("unusable CA root: {e}")))?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![crate::tls::ALPN_H2.to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|e| invalid(format!("server name {:?}: {e}", config.server_name)))?;
        let address = config.address.clone();
        // gRPC over our own TLS stream (ALPN h2), so the CA's roots are exactly the ones given.
        let connector = tower::service_fn(move |_: http::Uri| {
            let (tls, server_name, address) = (tls.clone(), server_name.clone(), address.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let stream = tls.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", config.address))
                .map_err(|e| invalid(e.to_string()))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10));
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| invalid(format!("needs a tokio runtime: {e}")))?;
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Arc::new_cyclic(|me| IstioCa {
            me: me.clone(),
            channel,
            runtime,
            config,
            state: Mutex::new(State::default()),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a fetch for `id` unless one is under way; returns what its end notifies.
    fn start_fetch(&self, id: &Identity) -> Arc<Notify> {
        let mut state = self.state();
        if let Some(waiting) = state.fetching.get(id) {
            return waiting.clone();
        }
        let done = Arc::new(Notify::new());
        let Some(ca) = self.me.upgrade() else {
            return done; // being dropped: nothing to fetch for
        };
        state.fetching.insert(id.clone(), done.clone());
        let id = id.clone();
        self.runtime.spawn(async move {
            let result = ca.fetch(&id).await;
            let mut state = ca.state();
            state.forget_unused(SystemTime::now());
            match result {
                Ok((cert, root)) => {
                    let life =
                        (cert.not_after.duration_since(SystemTime::now())).unwrap_or_default();
                    let renew_at = SystemTime::now() + life / 2;
                    debug!(identity = %id, ?life, "certificate from the CA");
                    state.failed.remove(&id);
                    if !state.issued_roots.contains(&root) {
                        state.issued_roots.push(root);
                    }
                    state.cached.insert(id.clone(), Cached { cert, renew_at });
                }
                Err(e) => {
                    warn!(identity = %id, error = %e, "the CA did not issue a certificate");
                    let retry_at = SystemTime::now() + RETRY_AFTER_FAILURE;
                    state.failed.insert(id.clone(), (e.to_string(), retry_at));
                }
            }
            if let Some(done) = state.fetching.remove(&id) {
                done.notify_waiters();
            }
        });
        done
    }

    /// One CreateCertificate call for `id`, its answer checked: the leaf names `id`, fits
    /// the key made here, is valid now, and chains to the root the answer ends with.
    async fn fetch(
        &self,
        id: &Identity,
    ) -> Result<(Arc<WorkloadCertificate>, CertificateDer<'static>), String> {
        if id.trust_domain != self.config.trust_domain {
            return Err(format!(
                "outside trust domain {:?}",
                self.config.trust_domain
            ));
        }
        let (csr, key) = csr(id).map_err(|e| format!("making the CSR: {e}"))?;
        let token = std::fs::read_to_string(&self.config.token_file)
            .map_err(|e| format!("reading {}: {e}", self.config.token_file.display()))?;
        let metadata = self.config.impersonate.then(|| prost_types::Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(id.to_string())),
                },
            )]),
        });
        let lifetime = i64::try_from(self.config.lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: lifetime,
            metadata,
        });
        let bearer = format!("Bearer {}", token.trim());
        let bearer = bearer
            .parse()
            .map_err(|_| "the token is not a header value")?;
        request.metadata_mut().insert("authorization", bearer);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.config.address))?;
        let codec = tonic_prost::ProstCodec::default();
        let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
        let answer: tonic::Response<IstioCertificateResponse> =
            grpc.unary(request, path, codec).await.map_err(|status| {
                let (address, code) = (&self.config.address, status.code());
                format!(
                    "the CA at {address} answered {code:?}: {}",
                    status.message()
                )
            })?;
        issued(id, key, &answer.into_inner().cert_chain)
    }
}

/// A fresh P-256 key and a CSR for `id` (one URI SAN, no subject, as Istio's proxies send).
fn csr(id: &Identity) -> Result<(String, PrivateKeyDer<'static>), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((csr, der))
}

/// Checks a CA's answer for `id` (pure): the certificate and the root it chains to.
fn issued(
    id: &Identity,
    key: PrivateKeyDer<'static>,
    pems: &[String],
) -> Result<(Arc<WorkloadCertificate>, CertificateDer<'static>), String> {
    let mut certs = Vec::new();
    for pem in pems {
        let mut reader = pem.as_bytes();
        for cert in rustls_pemfile::certs(&mut reader) {
            certs.push(cert.map_err(|e| format!("bad PEM from the CA: {e}"))?);
        }
    }
    let Some(leaf) = certs.first() else {
        return Err("the CA answered no certificate".into());
    };
    let named = x509::unique_identity(leaf)?;
    if &named != id {
        return Err(format!("the CA issued a certificate for {named}, not {id}"));
    }
    let not_after = x509::not_after(leaf)?;
    if not_after <= SystemTime::now() {
        return Err(format!(
            "the CA issued a certificate for {id} that has expired"
        ));
    }
    // The last certificate is the root (Istio's answers end with it); a lone leaf has none.
    let (root, chain) = match certs.as_slice() {
        [_] => return Err("the CA answered no chain to a root".into()),
        [chain @ .., root] => (root.clone(), chain.to_vec()),
        [] => unreachable!("checked above"),
    };
    super::check_issued(&chain, &key, std::slice::from_ref(&root)).map_err(|m| match m {
        Mismatch::Key(e) | Mismatch::Root(e) | Mismatch::Chain(e) => e,
    })?;
    let cert = WorkloadCertificate {
        identity: id.clone(),
        chain,
        key: Arc::new(key),
        not_after,
    };
    Ok((Arc::new(cert), root))
}

impl CertificateProvider for IstioCa {
    fn certificate(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        let now = SystemTime::now();
        let (cached, backing_off) = {
            let state = self.state();
            let cached = state.cached.get(id).map(|c| (c.cert.clone(), c.renew_at));
            (
                cached,
                state
                    .failed
                    .get(id)
                    .is_some_and(|(_, retry_at)| now < *retry_at),
            )
        };
        match cached {
            Some((cert, renew_at)) if now < cert.not_after => {
                if now >= renew_at && !backing_off {
                    self.start_fetch(id);
                }
                Ok(cert)
            }
            _ => {
                if !backing_off {
                    self.start_fetch(id);
                }
                Err(CertError::Pending {
                    identity: Box::new(id.clone()),
                })
            }
        }
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        let state = self.state();
        let mut roots = self.config.roots.clone();
        roots.extend(
            state
                .issued_roots
                .iter()
                .filter(|r| !self.config.roots.contains(r))
                .cloned(),
        );
        roots
    }

    fn trust_domain(&self) -> &str {
        &self.config.trust_domain
    }

    fn prepare<'a>(&'a self, id: &'a Identity) -> BoxFuture<'a, Result<(), CertError>> {
        Box::pin(async move {
            loop {
                if self.certificate_ready(id) {
                    return Ok(());
                }
                let done = self.start_fetch(id);
                let waiting = done.notified();
                tokio::pin!(waiting);
                waiting.as_mut().enable();
                let under_way =
                    (self.state().fetching.get(id)).is_some_and(|d| Arc::ptr_eq(d, &done));
                if under_way {
                    waiting.await;
                }
                if self.certificate_ready(id) {
                    return Ok(());
                }
                if let Some((reason, _)) = self.state().failed.get(id).cloned() {
                    return Err(CertError::Unavailable {
                        identity: Box::new(id.clone()),
                        reason,
                    });
                }
            }
        })
    }
}

impl IstioCa {
    fn certificate_ready(&self, id: &Identity) -> bool {
        let state = self.state();
        (state.cached.get(id)).is_some_and(|c| SystemTime::now() < c.cert.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    fn cached(account: &str, not_after: SystemTime) -> (Identity, Cached) {
        let identity = Identity::new("cluster.local", "default", account);
        let cert = WorkloadCertificate {
            identity: identity.clone(),
            chain: Vec::new(),
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(Vec::new()))),
            not_after,
        };
        let renew_at = not_after;
        (
            identity,
            Cached {
                cert: Arc::new(cert),
                renew_at,
            },
        )
    }

    #[test]
    fn expired_certificates_and_stale_failures_are_forgotten() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let mut state = State::default();
        state
            .cached
            .extend([cached("live", now + hour), cached("expired", now - hour)]);
        let failed = |account: &str, retry_at: SystemTime| {
            let identity = Identity::new("cluster.local", "default", account);
            (identity, ("CA down".to_string(), retry_at))
        };
        state.failed.extend([
            failed("backing-off", now + RETRY_AFTER_FAILURE),
            failed("just-ended", now - Duration::from_secs(30)),
            failed("long-ago", now - hour),
        ]);
        state.forget_unused(now);
        let accounts = |ids: Vec<&Identity>| {
            let mut names: Vec<String> = ids.iter().map(|id| id.service_account.clone()).collect();
            names.sort();
            names
        };
        assert_eq!(accounts(state.cached.keys().collect()), ["live"]);
        assert_eq!(
            accounts(state.failed.keys().collect()),
            ["backing-off", "just-ended"]
        );
    }
}
