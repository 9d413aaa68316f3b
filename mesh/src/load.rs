//! The demo's short fixed-rate load, run by `loadtest`'s fortio-compatible client through a
//! pod's SOCKS5 entry. Latency counts from the scheduled send time when a call is late.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use loadtest::cli::{Cli, Command, normalize_args};
use loadtest::load::HttpRunnerResults;
use mesh_runtime::CancellationToken;

/// What the demo prints about a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub args: String,
    pub requests: u64,
    pub errors: u64,
    pub actual_qps: f64,
    /// (percentile, seconds)
    pub percentiles: Vec<(f64, f64)>,
}

impl LoadReport {
    pub fn from_results(args: String, results: &HttpRunnerResults) -> Self {
        let requests = results.duration_histogram.count;
        let ok = results.ret_codes.get("200").copied().unwrap_or(0);
        LoadReport {
            args,
            requests,
            errors: requests.saturating_sub(ok),
            actual_qps: results.actual_qps,
            percentiles: results
                .duration_histogram
                .percentiles
                .iter()
                .map(|p| (p.percentile, p.value))
                .collect(),
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "loadtest load {}", self.args)?;
        write!(
            f,
            "  {} requests at {:.0} qps, {} errors; latency",
            self.requests, self.actual_qps, self.errors
        )?;
        for (p, seconds) in &self.percentiles {
            write!(f, " p{p} {:.2} ms", seconds * 1000.0)?;
        }
        Ok(())
    }
}

/// Runs `loadtest load` with fortio flags (`-c`, `-qps`, `-t`, ...) in process.
pub async fn fortio_load(
    flags: &[&str],
    socks: SocketAddr,
    url: &str,
) -> anyhow::Result<LoadReport> {
    let socks = socks.to_string();
    let mut argv: Vec<&str> = vec!["loadtest", "load"];
    argv.extend_from_slice(flags);
    argv.extend_from_slice(&["-p", "50,90,99", "-socks5", &socks, url]);
    let cli =
        Cli::try_parse_from(normalize_args(argv.iter().map(Into::into))).context("load flags")?;
    let Command::Load(args) = cli.command else {
        anyhow::bail!("not a load command");
    };
    let options = args.into_options("mesh-demo")?;
    let mut text = Vec::new();
    let results = loadtest::load::run(&options, &mut text, CancellationToken::new()).await?;
    Ok(LoadReport::from_results(argv[2..].join(" "), &results))
}

/// The demo's load: 200 qps over 4 connections for 3 s, 1 KB responses.
pub async fn demo_load(socks: SocketAddr, host: &str, port: u16) -> anyhow::Result<LoadReport> {
    let url = format!("http://{host}:{port}/reviews/1?size=1024");
    let duration = Duration::from_secs(3);
    let t = format!("{}s", duration.as_secs());
    fortio_load(
        &["-c", "4", "-qps", "200", "-t", &t, "-uniform", "-nocatchup"],
        socks,
        &url,
    )
    .await
}
