//! Running `loadtest load` (and `loadtest curl`) pinned to the load core, bounded in time, and
//! measuring the proxy processes around each run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::error::BenchError;
use crate::fortio::FortioResult;
use crate::matrix::{self, TestKind};
use crate::paths::{Entry, PathId};
use crate::procfs;
use crate::report::Sample;

/// Extra time a run gets beyond its duration before it is killed.
const RUN_SLACK: Duration = Duration::from_secs(20);

/// Where and how the load generator runs.
#[derive(Debug, Clone)]
pub struct LoadRunner {
    pub loadtest: PathBuf,
    pub core: usize,
    pub json_dir: PathBuf,
    pub duration: Duration,
    pub warmup: Duration,
}

/// What a finished `loadtest` process printed.
struct Finished {
    stdout: Vec<u8>,
    stderr: String,
}

impl LoadRunner {
    async fn loadtest(
        &self,
        args: &[String],
        limit: Duration,
        what: (&str, &str),
    ) -> Result<Finished, BenchError> {
        let failed = |reason: String| BenchError::Run {
            path: what.0.to_owned(),
            test: what.1.to_owned(),
            reason,
        };
        let mut command = tokio::process::Command::new("taskset");
        command
            .arg("-c")
            .arg(self.core.to_string())
            .arg(&self.loadtest)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .map_err(|_| failed(format!("loadtest did not finish within {limit:?}")))?
            .map_err(|e| failed(format!("cannot run {}: {e}", self.loadtest.display())))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(failed(format!(
                "loadtest {} ({}): {}",
                args.join(" "),
                output.status,
                tail.join(" / ")
            )));
        }
        Ok(Finished {
            stdout: output.stdout,
            stderr,
        })
    }

    /// One request through the path: it must answer 200 with exactly `size` bytes.
    pub async fn verify(&self, path: PathId, entry: &Entry, size: u64) -> Result<(), BenchError> {
        let mut args = vec!["curl".to_owned()];
        if let Some(socks) = entry.socks5 {
            args.extend(["-socks5".to_owned(), socks.to_string()]);
        }
        args.push(entry.echo_url(size));
        let finished = self
            .loadtest(&args, Duration::from_secs(15), (path.name(), "verify"))
            .await?;
        let status_line = finished
            .stderr
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let ok = status_line.split_whitespace().nth(1) == Some("200");
        if ok && finished.stdout.len() as u64 == size {
            return Ok(());
        }
        Err(BenchError::Verify {
            path: path.name().to_owned(),
            reason: format!(
                "GET {} answered {status_line:?} with {} bytes (expected 200 with {size})",
                entry.echo_url(size),
                finished.stdout.len()
            ),
        })
    }

    /// `verify`, retried for a few seconds (a path may need a moment after readiness).
    pub async fn verify_with_retries(
        &self,
        path: PathId,
        entry: &Entry,
        size: u64,
    ) -> Result<(), BenchError> {
        let mut attempt = 0;
        loop {
            match self.verify(path, entry, size).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= 4 => return Err(error),
                Err(_) => attempt += 1,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The JSON file of one measured run.
    pub fn json_path(&self, path: PathId, test: TestKind, round: u32) -> PathBuf {
        self.json_dir
            .join(format!("{}-{}-r{round}.json", path.name(), test.name()))
    }

    /// Warm-up, then the measured run with the proxy's CPU and memory read around it.
    pub async fn measure(
        &self,
        path: PathId,
        pids: &[u32],
        test: TestKind,
        round: u32,
    ) -> Result<Sample, BenchError> {
        let entry = path.entry();
        let what = (path.name(), test.name());
        let warmup = matrix::load_args(test, self.warmup, &entry, None);
        self.loadtest(&warmup, self.warmup + RUN_SLACK, (what.0, &what.1))
            .await?;
        if matches!(test, TestKind::Stream { .. }) && !pids.is_empty() && !procfs::reset_peak(pids)
        {
            tracing::warn!(%path, "cannot reset VmHWM; stream peaks include earlier runs");
        }
        let json = self.json_path(path, test, round);
        let args = matrix::load_args(test, self.duration, &entry, Some(&json));
        let cpu_before = proxy_cpu(pids);
        self.loadtest(&args, self.duration + RUN_SLACK, (what.0, &what.1))
            .await?;
        let cpu_after = proxy_cpu(pids);
        let memory = (!pids.is_empty()).then(|| procfs::memory(pids)).flatten();
        let result = FortioResult::read(&json)?;
        let cpu = cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after - before);
        Ok(Sample::new(path, test, round, json, &result, cpu, memory))
    }
}

fn proxy_cpu(pids: &[u32]) -> Option<f64> {
    (!pids.is_empty())
        .then(|| procfs::cpu_seconds(pids))
        .flatten()
}

/// Removes and recreates `dir` (only directories the harness owns inside `--out`).
pub fn fresh_dir(dir: &Path) -> Result<(), BenchError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(crate::error::io("clearing", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(crate::error::io("creating", dir))
}
