//! `loadtest bench` flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::paths::PathId;

/// Flags of the side-by-side benchmark (`loadtest bench`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Directory for the fortio JSON files, report.md and latency.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Interleaved rounds (every path once per round).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Length of each measured run (Go/humantime duration: 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Tiny matrix for CI: 1 round, 1 s runs, 16 connections only, 1 KB and 1 MB streams.
    #[arg(long)]
    pub quick: bool,
    /// Only these paths (comma separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub paths: Vec<PathId>,
    /// Where the prebuilt `loadtest` and `mesh` binaries are (default: this executable's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The Envoy binary (default: `envoy` on PATH, else `.bench/venv`, installed when missing).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            out: PathBuf::from("bench-out"),
            rounds: 3,
            duration: Duration::from_secs(5),
            quick: false,
            paths: Vec::new(),
            bin_dir: None,
            envoy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn defaults_match_default_impl() {
        let parsed = Cli::try_parse_from(["bench"]).expect("parse").bench;
        let default = BenchArgs::default();
        assert_eq!(parsed.out, default.out);
        assert_eq!(parsed.rounds, default.rounds);
        assert_eq!(parsed.duration, default.duration);
        assert!(!parsed.quick && parsed.paths.is_empty());
    }

    #[test]
    fn paths_are_a_comma_list() {
        let parsed = Cli::try_parse_from([
            "bench",
            "--paths",
            "direct,envoy-hbone-waypoint",
            "--duration",
            "2s",
            "--quick",
        ])
        .expect("parse")
        .bench;
        assert_eq!(parsed.paths, [PathId::Direct, PathId::EnvoyHboneWaypoint]);
        assert_eq!(parsed.duration, Duration::from_secs(2));
        assert!(parsed.quick);
        assert!(Cli::try_parse_from(["bench", "--paths", "nginx"]).is_err());
    }
}
