use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` fmt subscriber writing to stderr, filtered by `RUST_LOG` (default
/// `info`). Calling it again (or after another subscriber was installed) does nothing.
pub fn init_logging() {
    init_logging_with("info");
}

/// How log lines are written: `LOG_FORMAT=json` (Istio's ztunnel's variable) writes one JSON
/// object per line (`timestamp`, `level`, `target`, the fields, `message`), for log
/// collectors; unset or `plain`, text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

impl LogFormat {
    /// Reads a `LOG_FORMAT` value.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "plain") => Ok(LogFormat::Plain),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!("LOG_FORMAT={other:?}: expected json or plain")),
        }
    }
}

/// Like [`init_logging`], with `default` as the filter when `RUST_LOG` is unset, in the
/// `LOG_FORMAT` format. Colours only when stderr is a terminal and the format is text.
pub fn init_logging_with(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // An error only means a global subscriber already exists, which is what idempotent means here.
    let _ = match format {
        Ok(LogFormat::Json) => builder.json().flatten_event(true).try_init(),
        Ok(LogFormat::Plain) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Err(why) => {
            let installed = builder.with_ansi(false).try_init();
            tracing::warn!("{why}; writing text");
            installed
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Plain));
        assert_eq!(LogFormat::parse(Some("plain")), Ok(LogFormat::Plain));
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        let error = LogFormat::parse(Some("xml")).expect_err("unknown");
        assert!(error.contains("\"xml\""), "{error}");
    }
}
