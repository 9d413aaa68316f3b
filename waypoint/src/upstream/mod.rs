//! The upstream half: from "this endpoint was chosen" to bytes on an HBONE stream.
//!
//! - [`peer`]: the Pingora peer for an endpoint (a CONNECT-proxy peer whose next hop is the
//!   in-process egress), with the pool separation and timeouts that go with it.
//! - [`egress`]: the Unix-socket egress that turns each Pingora CONNECT into an HBONE stream.
//! - [`backlog`]: backpressure from an egress connection's queue to the caller's tunnel, so
//!   bodies streaming both ways never wedge Pingora's upstream loop.
//!
//! Load balancing, retries, budgets and outlier detection land here.

pub mod backlog;
pub mod egress;
pub mod peer;

pub use backlog::{Backlogs, ReadGate};
pub use egress::{Egress, EgressTarget};
pub use peer::{UpstreamProtocol, http_peer};
