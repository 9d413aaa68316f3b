//! The bounded matrix: which runs, in which order, with which `loadtest load` flags (pure).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::args::BenchArgs;
use crate::paths::{Entry, PathId};

/// Fixed rate of the latency runs (total across connections).
pub const LATENCY_QPS: u32 = 1000;
/// Connections of the max-throughput runs.
pub const THROUGHPUT_CONNECTIONS: u32 = 16;
/// Connections of the streaming (peak RSS) runs.
pub const STREAM_CONNECTIONS: u32 = 4;
/// Response size of the latency and throughput runs.
pub const SMALL_RESPONSE: u64 = 1024;
/// Histogram resolution passed as `-r` (10 µs: the default 1 ms hides sub-millisecond latency).
pub const RESOLUTION_SECONDS: &str = "0.00001";

const FULL_CONNECTIONS: [u32; 3] = [2, 16, 64];
const QUICK_CONNECTIONS: [u32; 1] = [16];
const FULL_STREAMS: [u64; 3] = [1024, 1 << 20, 10 << 20];
const QUICK_STREAMS: [u64; 2] = [1024, 1 << 20];

/// One kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TestKind {
    /// Fixed 1000 qps, 1 KB responses, over this many connections.
    Latency { connections: u32 },
    /// As fast as possible over 16 connections, 1 KB responses.
    Throughput,
    /// As fast as possible over 4 connections, responses of this many bytes (peak RSS).
    Stream { bytes: u64 },
}

impl TestKind {
    /// Short name used in file names and tables: `lat-c16`, `max`, `stream-1MB`.
    pub fn name(self) -> String {
        match self {
            TestKind::Latency { connections } => format!("lat-c{connections}"),
            TestKind::Throughput => "max".to_owned(),
            TestKind::Stream { bytes } => format!("stream-{}", size_label(bytes)),
        }
    }

    pub fn connections(self) -> u32 {
        match self {
            TestKind::Latency { connections } => connections,
            TestKind::Throughput => THROUGHPUT_CONNECTIONS,
            TestKind::Stream { .. } => STREAM_CONNECTIONS,
        }
    }

    /// `-qps`: the fixed rate, or 0 for "as fast as possible".
    pub fn qps(self) -> u32 {
        match self {
            TestKind::Latency { .. } => LATENCY_QPS,
            _ => 0,
        }
    }

    pub fn response_bytes(self) -> u64 {
        match self {
            TestKind::Stream { bytes } => bytes,
            _ => SMALL_RESPONSE,
        }
    }
}

/// `1KB`, `1MB`, `10MB`, or the byte count when not a whole KB/MB.
pub fn size_label(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    if bytes >= MB && bytes.is_multiple_of(MB) {
        format!("{}MB", bytes / MB)
    } else if bytes >= KB && bytes.is_multiple_of(KB) {
        format!("{}KB", bytes / KB)
    } else {
        format!("{bytes}B")
    }
}

/// What one `run` does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    pub rounds: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub paths: Vec<PathId>,
    pub connections: Vec<u32>,
    pub stream_sizes: Vec<u64>,
}

impl Matrix {
    /// `--quick` overrides rounds and duration; `--paths` keeps the canonical order.
    pub fn from_args(args: &BenchArgs) -> Matrix {
        let paths = PathId::ALL
            .into_iter()
            .filter(|p| args.paths.is_empty() || args.paths.contains(p))
            .collect();
        if args.quick {
            return Matrix {
                rounds: 1,
                duration: Duration::from_secs(1),
                warmup: Duration::from_millis(500),
                paths,
                connections: QUICK_CONNECTIONS.to_vec(),
                stream_sizes: QUICK_STREAMS.to_vec(),
            };
        }
        Matrix {
            rounds: args.rounds.max(1),
            duration: args.duration.max(Duration::from_millis(100)),
            warmup: Duration::from_secs(1),
            paths,
            connections: FULL_CONNECTIONS.to_vec(),
            stream_sizes: FULL_STREAMS.to_vec(),
        }
    }

    /// The runs of one path in one round, in order: latency runs first (the RSS snapshot is
    /// taken after them), then max throughput, then streams from small to large. The direct
    /// path has no proxy whose memory the streams would measure, so it skips them.
    pub fn tests_for(&self, path: PathId) -> Vec<TestKind> {
        let mut tests: Vec<TestKind> = self
            .connections
            .iter()
            .map(|&connections| TestKind::Latency { connections })
            .collect();
        tests.push(TestKind::Throughput);
        if path.has_proxy() {
            tests.extend(
                self.stream_sizes
                    .iter()
                    .map(|&bytes| TestKind::Stream { bytes }),
            );
        }
        tests
    }

    /// Time spent in load runs (warm-ups included), without process start-up.
    pub fn load_time(&self) -> Duration {
        let runs: u32 = self
            .paths
            .iter()
            .map(|&p| u32::try_from(self.tests_for(p).len()).unwrap_or(u32::MAX))
            .sum();
        (self.duration + self.warmup) * runs * self.rounds
    }
}

/// A Go duration for `-t`: whole seconds as `5s`, anything else in milliseconds (`1500ms`).
pub fn go_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The `loadtest load` arguments (fortio's flags) for one run; `json` is where the result goes.
pub fn load_args(
    test: TestKind,
    duration: Duration,
    entry: &Entry,
    json: Option<&Path>,
) -> Vec<String> {
    let mut args = vec![
        "load".to_owned(),
        "-c".to_owned(),
        test.connections().to_string(),
        "-qps".to_owned(),
        test.qps().to_string(),
        "-t".to_owned(),
        go_duration(duration),
        "-r".to_owned(),
        RESOLUTION_SECONDS.to_owned(),
        "-timeout".to_owned(),
        "10s".to_owned(),
    ];
    if test.qps() > 0 {
        args.extend(["-uniform".to_owned(), "-nocatchup".to_owned()]);
    }
    if let Some(path) = json {
        args.extend(["-json".to_owned(), path.display().to_string()]);
    }
    if let Some(socks) = entry.socks5 {
        args.extend(["-socks5".to_owned(), socks.to_string()]);
    }
    args.push(entry.echo_url(test.response_bytes()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_tiny_and_full_is_the_issue_matrix() {
        let quick = Matrix::from_args(&BenchArgs {
            quick: true,
            rounds: 7,
            ..BenchArgs::default()
        });
        assert_eq!(quick.rounds, 1);
        assert_eq!(quick.duration, Duration::from_secs(1));
        assert_eq!(quick.stream_sizes, [1024, 1 << 20]);
        assert!(
            quick.load_time() < Duration::from_secs(70),
            "{:?}",
            quick.load_time()
        );

        let full = Matrix::from_args(&BenchArgs::default());
        assert_eq!(full.connections, [2, 16, 64]);
        assert_eq!(full.stream_sizes, [1024, 1 << 20, 10 << 20]);
        assert_eq!(full.paths, PathId::ALL);
        let names: Vec<String> = full
            .tests_for(PathId::MeshWaypoint)
            .into_iter()
            .map(TestKind::name)
            .collect();
        assert_eq!(
            names,
            [
                "lat-c2",
                "lat-c16",
                "lat-c64",
                "max",
                "stream-1KB",
                "stream-1MB",
                "stream-10MB"
            ]
        );
        assert_eq!(full.tests_for(PathId::Direct).len(), 4);
    }

    #[test]
    fn path_filter_keeps_canonical_order() {
        let matrix = Matrix::from_args(&BenchArgs {
            paths: vec![PathId::MeshZtunnel, PathId::Direct],
            ..BenchArgs::default()
        });
        assert_eq!(matrix.paths, [PathId::Direct, PathId::MeshZtunnel]);
    }

    #[test]
    fn latency_runs_are_open_loop_and_max_runs_are_not() {
        let entry = PathId::MeshZtunnel.entry();
        let args = load_args(
            TestKind::Latency { connections: 64 },
            Duration::from_secs(5),
            &entry,
            Some(Path::new("/o/x.json")),
        );
        let line = args.join(" ");
        assert!(line.starts_with("load -c 64 -qps 1000 -t 5s "), "{line}");
        assert!(line.contains("-uniform -nocatchup"), "{line}");
        assert!(
            line.contains("-json /o/x.json -socks5 127.0.50.111:15080 "),
            "{line}"
        );
        assert!(line.ends_with("/echo?size=1024"), "{line}");

        let max = load_args(
            TestKind::Throughput,
            Duration::from_millis(1500),
            &PathId::Direct.entry(),
            None,
        )
        .join(" ");
        assert!(max.starts_with("load -c 16 -qps 0 -t 1500ms "), "{max}");
        assert!(!max.contains("-uniform") && !max.contains("-json"), "{max}");
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(1024), "1KB");
        assert_eq!(size_label(10 << 20), "10MB");
        assert_eq!(size_label(1500), "1500B");
        assert_eq!(TestKind::Stream { bytes: 1 << 20 }.name(), "stream-1MB");
    }
}
