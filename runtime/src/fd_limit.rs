//! The process's open-file limit, which bounds how many connections it can hold.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft open-file limit to the hard limit (as Envoy and Istio's ztunnel do at
/// start); returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    open_files()
}

/// The soft open-file limit now (1024, the usual default, when it cannot be read).
pub fn open_files() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}
