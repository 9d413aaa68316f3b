//! fortio-compatible load generator and echo server.
//!
//! - [`echo`]: the echo server (`loadtest server`).
//! - [`load`]: the load generator (`loadtest load`): pure histogram, pacing, result and report
//!   modules plus thin client workers.
//! - [`cli`]: command-line parsing with fortio's single-dash long flags.

pub mod cli;
pub mod echo;
pub mod godur;
pub mod load;
