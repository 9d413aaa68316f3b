//! One connection's load loop (thin I/O): pace, send, read the body, record.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;
use http::header::CONNECTION;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_runtime::CancellationToken;
use tokio::time::Sleep;

use super::LoadError;
use super::connect::{Connection, Dialer};
use super::fast::{self, FastError};
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
    connection: Option<Connection>,
    /// The per-call timeout, reused from call to call: moving a timer's deadline later is
    /// cheaper than a new timer per call.
    deadline: Option<Pin<Box<Sleep>>>,
    pub stats: WorkerStats,
}

impl Client {
    pub fn new(dialer: Arc<Dialer>, template: Arc<RequestTemplate>, resolution: f64) -> Self {
        Self {
            dialer,
            template,
            connection: None,
            deadline: None,
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
        self.connection = Some(connected.connection);
        Ok(())
    }

    /// One call sent at `sent`, bounded by the dialer's timeout; any failure yields
    /// [`SOCKET_ERROR`] and a fresh connection next time.
    pub async fn fetch(&mut self, sent: Instant) -> Outcome {
        let timeout = self.dialer.timeout;
        let expires = tokio::time::Instant::from_std(sent + timeout);
        let mut deadline = match self.deadline.take() {
            Some(mut deadline) => {
                deadline.as_mut().reset(expires);
                deadline
            }
            None => Box::pin(tokio::time::sleep_until(expires)),
        };
        let result = tokio::select! {
            biased;
            result = self.fetch_once() => Some(result),
            () = deadline.as_mut() => None,
        };
        self.deadline = Some(deadline);
        let error = match result {
            Some(Ok(outcome)) => return outcome,
            Some(Err(error)) => error.to_string(),
            None => format!("timed out after {timeout:?}"),
        };
        tracing::debug!(%error, "request failed");
        self.connection = None;
        Outcome {
            code: SOCKET_ERROR,
            size: 0,
            header_size: 0,
        }
    }

    async fn fetch_once(&mut self) -> Result<Outcome, FetchError> {
        let reusable = match &mut self.connection {
            Some(Connection::Hyper(sender)) => Box::pin(sender.ready()).await,
            Some(Connection::Fast(_)) => true,
            None => false,
        };
        if !reusable {
            self.reconnect().await?;
        }
        let counted = match self.connection.as_mut().ok_or(FetchError::NotConnected)? {
            Connection::Hyper(sender) => {
                Box::pin(sender.exchange(self.template.build(), count_body)).await?
            }
            Connection::Fast(connection) => {
                match connection.exchange(self.template.http1_wire()).await {
                    Err(error) if self.template.is_idempotent() && connection.was_stale(&error) => {
                        tracing::debug!(%error, "reused connection was closed; retrying once");
                        self.reconnect().await?;
                        self.exchange_fast().await?
                    }
                    result => result?.into(),
                }
            }
        };
        if counted.closing || !self.template.keepalive() {
            self.connection = None;
        }
        Ok(Outcome {
            code: counted.code,
            size: counted.body + counted.headers,
            header_size: counted.headers,
        })
    }

    /// [`Self::connect`] on the heap: it runs once per connection, and inline it would make
    /// every call's future (moved on each call) several times larger.
    async fn reconnect(&mut self) -> Result<(), LoadError> {
        Box::pin(self.connect()).await
    }

    async fn exchange_fast(&mut self) -> Result<Counted, FetchError> {
        match self.connection.as_mut() {
            Some(Connection::Fast(connection)) => Ok(connection
                .exchange(self.template.http1_wire())
                .await?
                .into()),
            _ => Err(FetchError::NotConnected),
        }
    }
}

/// What a response was, whichever client read it.
struct Counted {
    code: i32,
    headers: u64,
    body: u64,
    closing: bool,
}

impl From<fast::Counted> for Counted {
    fn from(counted: fast::Counted) -> Self {
        Self {
            code: i32::from(counted.code),
            headers: counted.header_bytes,
            body: counted.body_bytes,
            closing: !counted.keep_alive,
        }
    }
}

/// Reads a hyper response to its end, counting bytes without keeping them.
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
    #[error(transparent)]
    Fast(#[from] FastError),
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

/// Runs the calls of one connection and returns its measurements, boxed: a task's output is
/// part of what every poll returns, so a large one would be copied on each wake-up.
pub async fn run_worker(mut client: Client, mut plan: WorkerPlan) -> Box<WorkerStats> {
    let mut done = 0u64;
    while plan.calls.is_none_or(|n| done < n) && !plan.stop.is_cancelled() {
        let ready = Instant::now();
        let now = ready - plan.start;
        let (origin, sent) = match plan.pacer.as_mut() {
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
                let sent = Instant::now();
                (
                    plan.start + latency_origin(slot, now, sent - plan.start),
                    sent,
                )
            }
            None => {
                if plan.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                (ready, ready)
            }
        };
        let outcome = client.fetch(sent).await;
        client.stats.record(outcome, origin.elapsed().as_secs_f64());
        done += 1;
    }
    Box::new(client.stats)
}

fn record_sleep(stats: &mut WorkerStats, slot: Duration, now: Duration) {
    let sleep = slot.as_secs_f64() - now.as_secs_f64();
    stats.sleep.record(sleep);
    if sleep < 0.0 {
        stats.sleep_behind += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{size_of, size_of_val};

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::load::connect::Protocol;

    fn client() -> Client {
        let cli = Cli::try_parse_from(["loadtest", "load", "http://127.0.0.1:9/"]).expect("parse");
        let Command::Load(args) = cli.command else {
            panic!("expected load");
        };
        let options = args.into_options("testhost").expect("valid options");
        let dialer = Dialer {
            target: options.target.clone(),
            socks5: None,
            protocol: Protocol::FastHttp1,
            timeout: options.timeout,
        };
        let template = RequestTemplate::new(&options).expect("valid template");
        Client::new(Arc::new(dialer), Arc::new(template), options.resolution)
    }

    fn output_size<F: std::future::Future>(_: &F) -> usize {
        size_of::<F::Output>()
    }

    /// Size budgets on what is built or moved on every call. A call's future is created per
    /// request; with connecting (SOCKS5, handshakes) inline it was 5× larger. A task's output is
    /// part of every poll's return value; returning the stats by value copied them twice per
    /// wake-up, 10% of the generator's instructions.
    #[test]
    fn per_call_futures_stay_small() {
        let mut client = client();
        let call = size_of_val(&client.fetch(Instant::now()));
        assert!(call <= 640, "a call's future is {call} bytes");
        let connect = size_of_val(&client.connect());
        assert!(
            connect > call,
            "connecting ({connect} bytes) must stay out of the call's future ({call} bytes)"
        );
        let plan = WorkerPlan {
            start: Instant::now(),
            calls: Some(0),
            deadline: None,
            pacer: None,
            stop: CancellationToken::new(),
        };
        let output = output_size(&run_worker(client, plan));
        assert_eq!(
            output,
            size_of::<usize>(),
            "the worker's stats come back boxed"
        );
    }
}
