//! The upstream half: from "this endpoint was chosen" to the response on its way back.
//!
//! - [`client`]: HTTP/1.1 and HTTP/2 connections to endpoints, each an HBONE tunnel, pooled
//!   per endpoint (no socket between Pingora and HBONE).
//! - [`forward`]: one request over such a connection, both bodies streaming at once, and what
//!   a failure means for the caller.
//! - [`balance`]: which endpoint each try goes to (`mesh_config::balance`, the
//!   DestinationRule's load balancer, over `mesh_config::health`: requests in flight to each
//!   endpoint and outlier detection's ejections), and what each try teaches outlier detection.
//! - [`upload`]: the request body on its way up, kept (≤ 64 KiB) for a retry to replay, and
//!   teed to mirrored copies.
//! - [`mirror`]: mirrored copies (`RequestMirror`), sent alongside and never waited for.
//! - [`retry`]: whether a failed try goes again, and when.
//! - [`limits`]: requests and retries in flight per destination, and their limits (the
//!   retry budget, the connection pool's `http2MaxRequests` and `maxRetries`).
//! - [`protocol`]: what a Service port says its backends speak.

pub mod balance;
pub mod client;
pub mod forward;
pub mod limits;
pub mod mirror;
pub mod protocol;
pub mod retry;
pub mod upload;

pub use client::{ClientConfig, PoolSettings, Target, Upstreams};
pub use protocol::UpstreamProtocol;
