//! The user's CLI as a library: run a whole mesh locally (`mesh up`), check manifests
//! (`mesh validate`), the end-to-end demo (`mesh demo`), and the process plumbing of the
//! stand-alone `waypoint` and `ztunnel` programs (`program`, `src/bin/`).

pub mod client;
pub mod demo;
pub mod island;
pub mod load;
pub mod local;
pub mod program;
