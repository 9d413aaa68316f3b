//! mesh-core: the vocabulary every part of the mesh shares and nothing else — SPIFFE
//! [`Identity`], namespaced [`ObjectRef`]s, the [`ResponseFlag`] set of access logs and metrics,
//! and the well-known [`ports`]. No I/O, no dependencies beyond `thiserror`.

pub mod flags;
pub mod identity;
pub mod object;
pub mod ports;

pub use flags::ResponseFlag;
pub use identity::{Identity, IdentityError};
pub use object::ObjectRef;
