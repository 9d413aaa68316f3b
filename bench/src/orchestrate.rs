//! `run`: start everything, verify each path, measure in interleaved rounds, write the report,
//! stop everything.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use serde::Serialize;

use crate::args::BenchArgs;
use crate::certs::BenchCa;
use crate::envoy;
use crate::fleet::Fleet;
use crate::matrix::{Matrix, SMALL_RESPONSE};
use crate::measure::{LoadRunner, fresh_dir};
use crate::paths::PathId;
use crate::procfs::{self, Machine};
use crate::report::{self, PathSummary, ReportInput, Sample};
use crate::setup::{self, Binaries, Cores, Launch};

/// The outcome of a run; the files are already written.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out_dir: PathBuf,
    /// `<out>/report.md`
    pub report_path: PathBuf,
    /// `<out>/latency.svg`
    pub chart_path: PathBuf,
    pub command: String,
    pub machine: Machine,
    pub matrix: Matrix,
    pub envoy_version: Option<String>,
    pub bin_dir: PathBuf,
    pub samples: Vec<Sample>,
    pub results: Vec<PathSummary>,
    /// Paths not run, and why (only: the mesh binary is missing).
    pub not_run: Vec<(PathId, String)>,
    /// Paths that failed; `run` returns an error when this is not empty.
    pub failures: Vec<(PathId, String)>,
    pub markdown: String,
}

/// Runs the benchmark described by `args`. Ctrl-C stops every process started and fails.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    tokio::select! {
        result = run_to_completion(args) => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process the bench started was stopped"),
    }
}

struct Layout {
    out: PathBuf,
    json: PathBuf,
    logs: PathBuf,
    run: PathBuf,
}

impl Layout {
    fn create(out: &Path) -> anyhow::Result<Layout> {
        let layout = Layout {
            out: out.to_owned(),
            json: out.join("json"),
            logs: out.join("logs"),
            run: out.join("run"),
        };
        for dir in [&layout.json, &layout.logs, &layout.run] {
            fresh_dir(dir)?;
        }
        Ok(layout)
    }
}

/// Paths, minus the mesh ones when the mesh binary is missing (printed and recorded).
fn runnable_paths(
    matrix: &Matrix,
    binaries: &Binaries,
    bin_dir: &Path,
) -> (Vec<PathId>, Vec<(PathId, String)>) {
    let mut not_run = Vec::new();
    let paths = matrix
        .paths
        .iter()
        .copied()
        .filter(|path| {
            if path.is_mesh() && binaries.mesh.is_none() {
                eprintln!(
                    "mesh-bench: {path}: not run: mesh binary not found in {}",
                    bin_dir.display()
                );
                not_run.push((*path, "mesh binary not found".to_owned()));
                return false;
            }
            true
        })
        .collect();
    (paths, not_run)
}

/// Everything decided and located before any process starts.
struct Prepared {
    started_at: String,
    matrix: Matrix,
    bin_dir: PathBuf,
    binaries: Binaries,
    layout: Layout,
    paths: Vec<PathId>,
    not_run: Vec<(PathId, String)>,
    envoy: Option<PathBuf>,
    envoy_version: Option<String>,
    machine: Machine,
}

async fn prepare(args: BenchArgs) -> anyhow::Result<Prepared> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let matrix = Matrix::from_args(&args);
    let bin_dir = setup::bin_dir(args.bin_dir.as_deref())?;
    let binaries = Binaries::find(&bin_dir)?;
    let layout = Layout::create(&args.out)?;
    let (paths, not_run) = runnable_paths(&matrix, &binaries, &bin_dir);
    setup::ensure_free(&paths)?;
    let envoy = if paths.iter().any(|p| p.is_envoy()) {
        let cwd = std::env::current_dir().context("current directory")?;
        Some(envoy::locate(args.envoy.as_deref(), &setup::workspace_root(&cwd)).await?)
    } else {
        None
    };
    let envoy_version = match &envoy {
        Some(binary) => Some(envoy::version(binary).await?),
        None => None,
    };
    Ok(Prepared {
        started_at,
        matrix,
        bin_dir,
        binaries,
        layout,
        paths,
        not_run,
        envoy,
        envoy_version,
        machine: Machine::detect(),
    })
}

async fn run_to_completion(args: BenchArgs) -> anyhow::Result<Report> {
    let prepared = prepare(args).await?;
    let Prepared {
        matrix,
        layout,
        binaries,
        machine,
        ..
    } = &prepared;
    eprintln!(
        "mesh-bench: {} path(s), {} round(s), about {} s of load; output in {}",
        prepared.paths.len(),
        matrix.rounds,
        matrix.load_time().as_secs(),
        layout.out.display()
    );
    let mut fleet = Fleet::new(&layout.logs);
    let cores = Cores::for_cpus(machine.cpus);
    let runner = LoadRunner {
        loadtest: binaries.loadtest.clone(),
        core: cores.load,
        json_dir: layout.json.clone(),
        duration: matrix.duration,
        warmup: matrix.warmup,
    };
    setup::start_backend(binaries, cores, &mut fleet).await?;
    let ca = BenchCa::create(&layout.run)?;
    let launch = Launch {
        envoy: prepared.envoy.as_deref(),
        mesh: binaries.mesh.as_deref(),
        run_dir: &layout.run,
        ca: &ca,
        cores,
    };
    let mut failures = Vec::new();
    let running = start_paths(&prepared.paths, &launch, &runner, &mut fleet, &mut failures).await;
    let samples = run_rounds(&runner, matrix, &running, &mut fleet, &mut failures).await;
    let processes = fleet.started().to_vec();
    fleet.stop();
    finish(prepared, samples, failures, processes)
}

/// Writes the report; fails (after writing it) when a path failed.
fn finish(
    prepared: Prepared,
    samples: Vec<Sample>,
    failures: Vec<(PathId, String)>,
    processes: Vec<(String, String)>,
) -> anyhow::Result<Report> {
    let layout = &prepared.layout;
    let outcome = Outcome {
        started_at: prepared.started_at.clone(),
        bin_dir: prepared.bin_dir.clone(),
        matrix: prepared.matrix.clone(),
        machine: prepared.machine.clone(),
        envoy_version: prepared.envoy_version.clone(),
        samples,
        not_run: prepared.not_run.clone(),
        failures,
        processes,
    };
    let report = write_report(layout, outcome)?;
    eprintln!("mesh-bench: report in {}", report.report_path.display());
    if !report.failures.is_empty() {
        let list: Vec<String> = report
            .failures
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect();
        anyhow::bail!(
            "{} path(s) failed (partial report in {}):\n{}",
            list.len(),
            report.report_path.display(),
            list.join("\n")
        );
    }
    Ok(report)
}

/// Starts and verifies each path; a path that fails is recorded and left out.
async fn start_paths(
    paths: &[PathId],
    launch: &Launch<'_>,
    runner: &LoadRunner,
    fleet: &mut Fleet,
    failures: &mut Vec<(PathId, String)>,
) -> Vec<(PathId, Vec<u32>)> {
    let mut running = Vec::new();
    let mut mesh_pid = None;
    for &path in paths {
        let started = async {
            let pids = setup::start_path(path, launch, &mut mesh_pid, fleet).await?;
            runner
                .verify_with_retries(path, &path.entry(), SMALL_RESPONSE)
                .await?;
            Ok::<_, crate::BenchError>(pids)
        }
        .await;
        match started {
            Ok(pids) => {
                eprintln!("mesh-bench: {path}: ready (answers the echo body; proxy pids {pids:?})");
                running.push((path, pids));
            }
            Err(error) => {
                eprintln!("mesh-bench: {path}: FAILED to start: {error}");
                failures.push((path, error.to_string()));
            }
        }
    }
    running
}

/// Rounds interleaved: every round visits every path in turn and runs its whole matrix.
async fn run_rounds(
    runner: &LoadRunner,
    matrix: &Matrix,
    running: &[(PathId, Vec<u32>)],
    fleet: &mut Fleet,
    failures: &mut Vec<(PathId, String)>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for round in 1..=matrix.rounds {
        for (path, pids) in running {
            if failures.iter().any(|(failed, _)| failed == path) {
                continue;
            }
            if !pids.is_empty() {
                procfs::reset_peak(pids);
            }
            for test in matrix.tests_for(*path) {
                match runner.measure(*path, pids, test, round).await {
                    Ok(sample) => {
                        eprintln!("mesh-bench: r{round} {}", progress_line(&sample));
                        samples.push(sample);
                    }
                    Err(error) => {
                        let why = fleet
                            .check_alive()
                            .err()
                            .map_or(error.to_string(), |dead| format!("{error}; {dead}"));
                        eprintln!("mesh-bench: {path}: FAILED: {why}");
                        failures.push((*path, why));
                        break;
                    }
                }
            }
        }
    }
    samples
}

fn progress_line(sample: &Sample) -> String {
    let ms = |v: Option<f64>| v.map_or("—".to_owned(), |s| format!("{:.3}", s * 1000.0));
    let cpu = sample
        .cpu_per_1k()
        .map_or(String::new(), |c| format!(", CPU {c:.4} s/1k req"));
    let rss = sample.memory.map_or(String::new(), |m| {
        format!(", RSS {} / peak {} MiB", m.rss_kb / 1024, m.peak_kb / 1024)
    });
    format!(
        "{} {}: {:.0} qps, p50 {} p90 {} p99 {} ms, {} errors{cpu}{rss}",
        sample.path,
        sample.test.name(),
        sample.qps,
        ms(sample.p50),
        ms(sample.p90),
        ms(sample.p99),
        sample.errors
    )
}

struct Outcome {
    started_at: String,
    bin_dir: PathBuf,
    matrix: Matrix,
    machine: Machine,
    envoy_version: Option<String>,
    samples: Vec<Sample>,
    not_run: Vec<(PathId, String)>,
    failures: Vec<(PathId, String)>,
    processes: Vec<(String, String)>,
}

/// The command line as typed, quoting arguments with spaces.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_report(layout: &Layout, outcome: Outcome) -> anyhow::Result<Report> {
    let results = report::aggregate(&outcome.matrix.paths, &outcome.samples);
    let command = command_line(std::env::args());
    let markdown = report::render_markdown(&ReportInput {
        command: &command,
        started_at: &outcome.started_at,
        machine: &outcome.machine,
        matrix: &outcome.matrix,
        envoy_version: outcome.envoy_version.as_deref(),
        bin_dir: &outcome.bin_dir,
        results: &results,
        not_run: &outcome.not_run,
        failures: &outcome.failures,
        processes: &outcome.processes,
    });
    let report_path = layout.out.join("report.md");
    let chart_path = layout.out.join("latency.svg");
    std::fs::write(&report_path, &markdown)
        .with_context(|| format!("writing {}", report_path.display()))?;
    let svg = report::render_svg(&results, &outcome.matrix.connections);
    std::fs::write(&chart_path, svg)
        .with_context(|| format!("writing {}", chart_path.display()))?;
    let report = Report {
        out_dir: layout.out.clone(),
        report_path,
        chart_path,
        command,
        machine: outcome.machine,
        matrix: outcome.matrix,
        envoy_version: outcome.envoy_version,
        bin_dir: outcome.bin_dir,
        samples: outcome.samples,
        results,
        not_run: outcome.not_run,
        failures: outcome.failures,
        markdown,
    };
    let json_path = layout.out.join("results.json");
    let json = serde_json::to_string_pretty(&report).context("serialising results")?;
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    Ok(report)
}
