//! One request through the waypoint: its context, its attributes, and the pipeline of stages
//! that decides where it goes.

pub mod attrs;
pub mod ctx;
pub mod normalize;
pub mod pipeline;

pub use attrs::RequestAttrs;
pub use ctx::RequestCtx;
pub use pipeline::{
    Backend, Flow, HeaderLimits, Inputs, MirrorTarget, Plan, RequestEdits, Rolls, UrlRewrite, plan,
};
