//! `loadtest load`: fortio's load generator. Pure parts (histogram and percentiles, run plan,
//! pacing, result JSON, text report, number and time formats) and thin I/O (connections,
//! workers, runner).

mod connect;
mod curl;
mod error;
mod fast;
pub mod framing;
pub mod gofmt;
pub mod histogram;
mod options;
pub mod pacing;
pub mod plan;
pub mod report;
pub mod request;
pub mod results;
mod runner;
pub mod timefmt;
mod worker;

pub use curl::{Fetched, curl};
pub use error::LoadError;
pub use options::{LoadArgs, LoadOptions, Target, default_labels, parse_percentiles, parse_target};
pub use results::{HttpOptions, HttpRunnerResults};
pub use runner::{run, run_id};
pub use worker::{Outcome, SOCKET_ERROR, WorkerStats};

/// Writes the result as fortio does (indented JSON and a newline) to `path`, or stdout for "-".
pub fn write_json(results: &HttpRunnerResults, path: &str) -> Result<(), LoadError> {
    let error = |source| LoadError::WriteJson {
        path: path.to_owned(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(results).map_err(|e| error(e.into()))?;
    text.push(b'\n');
    if path == "-" {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&text)
            .and_then(|()| stdout.flush())
            .map_err(error)
    } else {
        std::fs::write(path, text).map_err(error)
    }
}
