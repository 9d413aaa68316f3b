//! Certificates from Istio's CA API, against a CA in the test that speaks it for real: gRPC
//! `IstioCertificateService/CreateCertificate` over TLS (ALPN h2), a bearer token, CSRs signed
//! as istiod signs them; and the CA's bad days: another identity, an expired certificate, a
//! CA that is down and comes back, renewal at half life.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_hbone::certs::istio_ca::{
    CREATE_CERTIFICATE, IMPERSONATED_IDENTITY, IstioCertificateRequest, IstioCertificateResponse,
};
use mesh_hbone::{CertificateProvider, Identity, IstioCa, IstioCaConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, SanType,
};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SERVER_NAME: &str = "istiod.istio-system.svc";
const TOKEN: &str = "projected-token";

/// How the CA answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// Signs the CSR for what it asks, for `lifetime`.
    Sign { lifetime: Duration },
    /// Signs for another identity.
    Other,
    /// Signs a certificate that expired an hour ago.
    Expired,
}

/// What the CA saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    authorization: Option<String>,
    impersonated: Option<String>,
    validity: i64,
}

struct FakeCa {
    root: CertificateDer<'static>,
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
    answer: Mutex<Answer>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeCa {
    fn new() -> Arc<Self> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "cluster.local");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).expect("root");
        Arc::new(FakeCa {
            root: root.der().clone(),
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
            answer: Mutex::new(Answer::Sign {
                lifetime: Duration::from_secs(3600),
            }),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Signs as istiod does: the CSR's key, its SAN; the lifetime and identity as told.
    fn sign(&self, request: &IstioCertificateRequest) -> Result<Vec<String>, tonic::Status> {
        let mut csr = CertificateSigningRequestParams::from_pem(&request.csr)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let now = SystemTime::now();
        let (not_before, not_after) = match *self.answer.lock().expect("lock") {
            Answer::Sign { lifetime } => (now - Duration::from_secs(60), now + lifetime),
            Answer::Other => {
                let other = "spiffe://cluster.local/ns/default/sa/other";
                csr.params.subject_alt_names = vec![SanType::URI(other.try_into().expect("uri"))];
                (
                    now - Duration::from_secs(60),
                    now + Duration::from_secs(3600),
                )
            }
            Answer::Expired => (
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            ),
        };
        csr.params.not_before = not_before.into();
        csr.params.not_after = not_after.into();
        let leaf = csr
            .signed_by(&self.issuer)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(vec![leaf.pem(), self.root_pem.clone()])
    }
}

/// The CA's gRPC method.
#[derive(Clone)]
struct CreateCertificate(Arc<FakeCa>);

impl tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let authorization = (request.metadata().get("authorization"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let request = request.into_inner();
        let impersonated = request.metadata.as_ref().and_then(|m| {
            match m.fields.get(IMPERSONATED_IDENTITY)?.kind.as_ref()? {
                prost_types::value::Kind::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        });
        self.0.seen.lock().expect("lock").push(Seen {
            authorization: authorization.clone(),
            impersonated,
            validity: request.validity_duration,
        });
        let answer = if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            Err(tonic::Status::unauthenticated("no valid token"))
        } else {
            self.0
                .sign(&request)
                .map(|cert_chain| tonic::Response::new(IstioCertificateResponse { cert_chain }))
        };
        std::future::ready(answer)
    }
}

/// Serves the CA on `listener` over TLS, as istiod serves 15012.
async fn serve(ca: Arc<FakeCa>, listener: TcpListener, stop: CancellationToken) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
    params.distinguished_name = DistinguishedName::new();
    let cert = params.signed_by(&key, &ca.issuer).expect("server cert");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = mesh_hbone::tls::crypto_provider();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted.expect("accept"),
            () = stop.cancelled() => return,
        };
        let (acceptor, ca) = (acceptor.clone(), ca.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let method = CreateCertificate(ca.clone());
                async move {
                    assert_eq!(request.uri().path(), CREATE_CERTIFICATE);
                    let codec = tonic_prost::ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok::<_, std::convert::Infallible>(grpc.unary(method, request).await)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Setup {
    ca: Arc<FakeCa>,
    address: SocketAddr,
    token: tempfile::NamedTempFile,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup(port: u16) -> Setup {
    let ca = FakeCa::new();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let stop = CancellationToken::new();
    let listener = TcpListener::bind(address).await.expect("bind the CA");
    tokio::spawn(serve(ca.clone(), listener, stop.clone()));
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), format!("{TOKEN}\n")).expect("write token");
    Setup {
        ca,
        address,
        token,
        stop,
    }
}

fn config(s: &Setup, impersonate: bool) -> IstioCaConfig {
    IstioCaConfig {
        address: s.address.to_string(),
        server_name: SERVER_NAME.into(),
        roots: vec![s.ca.root.clone()],
        token_file: PathBuf::from(s.token.path()),
        trust_domain: "cluster.local".into(),
        impersonate,
        lifetime: Duration::from_secs(24 * 3600),
    }
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

#[tokio::test]
async fn a_waypoint_gets_its_own_certificate_and_a_ztunnel_its_pods() {
    let s = setup(25070).await;
    let waypoint = IstioCa::new(config(&s, false)).expect("client");
    // Nothing yet: a handshake now is refused, and starts the fetch.
    let pending = waypoint
        .certificate(&id("waypoint"))
        .expect_err("not fetched yet");
    assert!(pending.to_string().contains("from the CA yet"), "{pending}");
    waypoint.prepare(&id("waypoint")).await.expect("issued");
    let cert = waypoint.certificate(&id("waypoint")).expect("cached");
    assert_eq!(cert.identity, id("waypoint"));
    assert_eq!(cert.chain.len(), 1, "the leaf; the root is a trust anchor");
    assert_eq!(waypoint.roots(), vec![s.ca.root.clone()]);
    let seen = s.ca.seen();
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer projected-token")
    );
    assert_eq!(seen[0].impersonated, None, "a waypoint asks for itself");
    assert_eq!(seen[0].validity, 24 * 3600);

    let ztunnel = IstioCa::new(config(&s, true)).expect("client");
    ztunnel.prepare(&id("reviews")).await.expect("issued");
    let seen = s.ca.seen();
    let last = seen.last().expect("a request");
    let reviews = "spiffe://cluster.local/ns/default/sa/reviews";
    assert_eq!(last.impersonated.as_deref(), Some(reviews));
    assert_eq!(
        ztunnel
            .certificate(&id("reviews"))
            .expect("cached")
            .identity,
        id("reviews")
    );
}

#[tokio::test]
async fn bad_answers_are_refused_and_a_ca_that_comes_back_is_used() {
    let s = setup(25071).await;
    let client = IstioCa::new(config(&s, true)).expect("client");
    s.ca.set(Answer::Other);
    let error = client
        .prepare(&id("web"))
        .await
        .expect_err("another identity");
    let text = error.to_string();
    assert!(
        text.contains("sa/other") && text.contains("sa/web"),
        "{text}"
    );
    // After a failure, handshakes do not each ask again (prepare does).
    let asked = s.ca.seen().len();
    for _ in 0..3 {
        assert!(client.certificate(&id("web")).is_err());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.ca.seen().len(),
        asked,
        "no fetch per handshake during an outage"
    );
    s.ca.set(Answer::Expired);
    let error = client.prepare(&id("web")).await.expect_err("expired");
    assert!(error.to_string().contains("expired"), "{error}");
    let foreign = Identity::new("evil.example", "default", "web");
    let error = client
        .prepare(&foreign)
        .await
        .expect_err("foreign trust domain");
    assert!(error.to_string().contains("trust domain"), "{error}");
    assert!(
        client.certificate(&id("web")).is_err(),
        "nothing bad was cached"
    );

    // A wrong token is refused by the CA, and said so.
    std::fs::write(s.token.path(), "stolen").expect("write");
    s.ca.set(Answer::Sign {
        lifetime: Duration::from_secs(3600),
    });
    let error = client.prepare(&id("web")).await.expect_err("bad token");
    assert!(error.to_string().contains("no valid token"), "{error}");
    std::fs::write(s.token.path(), TOKEN).expect("write");
    client
        .prepare(&id("web"))
        .await
        .expect("the token file is read again");

    // A CA that is down: refused, then served once it is back.
    let down = setup_down(25072);
    let client = IstioCa::new(config(&down, true)).expect("client");
    let error = client.prepare(&id("web")).await.expect_err("CA down");
    let text = error.to_string();
    assert!(
        text.contains("127.0.0.1:25072 answered Unavailable"),
        "{text}"
    );
    let listener = TcpListener::bind(down.address).await.expect("bind");
    tokio::spawn(serve(down.ca.clone(), listener, down.stop.clone()));
    let mut attempts = 0;
    while client.prepare(&id("web")).await.is_err() {
        attempts += 1;
        assert!(attempts < 50, "the CA came back but was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CA that is not listening yet (its listener is bound later by the test).
fn setup_down(port: u16) -> Setup {
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), TOKEN).expect("write token");
    Setup {
        ca: FakeCa::new(),
        address: format!("127.0.0.1:{port}").parse().expect("addr"),
        token,
        stop: CancellationToken::new(),
    }
}

/// Past half its life a certificate is renewed in the background; the old one serves until
/// the new one is in.
#[tokio::test]
async fn certificates_are_renewed_at_half_life() {
    let s = setup(25073).await;
    s.ca.set(Answer::Sign {
        lifetime: Duration::from_secs(4),
    });
    let client = IstioCa::new(config(&s, false)).expect("client");
    client.prepare(&id("waypoint")).await.expect("issued");
    let first = client.certificate(&id("waypoint")).expect("cached");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let still = client.certificate(&id("waypoint")).expect("still valid");
    assert!(Arc::ptr_eq(&first, &still), "served while the renewal runs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = client.certificate(&id("waypoint")).expect("valid");
        if !Arc::ptr_eq(&first, &now) {
            assert!(now.not_after > first.not_after);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.ca.seen().len(), 2, "one renewal, not one per handshake");
}
