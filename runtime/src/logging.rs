use std::io::IsTerminal;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::LogLimit;

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
    let (format, unknown) = match LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref()) {
        Ok(format) => (format, None),
        Err(why) => (LogFormat::Plain, Some(why)),
    };
    let ansi = std::io::stderr().is_terminal() && unknown.is_none();
    // An error only means a global subscriber already exists, which is what idempotent means here.
    let _ = try_init_with(filter, format, ansi, std::io::stderr);
    if let Some(why) = unknown {
        tracing::warn!("{why}; writing text");
    }
}

/// Installs the mesh's subscriber writing to `writer`: `filter`, then [`CallerErrors`].
/// Fails if a global subscriber already exists.
pub fn try_init_with<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => (builder.json().flatten_event(true).finish())
            .with(CallerErrors::default())
            .try_init(),
        LogFormat::Plain => (builder.with_ansi(ansi).finish())
            .with(CallerErrors::default())
            .try_init(),
    }
}

/// Pingora logs at ERROR every caller that breaks off a request or sends one it cannot read
/// ("Fail to proxy: Downstream ..."): the caller's doing, not the proxy's, and reported in
/// the access log where the waypoint answers. So that no caller can flood the log with
/// them, at most 10 such lines a minute are written.
pub struct CallerErrors {
    limit: LogLimit,
}

impl Default for CallerErrors {
    fn default() -> Self {
        CallerErrors {
            limit: LogLimit::new(10, Duration::from_secs(60)),
        }
    }
}

/// What Pingora's lines about a caller's failure start with.
const CALLER_ERROR: &str = "Fail to proxy: Downstream";

impl<S: Subscriber> Layer<S> for CallerErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if *event.metadata().level() != Level::ERROR {
            return true;
        }
        let mut message = MessageStart::default();
        event.record(&mut message);
        !message.is_caller_error || self.limit.allow().is_some()
    }
}

/// Whether an event's message is one of Pingora's about a caller.
#[derive(Default)]
struct MessageStart {
    is_caller_error: bool,
}

impl Visit for MessageStart {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.is_caller_error = format!("{value:?}").starts_with(CALLER_ERROR);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.is_caller_error = value.starts_with(CALLER_ERROR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pingoras_errors_about_callers_are_limited_and_others_are_not() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish()
            .with(CallerErrors::default());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..50 {
                tracing::error!(target: "pingora_proxy", "Fail to proxy: Downstream ReadError {i}");
                tracing::error!("the proxy's own error {i}");
                tracing::info!("Fail to proxy: Downstream, but at info {i}");
            }
        });
        let text = String::from_utf8_lossy(&captured.0.lock().expect("log")).into_owned();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("ReadError"), 10);
        assert_eq!(count("the proxy's own error"), 50);
        assert_eq!(count("but at info"), 50);
    }

    #[test]
    fn log_formats() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Plain));
        assert_eq!(LogFormat::parse(Some("plain")), Ok(LogFormat::Plain));
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        let error = LogFormat::parse(Some("xml")).expect_err("unknown");
        assert!(error.contains("\"xml\""), "{error}");
    }
}
