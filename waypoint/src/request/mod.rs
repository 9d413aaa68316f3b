//! One request through the waypoint: its context, its attributes, the pipeline of stages
//! that decides where it goes, and the plan it decides on.

pub mod attrs;
pub mod ctx;
pub mod normalize;
pub mod pipeline;
pub mod plan;

pub use attrs::RequestAttrs;
pub use ctx::RequestCtx;
pub use pipeline::{Flow, HeaderLimits, Inputs, plan};
pub use plan::{Backend, MirrorTarget, Plan, RequestEdits, Rolls, UrlRewrite};
