//! Shared fixtures: a mesh CA, an HBONE server on loopback, pools and helper handlers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_hbone::{
    CertError, CertificateProvider, HboneStream, Identity, InboundConnect, LocalCa, Pool,
    PoolConfig, PoolKey, Server, WorkloadCertificate,
};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const TD: &str = "cluster.local";

pub fn server_id() -> Identity {
    Identity::new(TD, "default", "server")
}

pub fn client_id() -> Identity {
    Identity::new(TD, "default", "client")
}

/// A running HBONE server; cancelled on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_server<H, F>(
    provider: Arc<dyn CertificateProvider>,
    identity: Identity,
    handler: H,
) -> TestServer
where
    H: Fn(InboundConnect) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let tls = mesh_hbone::server_config(provider, identity).expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Server::new(tls).serve(listener, handler, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        task,
    }
}

/// Accepts and echoes until the client half-closes, then half-closes too.
pub async fn echo(connect: InboundConnect) {
    let Ok(stream) = connect.accept(http::HeaderMap::new()) else {
        return;
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

pub fn ca() -> Arc<LocalCa> {
    Arc::new(LocalCa::new(TD).expect("local CA"))
}

pub fn key(addr: SocketAddr) -> PoolKey {
    PoolKey {
        source: client_id(),
        source_ip: None,
        source_netns: None,
        destination: addr,
        expected: vec![server_id()],
    }
}

pub fn request(authority: &str) -> mesh_hbone::ConnectRequest {
    mesh_hbone::ConnectRequest {
        authority: authority.to_string(),
        headers: http::HeaderMap::new(),
    }
}

pub fn pool(provider: Arc<dyn CertificateProvider>) -> Pool {
    Pool::new(provider, PoolConfig::default())
}

/// Writes `data`, half-closes, and reads everything back until EOF.
pub async fn round_trip(stream: &mut HboneStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back))
        .await
        .expect("echo in time")
        .expect("read");
    back
}

/// A provider with fixed material, for certificates a `LocalCa` would not issue.
pub struct StaticProvider {
    pub cert: Arc<WorkloadCertificate>,
    pub roots: Vec<CertificateDer<'static>>,
    pub trust_domain: String,
}

impl CertificateProvider for StaticProvider {
    fn certificate(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        if *id == self.cert.identity {
            Ok(self.cert.clone())
        } else {
            Err(CertError::ForeignTrustDomain {
                identity: id.clone(),
                trust_domain: self.trust_domain.clone(),
            })
        }
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.roots.clone()
    }

    fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
