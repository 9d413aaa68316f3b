//! `loadtest bench`: the side-by-side benchmark harness. It builds nothing: it starts prebuilt
//! binaries (`loadtest`, `mesh`, `envoy`) on loopback, runs a bounded matrix over every path
//! in interleaved rounds, writes every fortio JSON, a Markdown report with ratio tables and a
//! latency chart, and stops everything it started — also on error or Ctrl-C.
//!
//! - [`paths`], [`matrix`]: what is measured and how (pure).
//! - [`fortio`], [`stats`], [`procfs`], [`report`]: reading and summarising results (pure).
//! - [`fleet`], [`probe`], [`setup`], [`envoy`], [`mesh`], [`certs`], [`measure`]: processes.

pub mod args;
pub mod certs;
pub mod envoy;
pub mod error;
pub mod fleet;
pub mod fortio;
pub mod matrix;
pub mod measure;
pub mod mesh;
pub mod paths;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod setup;
pub mod stats;

mod orchestrate;

pub use args::BenchArgs;
pub use error::BenchError;
pub use orchestrate::{Report, run};
pub use paths::PathId;
