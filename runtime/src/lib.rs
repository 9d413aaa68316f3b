//! Process plumbing shared by every mesh binary: logging, readiness, the admin HTTP server and a
//! small accept loop for hyper services.

mod admin;
mod error;
mod log_limit;
mod logging;
mod readiness;
pub mod serve;
mod signals;

pub use admin::{AdminServer, ConfigDump};
pub use error::RuntimeError;
pub use log_limit::LogLimit;
pub use logging::{init_logging, init_logging_with};
pub use readiness::Readiness;
pub use serve::bind;
pub use signals::shutdown_signal;
pub use tokio_util::sync::CancellationToken;
