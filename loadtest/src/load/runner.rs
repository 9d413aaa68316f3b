//! Orchestrates a run: plan, connect and warm up every connection, run the workers from one
//! common start, merge their measurements into fortio's result and print the summary.

use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use base64::Engine as _;
use mesh_runtime::CancellationToken;

use super::LoadError;
use super::connect::{Dialer, Protocol};
use super::histogram::HistogramData;
use super::options::LoadOptions;
use super::pacing::{PaceConfig, Pacer};
use super::plan::{Plan, PlanInput, plan, starting_line};
use super::report::{ConnectionLine, ReportExtras, final_report};
use super::request::{RequestTemplate, code_is_ok};
use super::results::{HttpOptions, HttpRunnerResults};
use super::timefmt::UtcTime;
use super::worker::{Client, WorkerPlan, WorkerStats, run_worker};
use crate::godur;

/// Runs the load described by `options`, printing fortio's text output to `out`. `stop` ends
/// the run early (calls in flight finish). Returns fortio's JSON result.
pub async fn run(
    options: &LoadOptions,
    out: &mut (dyn Write + Send),
    stop: CancellationToken,
) -> Result<HttpRunnerResults, LoadError> {
    let input = PlanInput {
        qps: options.qps,
        duration: options.duration,
        exactly: options.exactly,
        threads: options.connections,
    };
    let plan = plan(&input);
    let procs = std::thread::available_parallelism().map_or(1, |n| n.get());
    write_banner(out, options, procs);
    let clients = prepare_clients(options, plan.threads).await?;
    let _ = writeln!(out, "{}", starting_line(&input, &plan, procs));
    if plan.per_thread_qps.is_some() {
        let _ = writeln!(
            out,
            "Latency is measured from each call's scheduled send time when a connection is \
             behind schedule (stalls are not hidden)"
        );
    }
    let start = Instant::now();
    let start_time = SystemTime::now();
    let workers = spawn_workers(options, &plan, clients, start, &stop);
    let mut per_connection = Vec::with_capacity(workers.len());
    for handle in workers {
        match handle.await {
            Ok(stats) => per_connection.push(*stats),
            Err(error) => tracing::error!(%error, "load worker failed"),
        }
    }
    let elapsed = start.elapsed();
    let results = build_results(options, &plan, &per_connection, start_time, elapsed);
    let extras = ReportExtras {
        elapsed,
        sleep: plan.per_thread_qps.map(|_| {
            let total = merged(&per_connection, options.resolution);
            (total.sleep, total.sleep_behind)
        }),
        connections: per_connection.iter().map(connection_line).collect(),
        warmup: if options.exactly > 0 { 0 } else { plan.threads },
    };
    let _ = out.write_all(final_report(&results, &extras).as_bytes());
    let _ = out.flush();
    Ok(results)
}

fn write_banner(out: &mut (dyn Write + Send), options: &LoadOptions, procs: usize) {
    let span = match (options.exactly, options.duration) {
        (n, _) if n > 0 => format!("for {n} calls"),
        (_, Some(d)) => format!("for {}", godur::format(d)),
        (_, None) => "until interrupted".to_owned(),
    };
    let _ = writeln!(
        out,
        "loadtest {} running at {} queries per second, {procs}->{procs} procs, {span}: {}",
        env!("CARGO_PKG_VERSION"),
        super::gofmt::g(options.qps.max(0.0), None),
        options.target.url
    );
}

/// Opens every connection and, unless an exact count was asked for, sends one warmup call on
/// each (not recorded), failing the run if a warmup call fails (fortio's behaviour).
async fn prepare_clients(options: &LoadOptions, threads: usize) -> Result<Vec<Client>, LoadError> {
    let dialer = Arc::new(Dialer {
        target: options.target.clone(),
        socks5: options.socks5.clone(),
        protocol: protocol(options),
        timeout: options.timeout,
    });
    let template = Arc::new(RequestTemplate::new(options)?);
    let warmup = options.exactly == 0;
    let tasks = (0..threads).map(|index| {
        let mut client = Client::new(
            Arc::clone(&dialer),
            Arc::clone(&template),
            options.resolution,
        );
        async move {
            let connected = client.connect().await;
            if !warmup {
                return (index, client, connected.map(|()| None));
            }
            let outcome = match connected {
                Ok(()) => Ok(Some(client.fetch(Instant::now()).await)),
                Err(e) => Err(e),
            };
            (index, client, outcome)
        }
    });
    let mut clients = Vec::with_capacity(threads);
    for (index, client, outcome) in futures::future::join_all(tasks).await {
        let failure = match outcome {
            Ok(Some(o)) if !code_is_ok(o.code) => Some(format!("status {}", o.code)),
            Ok(_) => None,
            Err(error) => Some(error.to_string()),
        };
        if let Some(reason) = failure.filter(|_| !options.allow_initial_errors) {
            return Err(LoadError::Warmup {
                connection: index,
                url: options.target.url.clone(),
                reason,
            });
        }
        clients.push(client);
    }
    Ok(clients)
}

fn spawn_workers(
    options: &LoadOptions,
    plan: &Plan,
    clients: Vec<Client>,
    start: Instant,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Box<WorkerStats>>> {
    let pace = plan.interval.map(|interval| PaceConfig {
        interval,
        uniform: options.uniform,
        jitter: options.jitter,
        nocatchup: options.nocatchup,
    });
    // An exact count overrides the duration, as in fortio.
    let deadline = if options.exactly > 0 {
        None
    } else {
        options.duration
    };
    clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            let worker_plan = WorkerPlan {
                start,
                calls: plan.calls_for(index),
                deadline,
                pacer: pace.as_ref().map(|c| Pacer::new(c, index, plan.threads)),
                stop: stop.clone(),
            };
            tokio::spawn(run_worker(client, worker_plan))
        })
        .collect()
}

fn merged(per_connection: &[WorkerStats], resolution: f64) -> WorkerStats {
    let mut total = WorkerStats::new(resolution);
    for stats in per_connection {
        total.merge(stats);
    }
    total
}

fn connection_line(stats: &WorkerStats) -> ConnectionLine {
    ConnectionLine {
        sockets: stats.sockets,
        peers: stats.peers.clone(),
        connect_time: stats.connect_times.counter,
    }
}

fn build_results(
    options: &LoadOptions,
    plan: &Plan,
    per_connection: &[WorkerStats],
    start_time: SystemTime,
    elapsed: std::time::Duration,
) -> HttpRunnerResults {
    let total = merged(per_connection, options.resolution);
    let count = total.durations.counter.count;
    let secs = elapsed.as_secs_f64();
    let mut requested_duration = plan.requested_duration.clone();
    if options.exactly > 0 && count != options.exactly {
        requested_duration.push_str(&format!(", interrupted after {count}"));
    }
    let start = UtcTime::from_system(start_time);
    HttpRunnerResults {
        run_type: "HTTP".to_owned(),
        labels: options.labels.clone(),
        start_time: start.rfc3339_nanos(),
        requested_qps: plan.requested_qps.clone(),
        requested_duration,
        actual_qps: if secs > 0.0 { count as f64 / secs } else { 0.0 },
        actual_duration: i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX),
        num_threads: plan.threads,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        duration_histogram: total
            .durations
            .export()
            .with_percentiles(&options.percentiles),
        errors_duration_histogram: total.errors.export().with_percentiles(&options.percentiles),
        exactly: options.exactly,
        jitter: options.jitter,
        uniform: options.uniform,
        no_catch_up: options.nocatchup,
        run_id: 0,
        access_logger_info: String::new(),
        id: run_id(&start, &options.labels),
        ret_codes: total
            .ret_codes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        ip_count_map: total.peers.clone(),
        options: http_options(options),
        sizes: total.sizes.export(),
        header_sizes: total.header_sizes.export(),
        sockets: per_connection.iter().map(|s| s.sockets).collect(),
        socket_count: total.sockets,
        connection_stats: connection_stats(&total, &options.percentiles),
        abort_on: 0,
    }
}

fn connection_stats(total: &WorkerStats, percentiles: &[f64]) -> HistogramData {
    total.connect_times.export().with_percentiles(percentiles)
}

/// fortio's choice: its fast HTTP/1.1 client unless `-stdclient` or `-h2`.
fn protocol(options: &LoadOptions) -> Protocol {
    match (options.h2, options.std_client) {
        (true, _) => Protocol::Http2,
        (false, true) => Protocol::Http1,
        (false, false) => Protocol::FastHttp1,
    }
}

fn http_options(options: &LoadOptions) -> HttpOptions {
    HttpOptions {
        url: options.target.url.clone(),
        num_connections: 1,
        h2: options.h2,
        disable_fast_client: options.std_client,
        disable_keep_alive: !options.keepalive,
        http_req_timeout: i64::try_from(options.timeout.as_nanos()).unwrap_or(i64::MAX),
        payload: options
            .payload
            .as_ref()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        resolution: options.resolution,
        ..HttpOptions::default()
    }
}

/// fortio's `GenID`: date, then the labels reduced to `[A-Za-z0-9_]` runs, at most 96 bytes.
pub fn run_id(start: &UtcTime, labels: &str) -> String {
    let mut id = start.id_date();
    if labels.is_empty() {
        return id;
    }
    id.push('_');
    let mut last = '_';
    for c in labels.chars() {
        if c.is_ascii_alphanumeric() {
            last = c;
        } else if last == '_' {
            continue;
        } else {
            last = '_';
        }
        id.push(last);
    }
    if id.ends_with('_') {
        id.pop();
    }
    id.truncate(96);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_follows_fortio() {
        let t = UtcTime::from_unix(1_647_729_263, 0);
        assert_eq!(run_id(&t, ""), "2022-03-19-223423");
        assert_eq!(
            run_id(&t, "localhost:8080/echo , myhost"),
            "2022-03-19-223423_localhost_8080_echo_myhost"
        );
        assert_eq!(run_id(&t, &"x".repeat(200)).len(), 96);
    }
}
