//! fortio's text summary (pure): the same lines, in the same order and number formats.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::gofmt::g;
use super::histogram::{Counter, HistogramData};
use super::results::HttpRunnerResults;
use crate::godur;

/// Per-connection facts for the "# Socket and IP used" block.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLine {
    pub sockets: u64,
    pub peers: BTreeMap<String, u64>,
    pub connect_time: Counter,
}

/// What the final summary needs besides the JSON result.
#[derive(Debug, Clone)]
pub struct ReportExtras {
    pub elapsed: Duration,
    /// Fixed-rate runs: how long workers slept before each call (negative when behind).
    pub sleep: Option<(Counter, u64)>,
    pub connections: Vec<ConnectionLine>,
    pub warmup: usize,
}

/// `msg : count N avg X +/- Y min A max B sum S`.
pub fn counter_line(
    msg: &str,
    count: u64,
    avg: f64,
    std_dev: f64,
    min: f64,
    max: f64,
    sum: f64,
) -> String {
    format!(
        "{msg} : count {count} avg {} +/- {} min {} max {} sum {}",
        g(avg, Some(8)),
        g(std_dev, Some(4)),
        g(min, None),
        g(max, None),
        g(sum, Some(9))
    )
}

fn counter_text(msg: &str, c: &Counter) -> String {
    counter_line(msg, c.count, c.avg(), c.std_dev(), c.min, c.max, c.sum)
}

fn data_counter_line(msg: &str, d: &HistogramData) -> String {
    counter_line(msg, d.count, d.avg, d.std_dev, d.min, d.max, d.sum)
}

/// fortio's `HistogramData.Print`: the counter line, the buckets and the target percentiles.
pub fn histogram_text(msg: &str, d: &HistogramData) -> String {
    let Some(buckets) = d.data.as_deref().filter(|b| !b.is_empty()) else {
        return format!("{msg} : no data\n");
    };
    let mut out = data_counter_line(msg, d);
    out.push_str("\n# range, mid point, percentile, count\n");
    for (i, b) in buckets.iter().enumerate() {
        let sep = if i == 0 { ">=" } else { ">" };
        let _ = writeln!(
            out,
            "{sep} {} <= {} , {} , {:.2}, {}",
            g(b.start, Some(6)),
            g(b.end, Some(6)),
            g((b.start + b.end) / 2.0, Some(6)),
            b.percent,
            b.count
        );
    }
    for p in &d.percentiles {
        let _ = writeln!(
            out,
            "# target {}% {}",
            g(p.percentile, None),
            g(p.value, Some(6))
        );
    }
    out
}

/// fortio's `Occurrence.AggregateAndToString`: the only key alone, else `[k (n), ...]`.
fn peers_text(peers: &BTreeMap<String, u64>) -> String {
    if peers.len() == 1 {
        return peers.keys().next().cloned().unwrap_or_default();
    }
    let items: Vec<String> = peers.iter().map(|(k, n)| format!("{k} ({n})")).collect();
    format!("[{}]", items.join(", "))
}

/// Everything fortio prints after the run ends, through "All done".
pub fn final_report(r: &HttpRunnerResults, extras: &ReportExtras) -> String {
    let mut out = String::new();
    let calls = r.duration_histogram.count;
    let _ = writeln!(
        out,
        "Ended after {} : {calls} calls. qps={}",
        godur::format(extras.elapsed),
        g(r.actual_qps, Some(5))
    );
    if let Some((sleep, behind)) = &extras.sleep {
        out.push_str(&counter_text("Sleep times", sleep));
        out.push('\n');
        let percent = if sleep.count == 0 {
            0.0
        } else {
            100.0 * *behind as f64 / sleep.count as f64
        };
        if percent > 5.0 {
            let _ = writeln!(out, "WARNING {percent:.2}% of sleep were falling behind");
        }
    }
    out.push_str(&histogram_text(
        "Aggregated Function Time",
        &r.duration_histogram,
    ));
    out.push_str(&histogram_text("Error cases", &r.errors_duration_histogram));
    out.push_str("# Socket and IP used for each connection:\n");
    for (i, c) in extras.connections.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{i}] {:>3} socket used, resolved to {}, {}",
            c.sockets,
            peers_text(&c.peers),
            counter_text("connection timing", &c.connect_time)
        );
    }
    out.push_str(&histogram_text(
        "Connection time histogram (s)",
        &r.connection_stats,
    ));
    let _ = writeln!(
        out,
        "Sockets used: {} (for perfect keepalive, would be {})",
        r.socket_count, r.num_threads
    );
    let _ = writeln!(
        out,
        "Uniform: {}, Jitter: {}, Catchup allowed: {}",
        r.uniform, r.jitter, !r.no_catch_up
    );
    out.push_str("IP addresses distribution:\n");
    let mut peers: Vec<_> = r.ip_count_map.iter().collect();
    peers.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (peer, n) in peers {
        let _ = writeln!(out, "{peer}: {n}");
    }
    out.push_str(&codes_text(&r.ret_codes, calls));
    out.push_str(&data_counter_line("Response Header Sizes", &r.header_sizes));
    out.push('\n');
    out.push_str(&data_counter_line("Response Body/Total Sizes", &r.sizes));
    out.push('\n');
    let _ = writeln!(
        out,
        "All done {calls} calls (plus {} warmup) {:.3} ms avg, {:.1} qps",
        extras.warmup,
        1000.0 * r.duration_histogram.avg,
        r.actual_qps
    );
    out
}

/// `Code 200 : 40 (100.0 %)`, numerically sorted.
fn codes_text(codes: &BTreeMap<String, u64>, total: u64) -> String {
    let mut numeric: Vec<(i64, u64)> = codes
        .iter()
        .map(|(k, n)| (k.parse().unwrap_or(i64::MAX), *n))
        .collect();
    numeric.sort_unstable();
    let mut out = String::new();
    for (code, n) in numeric {
        let percent = if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        };
        let _ = writeln!(out, "Code {code:>3} : {n} ({percent:.1} %)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::histogram::Histogram;

    #[test]
    fn histogram_text_matches_fortio_layout() {
        let mut h = Histogram::new(0.0, 0.001);
        for v in [0.0015, 0.0015, 0.0042] {
            h.record(v);
        }
        let d = h.export().with_percentiles(&[50.0, 99.9]);
        let text = histogram_text("Aggregated Function Time", &d);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Aggregated Function Time : count 3 avg 0.0024 +/- 0.001273 min 0.0015 max 0.0042 sum 0.0072"
        );
        assert_eq!(lines[1], "# range, mid point, percentile, count");
        assert_eq!(lines[2], ">= 0.0015 <= 0.002 , 0.00175 , 66.67, 2");
        assert_eq!(lines[3], "> 0.004 <= 0.0042 , 0.0041 , 100.00, 1");
        assert!(lines[4].starts_with("# target 50% 0.00"), "{}", lines[4]);
        assert!(
            lines[5].starts_with("# target 99.9% 0.0041"),
            "{}",
            lines[5]
        );
        assert_eq!(
            histogram_text("Error cases", &Histogram::new(0.0, 0.001).export()),
            "Error cases : no data\n"
        );
    }

    #[test]
    fn codes_are_sorted_numerically_with_percentages() {
        let mut codes = BTreeMap::new();
        codes.insert("503".to_owned(), 1);
        codes.insert("-1".to_owned(), 1);
        codes.insert("200".to_owned(), 2);
        assert_eq!(
            codes_text(&codes, 4),
            "Code  -1 : 1 (25.0 %)\nCode 200 : 2 (50.0 %)\nCode 503 : 1 (25.0 %)\n"
        );
    }

    #[test]
    fn peers_text_forms() {
        let mut peers = BTreeMap::new();
        peers.insert("127.0.0.1:80".to_owned(), 3);
        assert_eq!(peers_text(&peers), "127.0.0.1:80");
        peers.insert("127.0.0.2:80".to_owned(), 1);
        assert_eq!(peers_text(&peers), "[127.0.0.1:80 (3), 127.0.0.2:80 (1)]");
    }
}
