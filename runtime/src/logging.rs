use tracing_subscriber::EnvFilter;

/// Installs a `tracing` fmt subscriber writing to stderr, filtered by `RUST_LOG` (default
/// `info`). Calling it again (or after another subscriber was installed) does nothing.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // An error only means a global subscriber already exists, which is what idempotent means here.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
