//! From per-run samples to per-path, per-test medians and ranges (pure).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::fortio::FortioResult;
use crate::matrix::TestKind;
use crate::paths::PathId;
use crate::procfs::Memory;
use crate::stats::{Summary, summarize};

/// What one measured run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub path: PathId,
    pub test: TestKind,
    pub round: u32,
    /// The fortio JSON file of this run.
    pub json: PathBuf,
    pub qps: f64,
    pub requests: u64,
    /// Responses other than 200, and socket errors.
    pub errors: u64,
    /// Latency percentiles in seconds.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub bytes_per_second: Option<f64>,
    /// CPU seconds the path's proxy processes used during the run (`None`: no proxy).
    pub cpu_seconds: Option<f64>,
    /// Proxy memory right after the run; for streams the peak counts from just before it.
    pub memory: Option<Memory>,
}

impl Sample {
    /// A sample from a fortio result and the proxy measurements around it.
    pub fn new(
        path: PathId,
        test: TestKind,
        round: u32,
        json: PathBuf,
        result: &FortioResult,
        cpu_seconds: Option<f64>,
        memory: Option<Memory>,
    ) -> Sample {
        Sample {
            path,
            test,
            round,
            json,
            qps: result.actual_qps,
            requests: result.requests(),
            errors: result.errors(),
            p50: result.percentile(50.0),
            p90: result.percentile(90.0),
            p99: result.percentile(99.0),
            bytes_per_second: result.bytes_per_second(),
            cpu_seconds,
            memory,
        }
    }

    /// Proxy CPU seconds per 1000 requests.
    pub fn cpu_per_1k(&self) -> Option<f64> {
        let cpu = self.cpu_seconds?;
        (self.requests > 0).then(|| cpu * 1000.0 / self.requests as f64)
    }
}

/// Medians and ranges over rounds of one test on one path. Latencies in milliseconds,
/// memory in MiB, throughput in MiB/s.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestSummary {
    pub rounds: usize,
    pub qps: Option<Summary>,
    pub p50_ms: Option<Summary>,
    pub p90_ms: Option<Summary>,
    pub p99_ms: Option<Summary>,
    pub cpu_per_1k: Option<Summary>,
    pub rss_mib: Option<Summary>,
    pub peak_mib: Option<Summary>,
    pub mib_per_second: Option<Summary>,
    pub requests: u64,
    pub errors: u64,
}

/// Every test of one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathSummary {
    pub path: PathId,
    #[serde(serialize_with = "by_test_name")]
    pub tests: BTreeMap<TestKind, TestSummary>,
}

/// JSON object keys must be strings: key the tests by their names (`lat-c16`, `max`, ...).
fn by_test_name<S: serde::Serializer>(
    tests: &BTreeMap<TestKind, TestSummary>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(tests.iter().map(|(test, summary)| (test.name(), summary)))
}

impl PathSummary {
    pub fn test(&self, test: TestKind) -> Option<&TestSummary> {
        self.tests.get(&test)
    }
}

fn over(samples: &[&Sample], metric: impl Fn(&Sample) -> Option<f64>) -> Option<Summary> {
    let values: Vec<f64> = samples.iter().filter_map(|s| metric(s)).collect();
    summarize(&values)
}

const MIB: f64 = 1024.0 * 1024.0;

fn summarize_test(samples: &[&Sample]) -> TestSummary {
    let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
    let mib = |kb: u64| kb as f64 / 1024.0;
    TestSummary {
        rounds: samples.len(),
        qps: over(samples, |s| Some(s.qps)),
        p50_ms: over(samples, |s| ms(s.p50)),
        p90_ms: over(samples, |s| ms(s.p90)),
        p99_ms: over(samples, |s| ms(s.p99)),
        cpu_per_1k: over(samples, Sample::cpu_per_1k),
        rss_mib: over(samples, |s| s.memory.map(|m| mib(m.rss_kb))),
        peak_mib: over(samples, |s| s.memory.map(|m| mib(m.peak_kb))),
        mib_per_second: over(samples, |s| s.bytes_per_second.map(|b| b / MIB)),
        requests: samples.iter().map(|s| s.requests).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
    }
}

/// Groups samples by path (in `paths` order) and test, and summarises each group.
pub fn aggregate(paths: &[PathId], samples: &[Sample]) -> Vec<PathSummary> {
    paths
        .iter()
        .map(|&path| {
            let mut groups: BTreeMap<TestKind, Vec<&Sample>> = BTreeMap::new();
            for sample in samples.iter().filter(|s| s.path == path) {
                groups.entry(sample.test).or_default().push(sample);
            }
            PathSummary {
                path,
                tests: groups
                    .into_iter()
                    .map(|(test, group)| (test, summarize_test(&group)))
                    .collect(),
            }
        })
        .collect()
}
