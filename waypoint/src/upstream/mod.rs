//! The upstream half: from "this endpoint was chosen" to the response on its way back.
//!
//! - [`client`]: HTTP/1.1 and HTTP/2 connections to endpoints, each an HBONE tunnel, pooled
//!   per endpoint (no socket between Pingora and HBONE).
//! - [`forward`]: one request over such a connection, both bodies streaming at once, and what
//!   a failure means for the caller.
//! - [`retry`]: whether a failed try goes again, when, and to which endpoint.
//! - [`budget`]: retries in flight per destination, bounded by the requests in flight.
//! - [`protocol`]: what a Service port says its backends speak.
//!
//! Load balancing and outlier detection land here.

pub mod budget;
pub mod client;
pub mod forward;
pub mod protocol;
pub mod retry;

pub use client::{ClientConfig, Target, Upstreams};
pub use protocol::UpstreamProtocol;
