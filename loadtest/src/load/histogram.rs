//! fortio's statistics: a counter (count, min, max, sum, stddev) plus a histogram over fixed
//! bucket boundaries scaled by a divider (the resolution), exported as fortio's
//! `HistogramData` with percentiles interpolated linearly inside a bucket.

use serde::{Deserialize, Serialize};

/// fortio's bucket upper bounds (before scaling). Buckets are `(previous, bound]`; one extra
/// bucket before (`<= 0`) and after (`> 100000`).
pub const BUCKET_VALUES: [u32; 56] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, // by 1
    12, 14, 16, 18, 20, // by 2
    25, 30, 35, 40, 45, 50, // by 5
    60, 70, 80, 90, 100, // by 10
    120, 140, 160, 180, 200, // by 20
    250, 300, 350, 400, 450, 500, // by 50
    600, 700, 800, 900, 1000, // by 100
    2000, 3000, 4000, 5000, 7500, 10000, // coarse
    20000, 30000, 40000, 50000, 75000, 100000, // coarser
];
const BUCKETS: usize = BUCKET_VALUES.len() + 1;
const LAST_VALUE: f64 = 100_000.0;

/// Count, min, max, sum and sum of squares of recorded values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counter {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    sum_of_squares: f64,
}

impl Counter {
    pub fn record(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        self.sum_of_squares += value * value;
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Population standard deviation (as fortio computes it).
    pub fn std_dev(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let n = self.count as f64;
        let variance = (self.sum_of_squares - self.sum * self.sum / n) / n;
        if variance > 0.0 { variance.sqrt() } else { 0.0 }
    }

    pub fn merge(&mut self, other: &Counter) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sum_of_squares += other.sum_of_squares;
    }
}

/// A fortio histogram: `value -> (value - offset) / divider` placed in [`BUCKET_VALUES`].
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub counter: Counter,
    offset: f64,
    divider: f64,
    buckets: [u64; BUCKETS],
}

/// One exported bucket: `(Start, End]`, cumulative percent, count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Bucket {
    pub start: f64,
    pub end: f64,
    pub percent: f64,
    pub count: u64,
}

/// A percentile and its value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Percentile {
    pub percentile: f64,
    pub value: f64,
}

/// fortio's `HistogramData` JSON shape. `Data` is `null` when empty; `Percentiles` is omitted
/// when none were computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistogramData {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub avg: f64,
    pub std_dev: f64,
    pub data: Option<Vec<Bucket>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percentiles: Vec<Percentile>,
}

impl Histogram {
    /// `divider` is the resolution (e.g. 0.001 s); it must be positive.
    pub fn new(offset: f64, divider: f64) -> Self {
        debug_assert!(divider > 0.0, "histogram divider must be positive");
        Self {
            counter: Counter::default(),
            offset,
            divider,
            buckets: [0; BUCKETS],
        }
    }

    pub fn record(&mut self, value: f64) {
        self.counter.record(value);
        self.buckets[self.bucket_index(value)] += 1;
    }

    fn bucket_index(&self, value: f64) -> usize {
        let scaled = (value - self.offset) / self.divider;
        if scaled <= 0.0 {
            return 0;
        }
        if scaled > LAST_VALUE {
            return BUCKETS - 1;
        }
        // Intervals are open on the left: a value exactly on a bound belongs below it.
        let mut whole = scaled as u32;
        if scaled - f64::from(whole) < 1e-12 {
            whole = whole.saturating_sub(1);
        }
        BUCKET_VALUES.partition_point(|&bound| bound <= whole)
    }

    /// Adds `other` (which must have the same offset and divider) into `self`.
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert!(
            self.offset == other.offset && self.divider == other.divider,
            "merging histograms of different scales"
        );
        self.counter.merge(&other.counter);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
    }

    /// fortio's export: non-empty buckets only, the first starting at Min and the last
    /// ending at Max; no percentiles (see [`HistogramData::with_percentiles`]).
    pub fn export(&self) -> HistogramData {
        let c = &self.counter;
        let mut data = HistogramData {
            count: c.count,
            min: c.min,
            max: c.max,
            sum: c.sum,
            avg: c.avg(),
            std_dev: c.std_dev(),
            data: None,
            percentiles: Vec::new(),
        };
        if c.count == 0 {
            return data;
        }
        let scale = |bound: u32| self.divider * f64::from(bound) + self.offset;
        let mut buckets = Vec::new();
        let mut previous = BUCKET_VALUES[0];
        let mut total = 0u64;
        for (index, &count) in self.buckets.iter().enumerate() {
            let bound = BUCKET_VALUES.get(index).copied();
            if count > 0 {
                total += count;
                buckets.push(Bucket {
                    start: if buckets.is_empty() {
                        c.min
                    } else {
                        scale(previous)
                    },
                    end: bound.map_or(c.max, scale),
                    percent: 100.0 * total as f64 / c.count as f64,
                    count,
                });
            }
            if let Some(bound) = bound {
                previous = bound;
            }
        }
        if let Some(last) = buckets.last_mut() {
            last.end = c.max;
        }
        data.data = Some(buckets);
        data
    }
}

impl HistogramData {
    /// The value below which `percentile` % of the data falls, interpolating linearly inside
    /// the bucket (fortio's `CalcPercentile`).
    pub fn percentile(&self, percentile: f64) -> f64 {
        let Some(buckets) = self.data.as_deref().filter(|b| !b.is_empty()) else {
            return 0.0;
        };
        if percentile >= 100.0 {
            return self.max;
        }
        let mut previous = 100.0 / self.count as f64;
        if percentile <= previous {
            return self.min;
        }
        for bucket in buckets {
            if percentile <= bucket.percent {
                let fraction = (percentile - previous) / (bucket.percent - previous);
                return bucket.start + fraction * (bucket.end - bucket.start);
            }
            previous = bucket.percent;
        }
        self.max
    }

    /// Computes the requested percentiles (none when there is no data, like fortio).
    pub fn with_percentiles(mut self, percentiles: &[f64]) -> Self {
        if self.count == 0 {
            return self;
        }
        self.percentiles = percentiles
            .iter()
            .map(|&p| Percentile {
                percentile: p,
                value: self.percentile(p),
            })
            .collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform_ms(n: u32) -> HistogramData {
        let mut h = Histogram::new(0.0, 0.001);
        for ms in 1..=n {
            h.record(f64::from(ms) / 1000.0);
        }
        h.export()
    }

    #[test]
    fn bucket_boundaries_are_open_on_the_left() {
        let h = Histogram::new(0.0, 0.001);
        assert_eq!(h.bucket_index(0.0), 0);
        assert_eq!(h.bucket_index(-1.0), 0);
        assert_eq!(h.bucket_index(0.0005), 1, "(0,1]");
        assert_eq!(h.bucket_index(0.001), 1, "exactly 1 ms is in (0,1]");
        assert_eq!(h.bucket_index(0.0015), 2, "(1,2]");
        assert_eq!(h.bucket_index(0.002), 2);
        assert_eq!(h.bucket_index(0.013), 13, "(12,14]");
        assert_eq!(h.bucket_index(0.999), 43, "(900,1000]");
        assert_eq!(h.bucket_index(1.5), 44, "(1000,2000]");
        assert_eq!(h.bucket_index(100.0), 55);
        assert_eq!(h.bucket_index(100.5), 56, "overflow bucket");
    }

    #[test]
    fn counter_statistics() {
        let mut c = Counter::default();
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            c.record(v);
        }
        assert_eq!(c.count, 8);
        assert_eq!(c.min, 2.0);
        assert_eq!(c.max, 9.0);
        assert_eq!(c.avg(), 5.0);
        assert!((c.std_dev() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn export_matches_fortio_shape() {
        let mut h = Histogram::new(0.0, 0.001);
        for v in [0.0005, 0.0015, 0.0016, 0.0042] {
            h.record(v);
        }
        let d = h.export();
        let data = d.data.expect("data");
        assert_eq!(data.len(), 3);
        assert_eq!(data[0].start, 0.0005, "first bucket starts at min");
        assert_eq!(data[0].end, 0.001);
        assert_eq!(data[0].percent, 25.0);
        assert_eq!(data[1].start, 0.001);
        assert_eq!(data[1].end, 0.002);
        assert_eq!(data[1].count, 2);
        assert_eq!(data[1].percent, 75.0);
        assert_eq!(data[2].start, 0.004);
        assert_eq!(data[2].end, 0.0042, "last bucket ends at max");
        assert_eq!(data[2].percent, 100.0);
    }

    #[test]
    fn empty_export_has_null_data_and_no_percentiles() {
        let d = Histogram::new(0.0, 0.001)
            .export()
            .with_percentiles(&[50.0]);
        assert_eq!(d.count, 0);
        assert!(d.data.is_none());
        assert!(d.percentiles.is_empty());
        let json = serde_json::to_value(&d).expect("json");
        assert!(json["Data"].is_null());
        assert!(json.get("Percentiles").is_none());
    }

    #[test]
    fn percentiles_of_uniform_1_to_1000_ms() {
        let d = uniform_ms(1000).with_percentiles(&[50.0, 75.0, 90.0, 99.0, 99.9]);
        let value = |p: f64| d.percentile(p);
        // Within the width of the bucket holding the true value.
        assert!((value(50.0) - 0.5).abs() <= 0.05, "p50 {}", value(50.0));
        assert!((value(75.0) - 0.75).abs() <= 0.05, "p75 {}", value(75.0));
        assert!((value(90.0) - 0.9).abs() <= 0.1, "p90 {}", value(90.0));
        assert!((value(99.0) - 0.99).abs() <= 0.1, "p99 {}", value(99.0));
        assert!((value(99.9) - 0.999).abs() <= 0.1, "p99.9 {}", value(99.9));
        assert_eq!(value(100.0), 1.0);
        assert_eq!(d.percentiles.len(), 5);
        // Bucket (450, 500] holds exactly 50 values ending at 50%: p50 is its end.
        assert!((value(50.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_three_points_follow_fortio_doc() {
        // fortio: "with 3 data points 10, 20, 30; p0-p33.33 == 10 ... p100 = 30".
        let mut h = Histogram::new(0.0, 1.0);
        for v in [10.0, 20.0, 30.0] {
            h.record(v);
        }
        let d = h.export();
        assert_eq!(d.percentile(10.0), 10.0);
        assert_eq!(d.percentile(100.0), 30.0);
        let p50 = d.percentile(50.0);
        assert!(p50 > 10.0 && p50 <= 20.0, "p50 {p50}");
    }

    #[test]
    fn constant_values_have_every_percentile_equal() {
        let mut h = Histogram::new(0.0, 0.001);
        for _ in 0..100 {
            h.record(0.0042);
        }
        let d = h.export();
        for p in [1.0, 50.0, 99.9] {
            assert!((d.percentile(p) - 0.0042).abs() < 1e-12, "p{p}");
        }
        assert!(d.std_dev < 1e-9, "std dev {}", d.std_dev);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Histogram::new(0.0, 0.001);
        let mut b = Histogram::new(0.0, 0.001);
        let mut all = Histogram::new(0.0, 0.001);
        for i in 0..200 {
            let v = f64::from(i) * 0.00037;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a.export().data, all.export().data);
        assert_eq!(a.counter.count, 200);
        assert!((a.counter.sum - all.counter.sum).abs() < 1e-9);
    }

    #[test]
    fn size_histograms_use_their_divider() {
        let mut h = Histogram::new(0.0, 100.0);
        h.record(1024.0);
        h.record(1024.0);
        let d = h.export();
        let data = d.data.expect("data");
        assert_eq!(data.len(), 1);
        assert_eq!((data[0].start, data[0].end), (1024.0, 1024.0));
        assert_eq!(d.avg, 1024.0);
    }
}
