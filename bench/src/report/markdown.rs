//! The Markdown report: one table per metric with ratios against direct and against the Envoy
//! path doing the same job (pure).

use std::fmt::Write as _;

use crate::matrix::{Matrix, TestKind, size_label};
use crate::paths::PathId;
use crate::procfs::Machine;
use crate::stats::{Summary, ratio};

use super::aggregate::{PathSummary, TestSummary};

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    pub command: &'a str,
    pub started_at: &'a str,
    pub machine: &'a Machine,
    pub matrix: &'a Matrix,
    pub envoy_version: Option<&'a str>,
    /// Where `loadtest` and `mesh` came from.
    pub bin_dir: &'a std::path::Path,
    pub results: &'a [PathSummary],
    /// Paths that were not run, and why (e.g. the mesh binary is missing).
    pub not_run: &'a [(PathId, String)],
    /// Paths that failed to start, verify or measure, and how.
    pub failures: &'a [(PathId, String)],
    /// Each process started: name and command line.
    pub processes: &'a [(String, String)],
}

/// A number with about three significant digits.
pub fn num(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else if magnitude >= 0.01 || magnitude == 0.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.4}")
    }
}

/// `median` or `median [min–max]` when rounds differ.
pub fn summary(value: Option<&Summary>) -> String {
    match value {
        None => "—".to_owned(),
        Some(s) if s.n > 1 && s.min != s.max => {
            format!("{} [{}–{}]", num(s.median), num(s.min), num(s.max))
        }
        Some(s) => num(s.median),
    }
}

/// `1.23×`, or `—` when either side is missing.
pub fn times(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) => ratio(v, b).map_or("—".to_owned(), |r| format!("{r:.2}×")),
        _ => "—".to_owned(),
    }
}

/// Renders the whole report.
pub fn render(input: &ReportInput<'_>) -> String {
    let mut out = String::new();
    header(&mut out, input);
    paths_table(&mut out, input);
    throughput_table(&mut out, input);
    for &connections in &input.matrix.connections {
        latency_table(&mut out, input, connections);
    }
    memory_table(&mut out, input);
    streaming_table(&mut out, input);
    reading_notes(&mut out, input);
    processes(&mut out, input);
    out
}

fn header(out: &mut String, input: &ReportInput<'_>) {
    let m = input.machine;
    let matrix = input.matrix;
    let _ = writeln!(out, "# mesh-bench: direct vs Envoy vs the mesh\n");
    let _ = writeln!(out, "- Command: `{}`", input.command);
    let _ = writeln!(out, "- Started: {}", input.started_at);
    let _ = writeln!(
        out,
        "- Machine: {} × {}, {} memory, Linux {}",
        m.cpus, m.model, m.memory, m.kernel
    );
    let _ = writeln!(
        out,
        "- Envoy: {}",
        input.envoy_version.unwrap_or("not used")
    );
    let _ = writeln!(
        out,
        "- Binaries (`loadtest`, `mesh`): `{}`",
        input.bin_dir.display()
    );
    if is_debug_build(input.bin_dir) {
        let _ = writeln!(
            out,
            "- **Unoptimised (debug) binaries: the mesh's numbers are not representative.** Build \
             with `cargo build --release -p loadtest -p mesh` and pass `--bin-dir target/release`."
        );
    }
    let _ = writeln!(
        out,
        "- Matrix: {} round(s), interleaved (every path in turn each round: A/B/A/B); each run {} \
         after a {} warm-up; latency at {} qps over {} connections; max throughput over 16 \
         connections; streams of {} over 4 connections.",
        matrix.rounds,
        humantime::format_duration(matrix.duration),
        humantime::format_duration(matrix.warmup),
        crate::matrix::LATENCY_QPS,
        join(matrix.connections.iter().map(u32::to_string), "/"),
        join(matrix.stream_sizes.iter().map(|&b| size_label(b)), ", "),
    );
    let _ = writeln!(
        out,
        "- Pinning: proxy processes on core 0 (`taskset -c 0`; Envoy `--concurrency 1`), load \
         generator and echo backend on core 1. Values are `median [min–max]` over rounds.\n"
    );
}

/// Text made safe for one Markdown table cell: one line, no column separators.
pub fn table_cell(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .replace('|', "\\|")
}

/// Whether binaries from `dir` are a Cargo debug build (`.../debug`).
pub fn is_debug_build(dir: &std::path::Path) -> bool {
    dir.file_name().is_some_and(|name| name == "debug")
}

fn join(items: impl Iterator<Item = String>, separator: &str) -> String {
    items.collect::<Vec<_>>().join(separator)
}

fn status(input: &ReportInput<'_>, path: PathId) -> Option<String> {
    let find = |list: &[(PathId, String)], prefix: &str| {
        list.iter()
            .find(|(p, _)| *p == path)
            .map(|(_, why)| format!("{prefix}{}", table_cell(why)))
    };
    find(input.not_run, "not run: ").or_else(|| find(input.failures, "FAILED: "))
}

/// Every path of the matrix: measured ones and the ones with a status instead.
fn rows<'a>(
    input: &'a ReportInput<'_>,
) -> impl Iterator<Item = (PathId, Option<&'a PathSummary>)> + 'a {
    input
        .matrix
        .paths
        .iter()
        .map(move |&path| (path, input.results.iter().find(|r| r.path == path)))
}

fn metric(
    input: &ReportInput<'_>,
    path: PathId,
    test: TestKind,
    pick: fn(&TestSummary) -> Option<&Summary>,
) -> Option<f64> {
    let result = input.results.iter().find(|r| r.path == path)?;
    pick(result.test(test)?).map(|s| s.median)
}

fn table_head(out: &mut String, title: &str, note: &str, columns: &[&str]) {
    let _ = writeln!(out, "## {title}\n");
    if !note.is_empty() {
        let _ = writeln!(out, "{note}\n");
    }
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(columns.len()));
}

/// A row for a path without results: its status in the second cell.
fn status_row(out: &mut String, input: &ReportInput<'_>, path: PathId, columns: usize) -> bool {
    let measured = input
        .results
        .iter()
        .any(|r| r.path == path && !r.tests.is_empty());
    if measured {
        return false;
    }
    let why = status(input, path).unwrap_or_else(|| "no result".to_owned());
    let _ = writeln!(
        out,
        "| {path} | {why} |{}",
        " |".repeat(columns.saturating_sub(2))
    );
    true
}

fn paths_table(out: &mut String, input: &ReportInput<'_>) {
    table_head(
        out,
        "Paths",
        "",
        &["path", "through", "compared with", "status"],
    );
    for path in input.matrix.paths.iter().copied() {
        let compared = path
            .envoy_counterpart()
            .map_or("—".to_owned(), |p| p.to_string());
        let state = status(input, path).unwrap_or_else(|| "measured".to_owned());
        let _ = writeln!(
            out,
            "| {path} | {} | {compared} | {state} |",
            path.describe()
        );
    }
    out.push('\n');
}

fn throughput_table(out: &mut String, input: &ReportInput<'_>) {
    let columns = [
        "path",
        "requests/s",
        "× direct",
        "× Envoy",
        "proxy CPU s / 1000 req",
        "CPU × Envoy",
        "errors",
    ];
    table_head(
        out,
        "Max throughput (16 connections, 1 KB, proxy on one core)",
        "Higher rps is better; lower CPU is better.",
        &columns,
    );
    let test = TestKind::Throughput;
    let qps = |p| metric(input, p, test, |t| t.qps.as_ref());
    let cpu = |p| metric(input, p, test, |t| t.cpu_per_1k.as_ref());
    for (path, result) in rows(input) {
        if status_row(out, input, path, columns.len()) {
            continue;
        }
        let Some(t) = result.and_then(|r| r.test(test)) else {
            continue;
        };
        let envoy = path.envoy_counterpart();
        let _ = writeln!(
            out,
            "| {path} | {} | {} | {} | {} | {} | {} |",
            summary(t.qps.as_ref()),
            times(qps(path), qps(PathId::Direct)),
            times(qps(path), envoy.and_then(qps)),
            summary(t.cpu_per_1k.as_ref()),
            times(cpu(path), envoy.and_then(cpu)),
            t.errors
        );
    }
    out.push('\n');
}

const LATENCY_COLUMNS: [&str; 12] = [
    "path",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "added p50",
    "added p90",
    "added p99",
    "added p50 × Envoy",
    "added p99 × Envoy",
    "CPU s / 1000 req",
    "achieved qps",
    "errors",
];

type Pick = fn(&TestSummary) -> Option<&Summary>;
const P50: Pick = |t| t.p50_ms.as_ref();
const P90: Pick = |t| t.p90_ms.as_ref();
const P99: Pick = |t| t.p99_ms.as_ref();

/// Median latency of `path` minus direct's, in ms.
fn added(input: &ReportInput<'_>, path: PathId, test: TestKind, pick: Pick) -> Option<f64> {
    Some(metric(input, path, test, pick)? - metric(input, PathId::Direct, test, pick)?)
}

fn latency_table(out: &mut String, input: &ReportInput<'_>, connections: u32) {
    let title = format!(
        "Latency at {} qps, {connections} connections, 1 KB",
        crate::matrix::LATENCY_QPS
    );
    let note = "Added = this path's median minus direct's (ms). Lower is better.";
    table_head(out, &title, note, &LATENCY_COLUMNS);
    let test = TestKind::Latency { connections };
    for (path, result) in rows(input) {
        if status_row(out, input, path, LATENCY_COLUMNS.len()) {
            continue;
        }
        if let Some(t) = result.and_then(|r| r.test(test)) {
            latency_row(out, input, path, test, t);
        }
    }
    out.push('\n');
}

fn latency_row(
    out: &mut String,
    input: &ReportInput<'_>,
    path: PathId,
    test: TestKind,
    t: &TestSummary,
) {
    let added_cell = |pick| {
        let value = (path != PathId::Direct)
            .then(|| added(input, path, test, pick))
            .flatten();
        value.map_or("—".to_owned(), |v| format!("{v:+.3}"))
    };
    let versus_envoy = |pick| {
        let envoy = path.envoy_counterpart();
        times(
            added(input, path, test, pick),
            envoy.and_then(|e| added(input, e, test, pick)),
        )
    };
    let _ = writeln!(
        out,
        "| {path} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        summary(t.p50_ms.as_ref()),
        summary(t.p90_ms.as_ref()),
        summary(t.p99_ms.as_ref()),
        added_cell(P50),
        added_cell(P90),
        added_cell(P99),
        versus_envoy(P50),
        versus_envoy(P99),
        summary(t.cpu_per_1k.as_ref()),
        summary(t.qps.as_ref()),
        t.errors
    );
}

fn memory_table(out: &mut String, input: &ReportInput<'_>) {
    let columns = [
        "path",
        "RSS MiB at 1000 qps",
        "RSS × Envoy",
        "peak RSS MiB (latency + max runs)",
        "peak × Envoy",
    ];
    table_head(
        out,
        "Memory of the proxy processes",
        "RSS right after the last latency run; peak = VmHWM over the round's latency and max runs.",
        &columns,
    );
    let last_latency = input
        .matrix
        .connections
        .last()
        .map(|&connections| TestKind::Latency { connections });
    let rss = |p| metric(input, p, last_latency?, |t| t.rss_mib.as_ref());
    let peak = |p| metric(input, p, TestKind::Throughput, |t| t.peak_mib.as_ref());
    for (path, result) in rows(input) {
        if !path.has_proxy() || status_row(out, input, path, columns.len()) {
            continue;
        }
        let Some(result) = result else { continue };
        let envoy = path.envoy_counterpart();
        let rss_cell = last_latency
            .and_then(|t| result.test(t))
            .map(|t| summary(t.rss_mib.as_ref()));
        let peak_cell = result
            .test(TestKind::Throughput)
            .map(|t| summary(t.peak_mib.as_ref()));
        let _ = writeln!(
            out,
            "| {path} | {} | {} | {} | {} |",
            rss_cell.unwrap_or_else(|| "—".to_owned()),
            times(rss(path), envoy.and_then(rss)),
            peak_cell.unwrap_or_else(|| "—".to_owned()),
            times(peak(path), envoy.and_then(peak)),
        );
    }
    out.push('\n');
}

fn streaming_table(out: &mut String, input: &ReportInput<'_>) {
    let sizes = &input.matrix.stream_sizes;
    let mut columns = vec!["path".to_owned()];
    for &bytes in sizes {
        columns.push(format!("{} peak MiB", size_label(bytes)));
        columns.push(format!("{} MiB/s", size_label(bytes)));
    }
    columns.push("peak growth, smallest → largest".to_owned());
    let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    table_head(
        out,
        "Streaming responses (4 connections, as fast as possible)",
        "Peak RSS of the proxy processes during each run (VmHWM reset just before it). Flat = streaming, not buffering.",
        &refs,
    );
    for (path, result) in rows(input) {
        if !path.has_proxy() || status_row(out, input, path, refs.len()) {
            continue;
        }
        let Some(result) = result else { continue };
        let mut line = format!("| {path} |");
        let mut peaks = Vec::new();
        for &bytes in sizes {
            let test = result.test(TestKind::Stream { bytes });
            peaks.push(test.and_then(|t| t.peak_mib.map(|s| s.median)));
            let _ = write!(
                line,
                " {} | {} |",
                summary(test.and_then(|t| t.peak_mib.as_ref())),
                summary(test.and_then(|t| t.mib_per_second.as_ref()))
            );
        }
        let growth = match (
            peaks.first().copied().flatten(),
            peaks.last().copied().flatten(),
        ) {
            (Some(first), Some(last)) => format!("{:+.1} MiB", last - first),
            _ => "—".to_owned(),
        };
        let _ = writeln!(out, "{line} {growth} |");
    }
    out.push('\n');
}

fn reading_notes(out: &mut String, input: &ReportInput<'_>) {
    let _ = writeln!(out, "## How to read this\n");
    let notes = [
        "**× direct** divides a path's median by the direct path's; **× Envoy** divides a mesh path's median by the Envoy path doing the same job (mesh-ztunnel ↔ envoy-hbone, mesh-waypoint ↔ envoy-hbone-waypoint). For throughput higher is better; for latency, CPU and memory lower is better.",
        "Absolute numbers from a small shared VM move by up to ±25 % between rounds; trust the ratios measured side by side in one run.",
        "Latency runs are open-loop at a fixed 1000 qps (`-uniform -nocatchup`): latency is never quoted at saturation. Max-throughput runs are closed-loop.",
        "CPU is utime + stime of the path's proxy processes (/proc/<pid>/stat) during the measured run, per 1000 requests. Envoy rows sum their 2 or 3 Envoy processes.",
        "Mesh rows: `mesh up` runs both ztunnels and the waypoint in ONE process, so mesh CPU and RSS are that whole process (in mesh-ztunnel rows the idle waypoint's memory is included).",
        "Envoy is configured per its benchmarking advice: one worker, circuit breakers out of reach, no request ids, no dynamic stats, stats off, no access logs, TLS 1.3 only (AES-GCM suites), mutual TLS with SPIFFE certificates. The mesh runs with logs at `warn` (no access logs).",
        "Every run's fortio-format JSON is in `json/<path>-<test>-r<round>.json`; the latency chart is `latency.svg`; process logs are in `logs/`.",
    ];
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    if !input.failures.is_empty() {
        let _ = writeln!(out, "\n**Failures:**\n");
        for (path, why) in input.failures {
            let _ = writeln!(out, "- {path}: {}", why.replace('\n', " "));
        }
    }
    out.push('\n');
}

fn processes(out: &mut String, input: &ReportInput<'_>) {
    if input.processes.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Processes started\n");
    for (name, line) in input.processes {
        let _ = writeln!(out, "- {name}: `{line}`");
    }
}
