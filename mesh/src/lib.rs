//! The user's CLI as a library: run a whole mesh locally (`mesh up`), check manifests
//! (`mesh validate`), and the end-to-end demo (`mesh demo`).

pub mod client;
pub mod demo;
pub mod load;
pub mod local;
