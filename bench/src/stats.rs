//! Medians, ranges and ratios over rounds (pure).

use serde::Serialize;

/// The median and the range of a metric over rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many rounds contributed.
    pub n: usize,
}

/// The median of the finite values (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// Smallest and largest finite value.
pub fn range(values: &[f64]) -> Option<(f64, f64)> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Median and range together; `None` without a finite value.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let median = median(values)?;
    let (min, max) = range(values)?;
    let n = values.iter().filter(|v| v.is_finite()).count();
    Some(Summary {
        median,
        min,
        max,
        n,
    })
}

/// `value / base`, when both are finite and the base is positive.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (value.is_finite() && base.is_finite() && base > 0.0).then(|| value / base)
}
