//! The harness end to end on a tiny matrix, with the real prebuilt binaries and a real Envoy.
//! Builds nothing: `loadtest` and `mesh` must already be in the target directory (CI builds
//! the whole workspace before testing); Envoy is installed into `.bench/venv` when missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_bench::matrix::TestKind;
use mesh_bench::paths::addr;
use mesh_bench::{BenchArgs, PathId};

/// `target/debug`: this test runs as `target/debug/deps/smoke-<hash>`.
fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_owned();
    for binary in ["loadtest", "mesh"] {
        assert!(
            dir.join(binary).is_file(),
            "the `{binary}` binary is missing from {}: the bench smoke test builds nothing. Build it \
             first (`cargo build -p loadtest -p mesh`), or run the workspace's tests \
             (`cargo nextest run --workspace` builds every binary).",
            dir.display()
        );
    }
    dir
}

/// Nothing listens any more on the addresses the run used: every process was stopped.
fn assert_stopped(addresses: &[SocketAddr]) {
    for address in addresses {
        let connected = std::net::TcpStream::connect_timeout(address, Duration::from_millis(300));
        assert!(
            connected.is_err(),
            "{address} still accepts connections after the run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_matrix_runs_every_path_end_to_end_and_stops_everything() {
    let bin_dir = target_bin_dir();

    // 0. A path whose proxy dies fails loudly, the other paths still run, the partial report
    //    says what happened, and everything started is stopped.
    let fake = tempfile::tempdir().expect("tempdir");
    let fake_envoy = fake.path().join("envoy");
    std::fs::write(
        &fake_envoy,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'envoy  version: x/1.40.0/Clean/RELEASE/BoringSSL'; exit 0; fi\n\
         echo 'fake envoy refuses to start' >&2\nexit 1\n",
    )
    .expect("write fake envoy");
    std::fs::set_permissions(
        &fake_envoy,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let out = tempfile::tempdir().expect("tempdir");
    let error = mesh_bench::run(BenchArgs {
        out: out.path().to_owned(),
        quick: true,
        paths: vec![PathId::Direct, PathId::EnvoyTls],
        bin_dir: Some(bin_dir.clone()),
        envoy: Some(fake_envoy),
        ..BenchArgs::default()
    })
    .await
    .expect_err("Envoy cannot start");
    let text = format!("{error:#}");
    assert!(
        text.contains("envoy-tls") && text.contains("fake envoy refuses to start"),
        "{text}"
    );
    let partial = std::fs::read_to_string(out.path().join("report.md")).expect("partial report");
    assert!(partial.contains("| envoy-tls | FAILED: "), "{partial}");
    assert!(
        out.path().join("json/direct-max-r1.json").is_file(),
        "direct still measured"
    );
    assert_stopped(&[addr::BACKEND]);

    // 1. Without the mesh binary, the mesh rows are "not run" and the rest still runs.
    let only_loadtest = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        bin_dir.join("loadtest"),
        only_loadtest.path().join("loadtest"),
    )
    .expect("symlink loadtest");
    let out = tempfile::tempdir().expect("tempdir");
    let report = mesh_bench::run(BenchArgs {
        out: out.path().to_owned(),
        quick: true,
        paths: vec![PathId::Direct, PathId::MeshZtunnel],
        bin_dir: Some(only_loadtest.path().to_owned()),
        ..BenchArgs::default()
    })
    .await
    .expect("direct runs without the mesh binary");
    assert_eq!(
        report.not_run,
        [(PathId::MeshZtunnel, "mesh binary not found".to_owned())]
    );
    assert!(report.markdown.contains("not run: mesh binary not found"));
    assert!(report.samples.iter().all(|s| s.path == PathId::Direct));
    assert_eq!(report.samples.len(), 2, "quick direct: lat-c16 and max");

    // 2. Every path, quick matrix, real binaries. Envoy is located (installed if missing,
    //    which can take a while) before the clock starts.
    let workspace = mesh_bench::setup::workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")));
    let envoy = mesh_bench::envoy::locate(None, &workspace)
        .await
        .unwrap_or_else(|e| panic!("Envoy is needed and could not be found or installed: {e}"));
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let report = mesh_bench::run(BenchArgs {
        out: out.path().to_owned(),
        quick: true,
        bin_dir: Some(bin_dir.clone()),
        envoy: Some(envoy),
        ..BenchArgs::default()
    })
    .await
    .unwrap_or_else(|e| panic!("quick bench failed: {e:#}"));
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(90),
        "--quick took {elapsed:?}"
    );
    assert!(report.failures.is_empty() && report.not_run.is_empty());

    for path in PathId::ALL {
        let tests = report.matrix.tests_for(path);
        for test in &tests {
            let json = out
                .path()
                .join(format!("json/{path}-{}-r1.json", test.name()));
            let sample = report
                .samples
                .iter()
                .find(|s| s.path == path && s.test == *test)
                .unwrap_or_else(|| panic!("no sample for {path} {}", test.name()));
            assert_eq!(sample.json, json);
            assert!(json.is_file(), "{} missing", json.display());
            assert!(sample.requests > 0, "{path} {}: no requests", test.name());
            assert_eq!(sample.errors, 0, "{path} {}: errors", test.name());
            assert!(sample.p50.is_some() && sample.p99 >= sample.p50);
            if path.has_proxy() {
                let cpu = sample.cpu_seconds.expect("proxy CPU measured");
                assert!(cpu > 0.0, "{path} {}: proxy used no CPU?", test.name());
                assert!(sample.memory.expect("proxy memory").rss_kb > 1024);
            } else {
                assert!(sample.cpu_seconds.is_none() && sample.memory.is_none());
            }
        }
        let latency = report
            .samples
            .iter()
            .find(|s| s.path == path && s.test == TestKind::Latency { connections: 16 })
            .expect("latency sample");
        assert!(
            latency.qps > 500.0,
            "{path}: fixed 1000 qps delivered {}",
            latency.qps
        );
    }

    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert_eq!(markdown, report.markdown);
    for heading in [
        "## Max throughput",
        "## Latency at 1000 qps, 16 connections",
        "## Memory",
        "## Streaming",
    ] {
        assert!(markdown.contains(heading), "{heading} missing");
    }
    let waypoint_row = markdown
        .lines()
        .find(|l| l.starts_with("| mesh-waypoint |") && l.contains('×'))
        .expect("mesh-waypoint ratio row");
    assert!(!waypoint_row.contains("not run"), "{waypoint_row}");
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).expect("latency.svg");
    assert_eq!(svg.matches("class=\"bar\"").count(), PathId::ALL.len() * 3);
    assert!(out.path().join("results.json").is_file());

    assert_stopped(&[
        addr::BACKEND,
        addr::envoy_admin(addr::TLS_OUT),
        addr::envoy_admin(addr::WP_WAYPOINT),
        addr::MESH_CLIENT_SOCKS,
    ]);
}

#[test]
fn generated_mesh_manifest_is_valid_for_mesh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh_bench::mesh::manifest()).expect("write manifest");
    let output = std::process::Command::new(target_bin_dir().join("mesh"))
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("run mesh validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "mesh validate failed:\n{stdout}");
    assert!(
        stdout.contains("2 nodes, 3 workloads, 2 services, 1 waypoints"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[tokio::test]
async fn missing_loadtest_fails_loudly() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let error = mesh_bench::run(BenchArgs {
        out: out.path().to_owned(),
        quick: true,
        bin_dir: Some(empty.path().to_owned()),
        ..BenchArgs::default()
    })
    .await
    .expect_err("no loadtest binary");
    let text = format!("{error:#}");
    assert!(
        text.contains("`loadtest` binary is missing") && text.contains("cargo build -p loadtest"),
        "{text}"
    );
}
