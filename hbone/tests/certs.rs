//! Certificate providers: local CA rotation, file-based reload and rejection of bad updates.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_hbone::{
    CertError, CertificateProvider, FileCertificates, Identity, LocalCa, Pool, PoolConfig,
};
use rustls_pki_types::{CertificateDer, ServerName};

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "a synchronous test waits out a lifetime"
)]
fn local_ca_rotates_after_half_the_lifetime() {
    let ca = LocalCa::with_lifetime(TD, Duration::from_secs(2)).expect("ca");
    let id = server_id();
    let first = ca.certificate(&id).expect("cert");
    assert!(Arc::ptr_eq(&first, &ca.certificate(&id).expect("cached")));
    std::thread::sleep(Duration::from_millis(1100));
    let second = ca.certificate(&id).expect("rotated");
    assert_ne!(
        first.chain[0], second.chain[0],
        "a new certificate after > 1 s"
    );
    assert!(second.not_after > first.not_after);
    assert_eq!(second.identity, id);
}

/// The leaf a server presents on a fresh handshake.
async fn presented_leaf(
    server: Arc<dyn CertificateProvider>,
    server_identity: Identity,
    client: Arc<dyn CertificateProvider>,
) -> CertificateDer<'static> {
    let server_tls = mesh_hbone::server_config(server, server_identity.clone()).expect("server");
    let client_tls =
        mesh_hbone::client_config(client, client_id(), vec![server_identity]).expect("client");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tokio_rustls::TlsAcceptor::from(server_tls)
            .accept(tcp)
            .await
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(client_tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("handshake");
    let _ = accepting.await;
    tls.get_ref().1.peer_certificates().expect("certs")[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_takes_effect_on_the_next_handshake_without_a_new_config() {
    let ca = Arc::new(LocalCa::with_lifetime(TD, Duration::from_secs(2)).expect("ca"));
    let server_tls = mesh_hbone::server_config(ca.clone(), server_id()).expect("server");
    let first = ca.certificate(&server_id()).expect("cert").chain[0].clone();
    let serve = |tls: Arc<rustls::ServerConfig>| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(mesh_hbone::Server::new(tls).serve(listener, echo, token.clone()));
        (addr, token)
    };
    let (addr, token) = serve(server_tls).await;
    let leaf_now = || async {
        let client_tls =
            mesh_hbone::client_config(ca.clone(), client_id(), vec![server_id()]).expect("client");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(client_tls)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .expect("handshake");
        tls.get_ref().1.peer_certificates().expect("certs")[0].clone()
    };
    assert_eq!(leaf_now().await, first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = leaf_now().await;
    assert_ne!(rotated, first);
    assert_eq!(
        rotated,
        ca.certificate(&server_id()).expect("cert").chain[0]
    );
    token.cancel();
}

fn write_identity(dir: &Path, ca: &LocalCa, id: &Identity) -> Arc<mesh_hbone::WorkloadCertificate> {
    let cert = ca.certificate(id).expect("cert");
    FileCertificates::write(dir, &cert, &ca.root_pem()).expect("write files");
    cert
}

async fn wait_for_identity(files: &FileCertificates, id: &Identity) -> bool {
    eventually(Duration::from_secs(5), || files.certificate(id).is_ok()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_certificates_follow_updates_and_serve_hbone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let first_id = Identity::new(TD, "default", "first");
    let second_id = Identity::new(TD, "default", "second");
    let written = write_identity(dir.path(), &ca, &first_id);

    let files = Arc::new(FileCertificates::new(dir.path()).expect("load"));
    assert_eq!(files.identity(), first_id);
    assert_eq!(files.trust_domain(), TD);
    assert_eq!(files.roots(), ca.roots());
    let served = files.certificate(&first_id).expect("first");
    assert_eq!(served.chain, written.chain);
    let err = files.certificate(&second_id).expect_err("not in the files");
    assert!(matches!(err, CertError::UnknownIdentity { .. }), "{err}");

    // Serve HBONE with the file-backed identity; the client uses the CA directly.
    let server = start_server(files.clone(), first_id.clone(), echo).await;
    let pool = Pool::new(ca.clone(), PoolConfig::default());
    let mut key = key(server.addr);
    key.expected = vec![first_id.clone()];
    let mut stream = pool
        .connect(&key, request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    assert_eq!(stream.peer_identity(), &first_id);
    assert_eq!(round_trip(&mut stream, b"files").await, b"files");

    // Replace with another identity's files: the new identity is served.
    let second = write_identity(dir.path(), &ca, &second_id);
    assert!(
        wait_for_identity(&files, &second_id).await,
        "update not picked up"
    );
    assert!(files.certificate(&first_id).is_err());
    assert_eq!(files.identity(), second_id);
    let leaf = presented_leaf(files.clone(), second_id.clone(), ca.clone()).await;
    assert_eq!(leaf, second.chain[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_updates_are_rejected_and_the_old_certificate_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let id = Identity::new(TD, "default", "steady");
    let good = write_identity(dir.path(), &ca, &id);
    let files = FileCertificates::new(dir.path()).expect("load");
    let still_good = |files: &FileCertificates| {
        files
            .certificate(&id)
            .map(|c| c.chain == good.chain)
            .unwrap_or(false)
    };

    // Garbage in the chain file.
    std::fs::write(
        dir.path().join("cert-chain.pem"),
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .expect("corrupt");
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the poll interval
    assert!(
        still_good(&files),
        "corrupt chain must not replace the good one"
    );

    // A valid certificate of another identity with the old key: key mismatch.
    let other = ca
        .certificate(&Identity::new(TD, "default", "other"))
        .expect("other");
    std::fs::write(dir.path().join("cert-chain.pem"), other.chain_pem()).expect("mismatch");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        still_good(&files),
        "mismatched key must not replace the good one"
    );

    // A certificate from a different CA than root-cert.pem.
    let foreign_ca = LocalCa::new(TD).expect("another CA");
    let foreign = foreign_ca.certificate(&id).expect("foreign");
    std::fs::write(dir.path().join("cert-chain.pem"), foreign.chain_pem()).expect("chain");
    std::fs::write(dir.path().join("key.pem"), foreign.key_pem()).expect("key");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        still_good(&files),
        "a chain that does not end at the root must be rejected"
    );

    // A consistent update is taken again.
    let fixed = write_identity(dir.path(), &ca, &Identity::new(TD, "default", "other"));
    let other_id = fixed.identity.clone();
    assert!(wait_for_identity(&files, &other_id).await);
    assert_eq!(
        files.certificate(&other_id).expect("new").chain,
        fixed.chain
    );
}

#[test]
fn file_certificates_name_the_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = FileCertificates::new(dir.path()).expect_err("empty dir");
    assert!(err.to_string().contains("cert-chain.pem"), "{err}");
    let ca = LocalCa::new(TD).expect("ca");
    write_identity(dir.path(), &ca, &server_id());
    std::fs::write(dir.path().join("key.pem"), b"nonsense").expect("write");
    let err = FileCertificates::new(dir.path()).expect_err("no key");
    assert!(err.to_string().contains("key.pem"), "{err}");
}
