//! The pure parts: statistics, fortio JSON, aggregation, the Markdown report and the SVG chart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_bench::fortio::FortioResult;
use mesh_bench::matrix::{Matrix, TestKind};
use mesh_bench::paths::PathId;
use mesh_bench::procfs::{Machine, Memory};
use mesh_bench::report::{self, PathSummary, ReportInput, Sample};
use mesh_bench::stats::{median, range, ratio, summarize};

fn fixture() -> FortioResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fortio-latency.json");
    FortioResult::read(&path).expect("fixture parses")
}

#[test]
fn median_range_and_ratio() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    assert_eq!(
        median(&[f64::NAN, 5.0]),
        Some(5.0),
        "non-finite values are ignored"
    );
    assert_eq!(range(&[2.0, -1.0, 7.5]), Some((-1.0, 7.5)));
    assert_eq!(range(&[f64::INFINITY]), None);
    assert_eq!(ratio(6.0, 3.0), Some(2.0));
    assert_eq!(ratio(1.0, 0.0), None);
    assert_eq!(ratio(1.0, f64::NAN), None);
    let s = summarize(&[10.0, 30.0, 20.0]).expect("summary");
    assert_eq!((s.median, s.min, s.max, s.n), (20.0, 10.0, 30.0, 3));
}

#[test]
fn fortio_json_fields_are_read() {
    let result = fixture();
    assert_eq!(result.requested_qps, "1000");
    assert_eq!(result.num_threads, 16);
    assert_eq!(result.requests(), 5000);
    assert_eq!(result.errors(), 10);
    assert_eq!(result.percentile(50.0), Some(0.00028));
    assert_eq!(result.percentile(99.9), Some(0.0035));
    assert_eq!(result.percentile(95.0), None);
    let bps = result.bytes_per_second().expect("sizes");
    assert!((bps - 5_830_000.0 / 5.0015).abs() < 1.0, "{bps}");
}

#[test]
fn a_broken_fortio_file_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.json");
    std::fs::write(&file, "{\"ActualQPS\": 1").expect("write");
    let error = FortioResult::read(&file).expect_err("truncated JSON");
    assert!(error.to_string().contains("broken.json"), "{error}");
}

/// A sample whose latencies scale with `factor` and whose proxy uses `cpu` seconds.
fn sample(
    path: PathId,
    test: TestKind,
    round: u32,
    factor: f64,
    qps: f64,
    cpu: Option<f64>,
    rss_mib: u64,
) -> Sample {
    let mut result = fixture();
    result.actual_qps = qps;
    result.ret_codes.remove("503");
    for p in result.durations.percentiles.iter_mut().flatten() {
        p.value *= factor;
    }
    let memory = path.has_proxy().then_some(Memory {
        rss_kb: rss_mib * 1024,
        peak_kb: rss_mib * 1024 + 1024,
    });
    Sample::new(
        path,
        test,
        round,
        PathBuf::from("x.json"),
        &result,
        cpu,
        memory,
    )
}

fn matrix(paths: Vec<PathId>) -> Matrix {
    Matrix {
        rounds: 3,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        paths,
        connections: vec![16],
        stream_sizes: vec![1024, 1 << 20],
    }
}

fn samples() -> Vec<Sample> {
    let lat = TestKind::Latency { connections: 16 };
    let mut all = Vec::new();
    for round in 1..=3 {
        let jitter = f64::from(round) * 0.01;
        all.push(sample(PathId::Direct, lat, round, 1.0, 1000.0, None, 0));
        all.push(sample(
            PathId::Direct,
            TestKind::Throughput,
            round,
            1.0,
            40_000.0 + f64::from(round),
            None,
            0,
        ));
        all.push(sample(
            PathId::EnvoyHboneWaypoint,
            lat,
            round,
            3.0 + jitter,
            1000.0,
            Some(1.25),
            200,
        ));
        all.push(sample(
            PathId::EnvoyHboneWaypoint,
            TestKind::Throughput,
            round,
            3.0,
            10_000.0,
            Some(0.5),
            200,
        ));
        all.push(sample(
            PathId::MeshWaypoint,
            lat,
            round,
            2.0,
            1000.0,
            Some(0.5),
            20,
        ));
        all.push(sample(
            PathId::MeshWaypoint,
            TestKind::Throughput,
            round,
            2.0,
            20_000.0,
            Some(0.25),
            20,
        ));
        for (bytes, rss) in [(1024, 20), (1 << 20, 21)] {
            all.push(sample(
                PathId::MeshWaypoint,
                TestKind::Stream { bytes },
                round,
                2.0,
                100.0,
                Some(0.1),
                rss,
            ));
        }
    }
    all
}

#[test]
fn aggregation_takes_medians_and_ranges_per_path_and_test() {
    let paths = vec![
        PathId::Direct,
        PathId::EnvoyHboneWaypoint,
        PathId::MeshWaypoint,
    ];
    let results = report::aggregate(&paths, &samples());
    assert_eq!(results.len(), 3);
    let direct_max = results[0].test(TestKind::Throughput).expect("direct max");
    let qps = direct_max.qps.expect("qps");
    assert_eq!(
        (qps.median, qps.min, qps.max, qps.n),
        (40_002.0, 40_001.0, 40_003.0, 3)
    );
    assert_eq!(direct_max.cpu_per_1k, None, "no proxy on the direct path");
    let envoy_lat = results[1]
        .test(TestKind::Latency { connections: 16 })
        .expect("envoy lat");
    let p50 = envoy_lat.p50_ms.expect("p50");
    assert!((p50.median - 0.28 * 3.02).abs() < 1e-9, "{p50:?}");
    assert!(p50.max > p50.min);
    let cpu = envoy_lat.cpu_per_1k.expect("cpu").median;
    assert!((cpu - 1.25 * 1000.0 / 5000.0).abs() < 1e-9, "{cpu}");
    assert_eq!(envoy_lat.rss_mib.expect("rss").median, 200.0);
    assert_eq!(results[2].tests.len(), 4);
}

fn render(paths: Vec<PathId>, results: &[PathSummary], not_run: &[(PathId, String)]) -> String {
    let machine = Machine {
        cpus: 2,
        model: "Test CPU".to_owned(),
        kernel: "6.1".to_owned(),
        memory: "24 GiB".to_owned(),
    };
    let matrix = matrix(paths);
    report::render_markdown(&ReportInput {
        command: "loadtest bench --rounds 3",
        started_at: "2024-05-01T10:00:00Z",
        machine: &machine,
        matrix: &matrix,
        envoy_version: Some("1.40.0/Clean/RELEASE/BoringSSL"),
        bin_dir: Path::new("/repo/target/release"),
        results,
        not_run,
        failures: &[],
        processes: &[(
            "backend".to_owned(),
            "taskset -c 1 loadtest server".to_owned(),
        )],
    })
}

fn row<'a>(markdown: &'a str, table: &str, path: &str) -> &'a str {
    let start = markdown
        .find(table)
        .unwrap_or_else(|| panic!("no table {table:?}:\n{markdown}"));
    markdown[start..]
        .lines()
        .find(|line| line.starts_with(&format!("| {path} |")))
        .unwrap_or_else(|| panic!("no row {path} in {table}:\n{markdown}"))
}

#[test]
fn markdown_has_ratio_tables_against_direct_and_envoy() {
    let paths = vec![
        PathId::Direct,
        PathId::EnvoyHboneWaypoint,
        PathId::MeshWaypoint,
    ];
    let results = report::aggregate(&paths, &samples());
    let markdown = render(paths, &results, &[]);
    assert!(markdown.contains("loadtest bench --rounds 3"));
    assert!(markdown.contains("2 × Test CPU") && markdown.contains("Linux 6.1"));
    assert!(
        !markdown.contains("debug) binaries"),
        "release bin dir: no warning"
    );
    let max = row(&markdown, "## Max throughput", "mesh-waypoint");
    // 20000 rps: 0.50× direct (40002), 2.00× Envoy (10000).
    assert!(max.contains("| 20000 | 0.50× | 2.00× |"), "{max}");
    let latency = row(&markdown, "## Latency at 1000 qps, 16", "mesh-waypoint");
    // Added p50: mesh 0.56 − 0.28 = +0.280 ms; Envoy 0.28×3.02 − 0.28 = +0.5656 → 0.50×.
    assert!(latency.contains("+0.280"), "{latency}");
    assert!(latency.contains("0.50×"), "{latency}");
    let envoy_latency = row(
        &markdown,
        "## Latency at 1000 qps, 16",
        "envoy-hbone-waypoint",
    );
    assert!(
        envoy_latency.contains('['),
        "ranges shown when rounds differ: {envoy_latency}"
    );
    let memory = row(&markdown, "## Memory", "mesh-waypoint");
    assert!(memory.contains("| 20.0 | 0.10× |"), "{memory}");
    let streams = row(&markdown, "## Streaming", "mesh-waypoint");
    assert!(streams.contains("+1.0 MiB"), "{streams}");
    assert!(
        !markdown.contains("| direct | — | — |\n| direct"),
        "direct appears once per table"
    );
    assert!(markdown.contains("- backend: `taskset -c 1 loadtest server`"));
}

#[test]
fn paths_not_run_get_a_row_saying_why() {
    let paths = vec![PathId::Direct, PathId::MeshZtunnel];
    let results = report::aggregate(&[PathId::Direct], &samples());
    let not_run = [(PathId::MeshZtunnel, "mesh binary not found".to_owned())];
    let markdown = render(paths, &results, &not_run);
    let max = row(&markdown, "## Max throughput", "mesh-ztunnel");
    assert!(max.contains("not run: mesh binary not found"), "{max}");
    let listed = row(&markdown, "## Paths", "mesh-ztunnel");
    assert!(
        listed.contains("not run: mesh binary not found"),
        "{listed}"
    );
    assert!(row(&markdown, "## Memory", "mesh-ztunnel").contains("not run"));
}

#[test]
fn svg_chart_has_a_bar_per_percentile_path_and_panel() {
    let paths = vec![
        PathId::Direct,
        PathId::EnvoyHboneWaypoint,
        PathId::MeshWaypoint,
    ];
    let results = report::aggregate(&paths, &samples());
    let svg = report::render_svg(&results, &[16]);
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("class=\"bar\"").count(),
        9,
        "3 paths × p50/p90/p99"
    );
    for path in &paths {
        assert!(svg.contains(&format!(">{path}</text>")), "label {path}");
    }
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    assert!(svg.contains("16 connections"));
    // Two panels for two connection counts; no bars where a count has no results.
    let two = report::render_svg(&results, &[16, 64]);
    assert_eq!(two.matches("class=\"bar\"").count(), 9);
    assert!(two.contains("64 connections"));
}

#[test]
fn failures_stay_inside_their_table_cell() {
    use mesh_bench::report::markdown::table_cell;
    assert_eq!(
        table_cell("exited early\nlog line | with pipe\n\n"),
        "exited early / log line \\| with pipe"
    );
}

#[test]
fn svg_helpers() {
    use mesh_bench::report::svg::{decade_bounds, escape};
    assert_eq!(escape("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    assert_eq!(decade_bounds(0.12, 58.0), (0.1, 100.0));
    assert_eq!(decade_bounds(0.5, 0.5), (0.1, 1.0));
    assert_eq!(decade_bounds(2.0, 2.0), (1.0, 10.0));
    assert_eq!(decade_bounds(0.0, 1.0), (0.01, 1.0), "no positive minimum");
}
