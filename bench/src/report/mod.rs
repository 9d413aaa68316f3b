//! Turning samples into the report: aggregation, Markdown and the SVG chart (all pure).

pub mod aggregate;
pub mod markdown;
pub mod svg;

pub use aggregate::{PathSummary, Sample, TestSummary, aggregate};
pub use markdown::{ReportInput, render as render_markdown};
pub use svg::render as render_svg;
