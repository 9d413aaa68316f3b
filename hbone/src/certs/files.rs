//! Certificates from Istio's file layout: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
//!
//! Reload model: every `certificate()`/`roots()` call checks for changes when the directory
//! watcher saw an event, or at most once per [`POLL_INTERVAL`] otherwise (the watcher is an
//! optimisation; polling alone is correct). A change is only taken when all three files parse,
//! the key matches the leaf, and the leaf chains to the new roots; otherwise it is logged and the
//! previous material keeps serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use super::{CertError, CertificateProvider, Mismatch, WorkloadCertificate, x509};
use crate::identity::Identity;

pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
pub const KEY_FILE: &str = "key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What is being served.
struct Material {
    cert: Arc<WorkloadCertificate>,
    roots: Vec<CertificateDer<'static>>,
}

/// Raw bytes of the three files, to notice any change.
type Contents = [Vec<u8>; 3];

struct ReloadState {
    last_seen: Contents,
    last_error: Option<String>,
    last_check: Instant,
}

struct Shared {
    dir: PathBuf,
    trust_domain: String,
    current: ArcSwap<Material>,
    changed: AtomicBool,
    reload: Mutex<ReloadState>,
}

/// Serves the one identity found in `cert-chain.pem`'s URI SAN, reloading when the files change.
pub struct FileCertificates {
    shared: Arc<Shared>,
    _watcher: Mutex<Option<RecommendedWatcher>>,
}

impl std::fmt::Debug for FileCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCertificates")
            .field("dir", &self.shared.dir)
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl FileCertificates {
    /// Loads `dir`; fails when any file is missing or invalid. The trust domain is fixed by the
    /// first load: a later update to another trust domain is rejected.
    pub fn new(dir: &Path) -> Result<Self, CertError> {
        let contents = read_all(dir)?;
        let material = parse(dir, &contents)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            trust_domain: material.cert.identity.trust_domain.clone(),
            current: ArcSwap::from_pointee(material),
            changed: AtomicBool::new(false),
            reload: Mutex::new(ReloadState {
                last_seen: contents,
                last_error: None,
                last_check: Instant::now(),
            }),
        });
        let watcher = watch(dir, &shared);
        Ok(FileCertificates {
            shared,
            _watcher: Mutex::new(watcher),
        })
    }

    /// The identity currently served.
    pub fn identity(&self) -> Identity {
        self.shared.refresh();
        self.shared.current.load().cert.identity.clone()
    }

    /// Writes `cert` and `root_pem` into `dir` in Istio's layout (each file replaced atomically).
    pub fn write(dir: &Path, cert: &WorkloadCertificate, root_pem: &str) -> Result<(), CertError> {
        write_atomic(&dir.join(KEY_FILE), cert.key_pem().as_bytes())?;
        write_atomic(&dir.join(CERT_CHAIN_FILE), cert.chain_pem().as_bytes())?;
        write_atomic(&dir.join(ROOT_CERT_FILE), root_pem.as_bytes())
    }
}

impl CertificateProvider for FileCertificates {
    fn certificate(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        self.shared.refresh();
        let current = self.shared.current.load();
        if current.cert.identity == *id {
            Ok(current.cert.clone())
        } else {
            Err(CertError::UnknownIdentity {
                requested: Box::new(id.clone()),
                available: Box::new(current.cert.identity.clone()),
                dir: self.shared.dir.clone(),
            })
        }
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.shared.refresh();
        self.shared.current.load().roots.clone()
    }

    fn trust_domain(&self) -> &str {
        &self.shared.trust_domain
    }
}

impl Shared {
    /// Reloads when the watcher saw an event or the poll interval passed.
    fn refresh(&self) {
        let Ok(mut state) = self.reload.try_lock() else {
            return; // another caller is reloading right now
        };
        let flagged = self.changed.swap(false, Ordering::AcqRel);
        if !flagged && state.last_check.elapsed() < POLL_INTERVAL {
            return;
        }
        state.last_check = Instant::now();
        let outcome = read_all(&self.dir).and_then(|contents| {
            if contents == state.last_seen {
                return Ok(None);
            }
            state.last_seen = contents;
            parse(&self.dir, &state.last_seen).map(Some)
        });
        match outcome {
            Ok(None) => {}
            Ok(Some(material)) => self.install(material, &mut state),
            Err(e) => {
                let message = e.to_string();
                if state.last_error.as_deref() != Some(message.as_str()) {
                    warn!(dir = %self.dir.display(), error = %message,
                        "rejected certificate update; previous certificate keeps serving");
                    state.last_error = Some(message);
                }
            }
        }
    }

    fn install(&self, material: Material, state: &mut ReloadState) {
        let identity = material.cert.identity.clone();
        if identity.trust_domain != self.trust_domain {
            warn!(dir = %self.dir.display(), %identity, trust_domain = %self.trust_domain,
                "rejected certificate update: trust domain changed");
            state.last_error = Some(format!("trust domain changed to {}", identity.trust_domain));
            return;
        }
        info!(dir = %self.dir.display(), %identity, "reloaded workload certificate");
        state.last_error = None;
        self.current.store(Arc::new(material));
    }
}

/// Watches `dir`; events only flag a check. Without a watcher, polling still works.
fn watch(dir: &Path, shared: &Arc<Shared>) -> Option<RecommendedWatcher> {
    let weak = Arc::downgrade(shared);
    let handler = move |event: notify::Result<notify::Event>| {
        if let (Ok(_), Some(shared)) = (event, weak.upgrade()) {
            shared.changed.store(true, Ordering::Release);
        }
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match watcher {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot watch certificate directory; polling");
            None
        }
    }
}

fn read_all(dir: &Path) -> Result<Contents, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CertError::Read { path, source })
    };
    Ok([
        read(CERT_CHAIN_FILE)?,
        read(KEY_FILE)?,
        read(ROOT_CERT_FILE)?,
    ])
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CertError> {
    let fail = |source| CertError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, data).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn invalid(dir: &Path, file: &str, reason: impl Into<String>) -> CertError {
    CertError::Invalid {
        path: dir.join(file),
        reason: reason.into(),
    }
}

fn pem_certs(
    dir: &Path,
    file: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut reader = pem;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(dir, file, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(dir, file, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn pem_key(dir: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut reader = pem;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|e| invalid(dir, KEY_FILE, format!("bad PEM: {e}")))?
        .ok_or_else(|| invalid(dir, KEY_FILE, "no private key block"))
}

/// Parses and cross-checks the three files.
fn parse(dir: &Path, [chain_pem, key_pem, roots_pem]: &Contents) -> Result<Material, CertError> {
    let chain = pem_certs(dir, CERT_CHAIN_FILE, chain_pem)?;
    let key = pem_key(dir, key_pem)?;
    let roots = pem_certs(dir, ROOT_CERT_FILE, roots_pem)?;
    let leaf = &chain[0];
    let identity = x509::unique_identity(leaf).map_err(|e| invalid(dir, CERT_CHAIN_FILE, e))?;
    let not_after = x509::not_after(leaf).map_err(|e| invalid(dir, CERT_CHAIN_FILE, e))?;

    super::check_issued(&chain, &key, &roots).map_err(|problem| match problem {
        Mismatch::Key(e) => invalid(dir, KEY_FILE, e),
        Mismatch::Root(e) => invalid(dir, ROOT_CERT_FILE, e),
        Mismatch::Chain(e) => invalid(dir, CERT_CHAIN_FILE, e),
    })?;
    Ok(Material {
        cert: Arc::new(WorkloadCertificate {
            identity,
            chain,
            key: Arc::new(key),
            not_after,
        }),
        roots,
    })
}
