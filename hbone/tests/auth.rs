//! Mutual TLS: negotiated parameters and who is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_hbone::{
    CertificateProvider, HboneError, Identity, InboundConnect, LocalCa, WorkloadCertificate,
};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::{CipherSuite, ProtocolVersion};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_negotiates_tls13_aes_gcm_and_h2_without_sni() {
    let ca = ca();
    let server_tls = mesh_hbone::server_config(ca.clone(), server_id()).expect("server config");
    let client_tls =
        mesh_hbone::client_config(ca, client_id(), vec![server_id()]).expect("client config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tokio_rustls::TlsAcceptor::from(server_tls)
            .accept(tcp)
            .await
            .expect("server handshake")
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let client = tokio_rustls::TlsConnector::from(client_tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("client handshake");
    let server = accepting.await.expect("server task");

    let (_, client_conn) = client.get_ref();
    let (_, server_conn) = server.get_ref();
    for conn in [&**client_conn as &rustls::CommonState, &**server_conn] {
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        let suite = conn.negotiated_cipher_suite().expect("suite").suite();
        assert!(
            matches!(
                suite,
                CipherSuite::TLS13_AES_256_GCM_SHA384 | CipherSuite::TLS13_AES_128_GCM_SHA256
            ),
            "{suite:?}"
        );
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    }
    assert_eq!(server_conn.server_name(), None, "client must not send SNI");
    assert_eq!(
        mesh_hbone::peer_identity(client_conn).expect("server id"),
        server_id()
    );
    assert_eq!(
        mesh_hbone::peer_identity(server_conn).expect("client id"),
        client_id()
    );
}

/// A client with `cert` that trusts the mesh root (so only the server can refuse it).
fn client_with(cert: WorkloadCertificate, mesh: &LocalCa) -> Arc<dyn CertificateProvider> {
    let trust_domain = cert.identity.trust_domain.clone();
    Arc::new(StaticProvider {
        cert: Arc::new(cert),
        roots: mesh.roots(),
        trust_domain,
    })
}

fn self_signed(id: &Identity) -> WorkloadCertificate {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().expect("ia5"))];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).expect("cert");
    WorkloadCertificate {
        identity: id.clone(),
        chain: vec![cert.der().clone()],
        key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ))),
        not_after: std::time::SystemTime::now() + Duration::from_secs(3600),
    }
}

fn other_domain_client() -> (LocalCa, WorkloadCertificate) {
    let other = LocalCa::new("other.domain").expect("other CA");
    let id = Identity::new("other.domain", "default", "client");
    let cert = other.mint(&id).expect("cert");
    (other, cert)
}

async fn connect_as(
    provider: Arc<dyn CertificateProvider>,
    source: Identity,
    addr: std::net::SocketAddr,
) -> Result<mesh_hbone::HboneStream, HboneError> {
    let mut key = key(addr);
    key.source = source;
    pool(provider).connect(&key, request("10.0.0.1:80")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_another_trust_domain_is_refused() {
    let mesh = ca();
    let server = start_server(mesh.clone(), server_id(), echo).await;
    let (_other, cert) = other_domain_client();
    let id = cert.identity.clone();
    let err = connect_as(client_with(cert, &mesh), id, server.addr)
        .await
        .expect_err("refused");
    assert!(matches!(err, HboneError::Tls { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_trust_domain_is_refused_even_with_a_trusted_chain() {
    let mesh = ca();
    let (other, cert) = other_domain_client();
    // The server trusts both roots: only the trust-domain rule can refuse the client.
    let server_provider = Arc::new(StaticProvider {
        cert: mesh.mint(&server_id()).map(Arc::new).expect("server cert"),
        roots: [mesh.roots(), other.roots()].concat(),
        trust_domain: TD.into(),
    });
    let server = start_server(server_provider, server_id(), echo).await;
    let id = cert.identity.clone();
    let err = connect_as(client_with(cert, &mesh), id, server.addr)
        .await
        .expect_err("refused");
    assert!(matches!(err, HboneError::Tls { .. }), "{err}");
    // Control: a client of the server's own trust domain gets through.
    let mut stream = connect_as(mesh.clone(), client_id(), server.addr)
        .await
        .expect("same trust domain");
    assert_eq!(round_trip(&mut stream, b"ok").await, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_client_certificate_is_refused() {
    let mesh = ca();
    let server = start_server(mesh.clone(), server_id(), echo).await;
    let err = connect_as(
        client_with(self_signed(&client_id()), &mesh),
        client_id(),
        server.addr,
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, HboneError::Tls { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_an_unexpected_identity_is_refused_by_the_client() {
    let mesh = ca();
    let server = start_server(mesh.clone(), server_id(), echo).await;
    let mut key = key(server.addr);
    key.expected = vec![Identity::new(TD, "default", "someone-else")];
    let err = pool(mesh)
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect_err("refused");
    assert!(matches!(err, HboneError::Tls { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peers_do_not_disturb_other_tunnels() {
    let mesh = ca();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let server = start_server(mesh.clone(), server_id(), move |c: InboundConnect| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        echo(c)
    })
    .await;
    let good_pool = pool(mesh.clone());
    let mut open = good_pool
        .connect(&key(server.addr), request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    open.write_all_and_check(b"before").await;

    let (_other, cert) = other_domain_client();
    let id = cert.identity.clone();
    assert!(
        connect_as(client_with(cert, &mesh), id, server.addr)
            .await
            .is_err()
    );
    let bad = client_with(self_signed(&client_id()), &mesh);
    assert!(connect_as(bad, client_id(), server.addr).await.is_err());
    // A peer that speaks garbage instead of TLS.
    let mut junk = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("tcp");
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("junk");
    drop(junk);

    open.write_all_and_check(b"after").await;
    let mut fresh = good_pool
        .connect(&key(server.addr), request("10.0.0.1:80"))
        .await
        .expect("new tunnel");
    assert_eq!(round_trip(&mut fresh, b"fresh").await, b"fresh");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

trait EchoCheck {
    async fn write_all_and_check(&mut self, data: &[u8]);
}

impl EchoCheck for mesh_hbone::HboneStream {
    async fn write_all_and_check(&mut self, data: &[u8]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.write_all(data).await.expect("write");
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(5), self.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(back, data);
    }
}
