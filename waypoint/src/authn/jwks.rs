//! The key sets of the `jwksUri`s the waypoint's RequestAuthentications name: each fetched
//! when a rule first names it, fetched again every `refresh` (Envoy's JWKS cache duration,
//! 10 min), and after a failure retried with backoff (1 s doubling to 1 min) while the last
//! good set stays in use. A URI no rule names any more is forgotten.
//!
//! A URI whose host is a Service of the mesh is fetched through the mesh: an HBONE tunnel to
//! one of its endpoints, as the waypoint itself (so the key server sees a mesh identity, and
//! its policies apply). Any other host is fetched directly, over TCP. An `https` URI is
//! fetched over TLS on top of either, its server verified against the waypoint's trusted
//! roots (the system's, by default) for the URI's host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mesh_config::authn::{JwksUri, KeySet};
use mesh_config::{ObjectRef, Snapshot, Store};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::FetchedKeys;
use crate::upstream::client::read_answer;
use crate::upstream::{Target, Upstreams};

/// Envoy's default `cache_duration` of a remote JWKS.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
/// The largest JWKS document read (a set of a few dozen keys is well under it).
pub const MAX_JWKS_BYTES: usize = 256 << 10;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

/// The key sets fetched so far, read by every request without a lock.
#[derive(Default)]
pub struct RemoteKeys(ArcSwap<FetchedKeys>);

impl RemoteKeys {
    pub fn load(&self) -> arc_swap::Guard<Arc<FetchedKeys>> {
        self.0.load()
    }

    fn update(&self, edit: impl FnOnce(&mut FetchedKeys)) {
        let mut next = FetchedKeys::clone(&self.0.load());
        edit(&mut next);
        self.0.store(Arc::new(next));
    }
}

/// Fetches the key sets of one waypoint's `jwksUri`s into a [`RemoteKeys`].
pub struct Fetcher {
    pub store: Arc<Store>,
    pub waypoint: ObjectRef,
    pub upstreams: Upstreams,
    pub keys: Arc<RemoteKeys>,
    pub refresh: Duration,
    /// How `https` key servers are verified.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A TLS client trusting the system's roots (as `SSL_CERT_FILE`/`SSL_CERT_DIR` or the
/// platform's store give them); roots that do not parse are skipped, each logged.
pub fn system_roots() -> Arc<rustls::ClientConfig> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system root certificate could not be read");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, skipped, "trusted roots for https fetches");
    tls_trusting(roots)
}

/// A TLS client (HTTP/1.1, ring) trusting `roots`.
pub fn tls_trusting(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// When a URI is fetched next, and how many fetches of it have failed in a row.
struct Schedule {
    next: Instant,
    failures: u32,
}

impl Fetcher {
    /// Runs until `shutdown`, following the config as it changes.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut versions = self.store.subscribe();
        let mut schedule: HashMap<http::Uri, Schedule> = HashMap::new();
        loop {
            let snapshot = self.store.load();
            let wanted = snapshot.waypoint_jwks_uris(&self.waypoint);
            schedule.retain(|uri, _| wanted.iter().any(|w| &w.uri == uri));
            if self
                .keys
                .load()
                .keys()
                .any(|uri| !schedule.contains_key(uri))
            {
                (self.keys).update(|keys| keys.retain(|uri, _| schedule.contains_key(uri)));
            }
            for jwks in &wanted {
                let due = schedule.entry(jwks.uri.clone()).or_insert(Schedule {
                    next: Instant::now(),
                    failures: 0,
                });
                if due.next > Instant::now() {
                    continue;
                }
                let fetching = fetch(&snapshot, &self.upstreams, &self.tls, jwks, due.failures);
                let fetched = tokio::select! {
                    fetched = fetching => fetched,
                    () = shutdown.cancelled() => return,
                };
                self.record(jwks, fetched, due);
            }
            let next = schedule.values().map(|s| s.next).min();
            let wake = next.unwrap_or_else(|| Instant::now() + self.refresh);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                changed = versions.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn record(&self, jwks: &JwksUri, fetched: Result<KeySet, String>, due: &mut Schedule) {
        let uri = &jwks.uri;
        match fetched {
            Ok(set) => {
                tracing::info!(jwks_uri = %uri, keys = set.len(), "fetched JWKS");
                let set = Arc::new(set);
                (self.keys).update(|keys| {
                    keys.insert(uri.clone(), set);
                });
                due.failures = 0;
                due.next = Instant::now() + self.refresh;
            }
            Err(error) => {
                let kept = self.keys.load().contains_key(uri);
                let retry = backoff(due.failures);
                due.failures = due.failures.saturating_add(1);
                due.next = Instant::now() + retry;
                let effect = match kept {
                    true => "the last good key set stays in use",
                    false => "tokens of its rules are refused (401) until a fetch succeeds",
                };
                tracing::warn!(
                    jwks_uri = %uri, %error, retry_in = ?retry,
                    "cannot fetch JWKS: {effect}"
                );
            }
        }
    }
}

/// How long after the `failures + 1`th failure in a row a fetch is tried again.
fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(failures))
        .min(LAST_RETRY)
}

/// One fetch of `jwks`'s key set, within its timeout: the `jwksUri` itself, or the issuer's
/// OpenID discovery document and then the `jwks_uri` it names. `attempt` picks which endpoint
/// of a mesh Service serves it, so a retry goes to another.
async fn fetch(
    snapshot: &Snapshot,
    upstreams: &Upstreams,
    tls: &Arc<rustls::ClientConfig>,
    jwks: &JwksUri,
    attempt: u32,
) -> Result<KeySet, String> {
    let fetch_text = |uri: http::Uri| async move {
        let io = connect(snapshot, upstreams, tls, &uri, jwks.timeout, attempt).await?;
        get(io, &uri).await
    };
    let fetching = async {
        let keys_uri = match jwks.discovery {
            false => jwks.uri.clone(),
            true => jwks_uri_of(&fetch_text(jwks.uri.clone()).await?)?,
        };
        KeySet::parse(&fetch_text(keys_uri).await?)
    };
    match tokio::time::timeout(jwks.timeout, fetching).await {
        Ok(fetched) => fetched,
        Err(_) => Err(format!("no answer within {:?}", jwks.timeout)),
    }
}

/// The `jwks_uri` an OpenID discovery document names (http or https).
fn jwks_uri_of(document: &str) -> Result<http::Uri, String> {
    let document: serde_json::Value = serde_json::from_str(document)
        .map_err(|e| format!("the OpenID discovery document is not JSON: {e}"))?;
    let named = (document.get("jwks_uri").and_then(|u| u.as_str()))
        .ok_or("the OpenID discovery document names no jwks_uri")?;
    let not_http = || format!("jwks_uri {named:?} is not an http(s) URL");
    let uri: http::Uri = named.parse().map_err(|_| not_http())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(not_http()),
    }
}

/// A connection to `uri`'s server: through the mesh (an HBONE tunnel to an endpoint) when its
/// host is a Service of the mesh, else TCP; TLS on top for `https`.
async fn connect(
    snapshot: &Snapshot,
    upstreams: &Upstreams,
    tls: &Arc<rustls::ClientConfig>,
    uri: &http::Uri,
    timeout: Duration,
    attempt: u32,
) -> Result<Box<dyn Io>, String> {
    let host = uri.host().ok_or("no host")?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let io: Box<dyn Io> = match snapshot.service_by_host(host) {
        Some(service) => {
            let endpoints = snapshot.endpoints(service, port);
            if endpoints.is_empty() {
                return Err(format!("Service {host} has no endpoint on port {port}"));
            }
            let endpoint = &endpoints[attempt as usize % endpoints.len()];
            let target = Target::for_endpoint(endpoint);
            let tunnel = upstreams.tunnel(&target, timeout).await;
            Box::new(tunnel.map_err(|e| e.to_string())?)
        }
        None => {
            let stream = tokio::net::TcpStream::connect((host, port)).await;
            Box::new(stream.map_err(|e| format!("connect to {host}:{port}: {e}"))?)
        }
    };
    if !https {
        return Ok(io);
    }
    // An IP literal is verified as one; anything else as a DNS name.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let stream = connector.connect(name, io).await;
    Ok(Box::new(
        stream.map_err(|e| format!("TLS with {host}: {e}"))?,
    ))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// GET `uri` over `io` (HTTP/1.1): its body, at most [`MAX_JWKS_BYTES`], as text.
async fn get(io: Box<dyn Io>, uri: &http::Uri) -> Result<String, String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(connection);
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{uri} answered {}", response.status()));
    }
    let body = read_answer(response.into_body(), MAX_JWKS_BYTES).await?;
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_documents_name_the_key_set() {
        let uri = jwks_uri_of(r#"{"issuer": "https://idp", "jwks_uri": "https://idp/keys"}"#);
        assert_eq!(uri.expect("named"), "https://idp/keys");
        for (document, why) in [
            ("<html>", "not JSON"),
            (r#"{"issuer": "https://idp"}"#, "names no jwks_uri"),
            (r#"{"jwks_uri": "file:///keys"}"#, "not an http(s) URL"),
        ] {
            let error = jwks_uri_of(document).expect_err(document);
            assert!(error.contains(why), "{document}: {error}");
        }
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), LAST_RETRY);
    }
}
