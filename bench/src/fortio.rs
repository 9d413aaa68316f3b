//! Reading fortio's result JSON (as written by `loadtest load -json` and by fortio itself):
//! only the fields the report uses; unknown fields are ignored (pure).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{BenchError, io};

/// The parts of fortio's `HTTPRunnerResults` the report needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FortioResult {
    #[serde(rename = "RequestedQPS")]
    pub requested_qps: String,
    #[serde(rename = "ActualQPS")]
    pub actual_qps: f64,
    /// Nanoseconds.
    #[serde(rename = "ActualDuration")]
    pub actual_duration_ns: i64,
    #[serde(rename = "NumThreads")]
    pub num_threads: u32,
    #[serde(rename = "DurationHistogram")]
    pub durations: Histogram,
    #[serde(rename = "RetCodes", default)]
    pub ret_codes: BTreeMap<String, u64>,
    #[serde(rename = "Sizes")]
    pub sizes: Option<Histogram>,
}

/// fortio's histogram summary (seconds for durations, bytes for sizes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Histogram {
    #[serde(rename = "Count")]
    pub count: u64,
    #[serde(rename = "Min")]
    pub min: f64,
    #[serde(rename = "Max")]
    pub max: f64,
    #[serde(rename = "Avg")]
    pub avg: f64,
    #[serde(rename = "Percentiles", default)]
    pub percentiles: Option<Vec<Percentile>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Percentile {
    #[serde(rename = "Percentile")]
    pub percentile: f64,
    #[serde(rename = "Value")]
    pub value: f64,
}

impl FortioResult {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
        Self::parse(&text).map_err(|source| BenchError::FortioJson {
            path: path.to_owned(),
            source,
        })
    }

    /// The latency at percentile `p` (e.g. 99.0), in seconds, when fortio reported it.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        self.durations
            .percentiles
            .as_ref()?
            .iter()
            .find(|entry| (entry.percentile - p).abs() < 1e-9)
            .map(|entry| entry.value)
    }

    /// Requests sent (answered or failed).
    pub fn requests(&self) -> u64 {
        self.durations.count
    }

    /// Requests answered with anything other than 200 (fortio counts socket errors as `-1`).
    pub fn errors(&self) -> u64 {
        self.ret_codes
            .iter()
            .filter(|(code, _)| code.as_str() != "200")
            .map(|(_, count)| count)
            .sum()
    }

    /// Response bytes per second (body and headers), from the size histogram.
    pub fn bytes_per_second(&self) -> Option<f64> {
        let sizes = self.sizes.as_ref()?;
        let seconds = self.actual_duration_ns as f64 / 1e9;
        (seconds > 0.0).then(|| sizes.avg * sizes.count as f64 / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_every_code_but_200() {
        let mut result = FortioResult::parse(
            r#"{"RequestedQPS":"max","ActualQPS":1.0,"ActualDuration":1000000000,"NumThreads":1,
                "DurationHistogram":{"Count":10,"Min":0.001,"Max":0.002,"Avg":0.0015},
                "RetCodes":{"200":7,"503":2,"-1":1}}"#,
        )
        .expect("parse");
        assert_eq!(result.errors(), 3);
        assert_eq!(result.percentile(50.0), None);
        assert_eq!(result.bytes_per_second(), None);
        result.ret_codes.clear();
        assert_eq!(result.errors(), 0);
    }
}
