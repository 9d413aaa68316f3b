//! A hand-written SVG bar chart of p50/p90/p99 latency per path at 1000 qps: one panel per
//! connection count, log scale, whiskers for the min–max over rounds (pure).

use std::fmt::Write as _;

use crate::matrix::{LATENCY_QPS, TestKind};
use crate::stats::Summary;

use super::aggregate::PathSummary;

const PANEL_HEIGHT: f64 = 220.0;
const PANEL_GAP: f64 = 70.0;
const TOP: f64 = 70.0;
const LEFT: f64 = 70.0;
const GROUP_WIDTH: f64 = 150.0;
const BAR_WIDTH: f64 = 30.0;
const MIN_WIDTH: f64 = 620.0;
const SERIES: [(&str, &str); 3] = [("p50", "#4e79a7"), ("p90", "#f28e2b"), ("p99", "#e15759")];

/// Escapes text for an SVG text node or attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Whole decades around `[min, max]` for a log axis: `(10^floor(log min), 10^ceil(log max))`,
/// at least one decade apart; `(0.01, 1)` without positive finite values.
pub fn decade_bounds(min: f64, max: f64) -> (f64, f64) {
    if !(min.is_finite() && max.is_finite() && min > 0.0 && max >= min) {
        return (0.01, 1.0);
    }
    let lo = min.log10().floor();
    let hi = max.log10().ceil().max(lo + 1.0);
    (10f64.powf(lo), 10f64.powf(hi))
}

fn percentiles(result: &PathSummary, connections: u32) -> [Option<Summary>; 3] {
    let test = result.test(TestKind::Latency { connections });
    [
        test.and_then(|t| t.p50_ms),
        test.and_then(|t| t.p90_ms),
        test.and_then(|t| t.p99_ms),
    ]
}

/// The chart for `results` (paths with latency results) at each of `connections`.
pub fn render(results: &[PathSummary], connections: &[u32]) -> String {
    let paths: Vec<&PathSummary> = results
        .iter()
        .filter(|r| {
            connections
                .iter()
                .any(|&c| r.test(TestKind::Latency { connections: c }).is_some())
        })
        .collect();
    let width = (LEFT + 20.0 + GROUP_WIDTH * paths.len().max(1) as f64).max(MIN_WIDTH);
    let height = TOP + (PANEL_HEIGHT + PANEL_GAP) * connections.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">Latency at {LATENCY_QPS} qps, 1 KB responses, ms (log scale)</text>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="47" fill="#555">bar = median, whisker = min–max over rounds</text>"##,
        LEFT + 220.0
    );
    legend(&mut svg);
    for (index, &c) in connections.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL_HEIGHT + PANEL_GAP);
        panel(&mut svg, &paths, c, top);
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String) {
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let x = LEFT + i as f64 * 70.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="36" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(svg, r#"<text x="{}" y="47">{name}</text>"#, x + 16.0);
    }
}

/// A log-scale vertical axis over one panel.
struct Axis {
    lo: f64,
    hi: f64,
    bottom: f64,
}

impl Axis {
    fn new(values: &[Summary], bottom: f64) -> Axis {
        let positive = values.iter().map(|s| s.min).filter(|v| *v > 0.0);
        let smallest = positive.fold(f64::INFINITY, f64::min);
        let largest = values.iter().map(|s| s.max).fold(0.0, f64::max);
        let (lo, hi) = decade_bounds(smallest, largest);
        Axis { lo, hi, bottom }
    }

    /// The y coordinate of `value`; values below the axis (0 included) sit on its bottom.
    fn y(&self, value: f64) -> f64 {
        let span = self.hi.log10() - self.lo.log10();
        let fraction = (value.max(self.lo).log10() - self.lo.log10()) / span;
        self.bottom - fraction.clamp(0.0, 1.0) * (PANEL_HEIGHT - 20.0)
    }

    /// Grid lines at 1, 2 and 5 × each decade; labels at the decades.
    fn grid(&self, svg: &mut String, right: f64) {
        let mut decade = self.lo;
        while decade <= self.hi * 1.000_001 {
            for (step, labelled) in [(1.0, true), (2.0, false), (5.0, false)] {
                let value = decade * step;
                if value > self.hi * 1.000_001 {
                    break;
                }
                let ty = self.y(value);
                let stroke = if labelled { "#ccc" } else { "#eee" };
                let _ = writeln!(
                    svg,
                    r#"<line x1="{LEFT}" y1="{ty:.1}" x2="{right:.1}" y2="{ty:.1}" stroke="{stroke}"/>"#
                );
                if labelled {
                    let _ = writeln!(
                        svg,
                        r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                        LEFT - 6.0,
                        ty + 4.0,
                        tick_label(value)
                    );
                }
            }
            decade *= 10.0;
        }
    }
}

fn panel(svg: &mut String, paths: &[&PathSummary], connections: u32, top: f64) {
    let values: Vec<Summary> = paths
        .iter()
        .flat_map(|r| percentiles(r, connections))
        .flatten()
        .collect();
    let bottom = top + PANEL_HEIGHT;
    let axis = Axis::new(&values, bottom);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{connections} connections</text>"#,
        top + 4.0
    );
    axis.grid(svg, LEFT + GROUP_WIDTH * paths.len().max(1) as f64);
    for (group, result) in paths.iter().enumerate() {
        let x0 = LEFT + group as f64 * GROUP_WIDTH + 20.0;
        for (series, value) in percentiles(result, connections).into_iter().enumerate() {
            let Some(value) = value else { continue };
            let x = x0 + series as f64 * (BAR_WIDTH + 4.0);
            bar(svg, x, &value, SERIES[series].1, &axis);
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + 1.5 * BAR_WIDTH + 4.0,
            bottom + 18.0,
            escape(result.path.name())
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{bottom}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
        top + 10.0
    );
}

fn bar(svg: &mut String, x: f64, value: &Summary, color: &str, axis: &Axis) {
    let top = axis.y(value.median);
    let bottom = axis.y(0.0);
    let _ = writeln!(
        svg,
        r#"<rect class="bar" x="{x:.1}" y="{top:.1}" width="{BAR_WIDTH}" height="{:.1}" fill="{color}"><title>{:.3} ms</title></rect>"#,
        (bottom - top).max(0.5),
        value.median
    );
    if value.max > value.min {
        let cx = x + BAR_WIDTH / 2.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="black"/>"#,
            axis.y(value.min),
            axis.y(value.max)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
        x + BAR_WIDTH / 2.0,
        axis.y(value.max) - 3.0,
        tick_label(value.median)
    );
}

fn tick_label(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else if value >= 0.01 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}
