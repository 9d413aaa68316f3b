//! Errors of the harness, each naming the file, process or path it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fortio JSON {path}: {source}")]
    FortioJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the `{binary}` binary is missing from {dir} (build it first: `cargo build -p {package}`; \
         or point --bin-dir at the directory holding it)"
    )]
    MissingBinary {
        binary: &'static str,
        package: &'static str,
        dir: PathBuf,
    },
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited early ({status}); last log lines:\n{log_tail}")]
    ExitedEarly {
        name: String,
        status: String,
        log_tail: String,
    },
    #[error("{what} at {addr} was not ready within {seconds} s (last: {last})")]
    NotReady {
        what: String,
        addr: std::net::SocketAddr,
        seconds: u64,
        last: String,
    },
    #[error("{0} already accepts connections: is another bench still running?")]
    AddressInUse(std::net::SocketAddr),
    #[error("{0} is not available")]
    Unavailable(String),
    #[error("Envoy: {0}")]
    Envoy(String),
    #[error("certificates for {subject}: {source}")]
    Certificate {
        subject: String,
        #[source]
        source: mesh_hbone::CertError,
    },
    #[error("path {path}: request check failed: {reason}")]
    Verify { path: String, reason: String },
    #[error("path {path}, run {test}: {reason}")]
    Run {
        path: String,
        test: String,
        reason: String,
    },
}

pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> BenchError {
    let path = path.into();
    move |source| BenchError::Io { what, path, source }
}
