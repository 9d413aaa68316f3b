//! A hand-written SVG bar chart of p50/p90/p99 latency per path at 1000 qps: one panel per
//! connection count, whiskers for the min–max over rounds (pure).

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
const SERIES: [(&str, &str); 3] = [("p50", "#4e79a7"), ("p90", "#f28e2b"), ("p99", "#e15759")];

/// Escapes text for an SVG text node or attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for an axis whose largest value is `max` (1, 2, 2.5 or 5 × 10^k).
pub fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|&bound| bound >= max * 0.999_999)
        .unwrap_or(10.0 * power)
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
        .filter(|r| connections.iter().any(|&c| r.test(TestKind::Latency { connections: c }).is_some()))
        .collect();
    let width = LEFT + 20.0 + GROUP_WIDTH * paths.len().max(1) as f64;
    let height = TOP + (PANEL_HEIGHT + PANEL_GAP) * connections.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">Latency at {LATENCY_QPS} qps, 1 KB responses (ms; bar = median, whisker = min–max over rounds)</text>"#
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
        let _ = writeln!(svg, r#"<rect x="{x}" y="36" width="12" height="12" fill="{color}"/>"#);
        let _ = writeln!(svg, r#"<text x="{}" y="47">{name}</text>"#, x + 16.0);
    }
}

fn panel(svg: &mut String, paths: &[&PathSummary], connections: u32, top: f64) {
    let max = paths
        .iter()
        .flat_map(|r| percentiles(r, connections))
        .flatten()
        .map(|s| s.max)
        .fold(0.0, f64::max);
    let ceiling = nice_ceiling(max);
    let bottom = top + PANEL_HEIGHT;
    let y = |value: f64| bottom - (value / ceiling).clamp(0.0, 1.0) * (PANEL_HEIGHT - 20.0);
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="{}" font-weight="bold">{connections} connections</text>"#, top + 4.0);
    for tick in 0..=4 {
        let value = ceiling * f64::from(tick) / 4.0;
        let ty = y(value);
        let right = LEFT + GROUP_WIDTH * paths.len().max(1) as f64;
        let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{right:.1}" y2="{ty:.1}" stroke="#ddd"/>"##);
        let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, ty + 4.0, tick_label(value));
    }
    for (group, result) in paths.iter().enumerate() {
        let x0 = LEFT + group as f64 * GROUP_WIDTH + 20.0;
        for (series, value) in percentiles(result, connections).into_iter().enumerate() {
            let Some(value) = value else { continue };
            bar(svg, x0 + series as f64 * (BAR_WIDTH + 4.0), &value, SERIES[series].1, &y);
        }
        let name = escape(result.path.name());
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{name}</text>"#,
            x0 + 1.5 * BAR_WIDTH + 4.0,
            bottom + 18.0
        );
    }
    let _ = writeln!(svg, r#"<line x1="{LEFT}" y1="{bottom}" x2="{LEFT}" y2="{}" stroke="black"/>"#, top + 10.0);
}

fn bar(svg: &mut String, x: f64, value: &Summary, color: &str, y: &dyn Fn(f64) -> f64) {
    let top = y(value.median);
    let bottom = y(0.0);
    let _ = writeln!(
        svg,
        r#"<rect class="bar" x="{x:.1}" y="{top:.1}" width="{BAR_WIDTH}" height="{:.1}" fill="{color}"><title>{:.3} ms</title></rect>"#,
        (bottom - top).max(0.5),
        value.median
    );
    if value.max > value.min {
        let cx = x + BAR_WIDTH / 2.0;
        let _ = writeln!(svg, r#"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="black"/>"#, y(value.min), y(value.max));
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
        x + BAR_WIDTH / 2.0,
        y(value.max) - 3.0,
        tick_label(value.median)
    );
}

fn tick_label(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
