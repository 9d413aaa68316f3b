//! Process plumbing shared by every mesh binary: logging, readiness, the admin HTTP server, a
//! small accept loop for hyper services, and the caps on accepted connections.

mod admin;
mod conn_limit;
mod error;
mod fd_limit;
mod idle;
mod log_limit;
mod logging;
pub mod netns;
mod readiness;
pub mod serve;
mod signals;

pub use admin::{AdminServer, ConfigDump};
pub use conn_limit::{ConnectionLimit, ConnectionPermit, Limits, Refusal};
pub use error::RuntimeError;
pub use fd_limit::{open_files, raise_open_file_limit};
pub use idle::{Spliced, splice_until_idle};
pub use log_limit::LogLimit;
pub use logging::{LogFormat, init_logging, init_logging_with, try_init_with};
pub use netns::{Netns, NetnsError, listen_in};
pub use readiness::Readiness;
pub use serve::bind;
pub use signals::ShutdownSignals;
pub use tokio_util::sync::CancellationToken;
