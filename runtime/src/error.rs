use std::net::SocketAddr;

/// Errors at the mesh-runtime boundary.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Binding a listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
