use std::time::Duration;

/// Errors of a load run, with the flag, URL or peer they concern.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid value {value:?} for -{flag}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach {target} through SOCKS5 proxy {proxy}: {source}")]
    Socks {
        proxy: String,
        target: String,
        #[source]
        source: tokio_socks::Error,
    },
    #[error("HTTP handshake with {target} failed: {source}")]
    Handshake {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("connecting to {target} timed out after {timeout:?}")]
    ConnectTimeout { target: String, timeout: Duration },
    #[error("warmup request on connection {connection} to {url} failed: {reason}")]
    Warmup {
        connection: usize,
        url: String,
        reason: String,
    },
    #[error("cannot write JSON results to {path}: {source}")]
    WriteJson {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
