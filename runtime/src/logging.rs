use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` fmt subscriber writing to stderr, filtered by `RUST_LOG` (default
/// `info`). Calling it again (or after another subscriber was installed) does nothing.
pub fn init_logging() {
    init_logging_with("info");
}

/// Like [`init_logging`], with `default` as the filter when `RUST_LOG` is unset. Colours only
/// when stderr is a terminal.
pub fn init_logging_with(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // An error only means a global subscriber already exists, which is what idempotent means here.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
