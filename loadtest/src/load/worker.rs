//! One connection's load loop (thin I/O): pace, send, read the body, record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;
use http::header::CONNECTION;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_runtime::CancellationToken;

use super::LoadError;
use super::connect::{Dialer, Sender};
use super::histogram::{Counter, Histogram};
use super::pacing::{Pacer, latency_origin};
use super::request::{RequestTemplate, code_is_ok, header_size};

/// fortio's code for a call that got no HTTP response (connect, protocol or timeout error).
pub const SOCKET_ERROR: i32 = -1;

/// What one call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub size: u64,
    pub header_size: u64,
}

/// Everything one connection measured.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub durations: Histogram,
    pub errors: Histogram,
    pub sizes: Histogram,
    pub header_sizes: Histogram,
    pub connect_times: Histogram,
    pub sleep: Counter,
    pub sleep_behind: u64,
    pub ret_codes: BTreeMap<i32, u64>,
    pub sockets: u64,
    pub peers: BTreeMap<String, u64>,
}

impl WorkerStats {
    pub fn new(resolution: f64) -> Self {
        Self {
            durations: Histogram::new(0.0, resolution),
            errors: Histogram::new(0.0, resolution),
            sizes: Histogram::new(0.0, 100.0),
            header_sizes: Histogram::new(0.0, 5.0),
            connect_times: Histogram::new(0.0, resolution),
            sleep: Counter::default(),
            sleep_behind: 0,
            ret_codes: BTreeMap::new(),
            sockets: 0,
            peers: BTreeMap::new(),
        }
    }

    fn record(&mut self, outcome: Outcome, latency: f64) {
        self.durations.record(latency);
        if !code_is_ok(outcome.code) {
            self.errors.record(latency);
        }
        *self.ret_codes.entry(outcome.code).or_default() += 1;
        self.sizes.record(outcome.size as f64);
        self.header_sizes.record(outcome.header_size as f64);
    }

    /// Adds the counts of `other` (same resolution) into `self`; socket counts add up.
    pub fn merge(&mut self, other: &WorkerStats) {
        self.durations.merge(&other.durations);
        self.errors.merge(&other.errors);
        self.sizes.merge(&other.sizes);
        self.header_sizes.merge(&other.header_sizes);
        self.connect_times.merge(&other.connect_times);
        self.sleep.merge(&other.sleep);
        self.sleep_behind += other.sleep_behind;
        for (code, n) in &other.ret_codes {
            *self.ret_codes.entry(*code).or_default() += n;
        }
        self.sockets += other.sockets;
        for (peer, n) in &other.peers {
            *self.peers.entry(peer.clone()).or_default() += n;
        }
    }
}

/// A client connection that reconnects when the server closed it.
pub struct Client {
    dialer: Arc<Dialer>,
    template: Arc<RequestTemplate>,
    sender: Option<Sender>,
    pub stats: WorkerStats,
}

impl Client {
    pub fn new(dialer: Arc<Dialer>, template: Arc<RequestTemplate>, resolution: f64) -> Self {
        Self {
            dialer,
            template,
            sender: None,
            stats: WorkerStats::new(resolution),
        }
    }

    /// Opens the connection now (so the first call does not pay for it).
    pub async fn connect(&mut self) -> Result<(), LoadError> {
        let connected = self.dialer.dial().await?;
        self.stats.sockets += 1;
        *self.stats.peers.entry(connected.peer).or_default() += 1;
        self.stats
            .connect_times
            .record(connected.connect_time.as_secs_f64());
        self.sender = Some(connected.sender);
        Ok(())
    }

    /// One call, bounded by the dialer's timeout; any failure yields [`SOCKET_ERROR`] and a
    /// fresh connection next time.
    pub async fn fetch(&mut self) -> Outcome {
        let timeout = self.dialer.timeout;
        let error = match tokio::time::timeout(timeout, self.fetch_once()).await {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {timeout:?}"),
        };
        tracing::debug!(%error, "request failed");
        self.sender = None;
        Outcome {
            code: SOCKET_ERROR,
            size: 0,
            header_size: 0,
        }
    }

    async fn fetch_once(&mut self) -> Result<Outcome, FetchError> {
        let reusable = match &mut self.sender {
            Some(sender) => sender.ready().await,
            None => false,
        };
        if !reusable {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or(FetchError::NotConnected)?;
        let counted = sender.exchange(self.template.build(), count_body).await?;
        if counted.closing || !self.template.keepalive() {
            self.sender = None;
        }
        Ok(Outcome {
            code: counted.code,
            size: counted.body + counted.headers,
            header_size: counted.headers,
        })
    }
}

/// What [`count_body`] learns from a response.
struct Counted {
    code: i32,
    headers: u64,
    body: u64,
    closing: bool,
}

/// Reads a response to its end, counting bytes without keeping them.
async fn count_body(response: Response<Incoming>) -> Result<Counted, hyper::Error> {
    let headers = header_size(response.status(), response.headers());
    let code = i32::from(response.status().as_u16());
    let closing = response
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = response.into_body();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        size += frame?.data_ref().map_or(0, |d| d.len() as u64);
    }
    Ok(Counted {
        code,
        headers,
        body: size,
        closing,
    })
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Connect(#[from] LoadError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("no connection")]
    NotConnected,
}

/// When and how much one worker sends.
pub struct WorkerPlan {
    pub start: Instant,
    /// Calls to make (`None`: until the deadline or stop).
    pub calls: Option<u64>,
    /// Offset from `start` after which no call starts.
    pub deadline: Option<Duration>,
    /// Fixed-rate schedule; `None` at max speed.
    pub pacer: Option<Pacer>,
    pub stop: CancellationToken,
}

/// Runs the calls of one connection and returns its measurements.
pub async fn run_worker(mut client: Client, mut plan: WorkerPlan) -> WorkerStats {
    let mut done = 0u64;
    while plan.calls.is_none_or(|n| done < n) && !plan.stop.is_cancelled() {
        let now = plan.start.elapsed();
        let origin = match plan.pacer.as_mut() {
            Some(pacer) => {
                let slot = pacer.next_slot(now, rand::random_range(-1.0..=1.0));
                // Time is up: stop unless this call is scheduled within the duration.
                if plan
                    .deadline
                    .is_some_and(|d| now > d || slot > d + pacer.interval())
                {
                    break;
                }
                if done > 0 {
                    record_sleep(&mut client.stats, slot, now);
                }
                if slot > now {
                    tokio::select! {
                        _ = tokio::time::sleep_until((plan.start + slot).into()) => {}
                        _ = plan.stop.cancelled() => break,
                    }
                }
                plan.start + latency_origin(slot, now, plan.start.elapsed())
            }
            None => {
                if plan.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                Instant::now()
            }
        };
        let outcome = client.fetch().await;
        client.stats.record(outcome, origin.elapsed().as_secs_f64());
        done += 1;
    }
    client.stats
}

fn record_sleep(stats: &mut WorkerStats, slot: Duration, now: Duration) {
    let sleep = slot.as_secs_f64() - now.as_secs_f64();
    stats.sleep.record(sleep);
    if sleep < 0.0 {
        stats.sleep_behind += 1;
    }
}
