//! The demo's short fixed-rate load. Latency is measured from each request's scheduled send
//! time, so a stall shows up in the percentiles instead of silently lowering the rate.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::MeshClient;

#[derive(Debug)]
pub struct LoadReport {
    pub qps: f64,
    pub connections: usize,
    pub duration: Duration,
    pub requests: usize,
    pub errors: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{} qps for {:?} over {} connections: {} requests, {} errors; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (from scheduled send time)",
            self.qps,
            self.duration,
            self.connections,
            self.requests,
            self.errors,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99)
        )
    }
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub async fn fixed_rate(
    socks: SocketAddr,
    host: &str,
    port: u16,
    qps: f64,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadReport> {
    let per_connection = (qps * duration.as_secs_f64() / connections as f64).round() as usize;
    let interval = Duration::from_secs_f64(connections as f64 / qps);
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..connections {
        let mut client = MeshClient::connect(socks, host, port).await?;
        let offset = interval.mul_f64(c as f64 / connections as f64);
        workers.spawn(async move {
            let start = Instant::now() + offset;
            let mut latencies = Vec::with_capacity(per_connection);
            let mut errors = 0;
            for i in 0..per_connection {
                let scheduled = start + interval * i as u32;
                tokio::time::sleep_until(scheduled).await;
                match client.get("/reviews/1?size=1024").await {
                    Ok(r) if r.status == 200 => latencies.push(scheduled.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        let (l, e) = joined?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Ok(LoadReport {
        qps,
        connections,
        duration,
        requests: latencies.len() + errors,
        errors,
        p50: quantile(&latencies, 0.5),
        p90: quantile(&latencies, 0.9),
        p99: quantile(&latencies, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&samples, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&samples, 0.9), Duration::from_millis(90));
        assert_eq!(quantile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
