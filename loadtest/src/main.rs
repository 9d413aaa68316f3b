//! `loadtest server` (fortio-style echo server), `loadtest load` (fortio-compatible load
//! generator) and `loadtest bench` (the side-by-side benchmark against direct and Envoy).
//! Text output goes to stderr like fortio; `-json -` writes JSON to stdout.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use loadtest::cli::{Cli, Command, ServerArgs, normalize_args, parse_listen_address};
use loadtest::echo::EchoServer;
use loadtest::load::{self, LoadArgs};
use mesh_runtime::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    mesh_runtime::init_logging();
    // One core (e.g. under taskset): a single-threaded scheduler has less overhead.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server(args).await,
            Command::Load(args) => load_command(*args).await,
            Command::Curl(args) => curl_command(*args).await,
            Command::Bench(args) => bench_command(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Aborting because of {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on Ctrl-C.
fn cancel_on_interrupt(token: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
        }
    });
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let addr = parse_listen_address(&args.http_port)?;
    let listener = mesh_runtime::bind(addr).await?;
    let local = listener.local_addr().context("listener address")?;
    tracing::info!(name = %args.name, %local, "echo server listening (HTTP/1.1 and h2c)");
    let shutdown = CancellationToken::new();
    cancel_on_interrupt(shutdown.clone());
    let mut echo = EchoServer::new(args.name);
    if let Some(timeout) = args.keepalive_timeout {
        echo = echo.keepalive_timeout(timeout);
    }
    echo.serve(listener, shutdown).await;
    Ok(())
}

async fn load_command(args: LoadArgs) -> anyhow::Result<()> {
    let json = args.json.clone();
    let options = args.into_options(&hostname())?;
    let stop = CancellationToken::new();
    cancel_on_interrupt(stop.clone());
    let mut stderr = std::io::stderr();
    let results = load::run(&options, &mut stderr, stop).await?;
    if let Some(path) = json {
        load::write_json(&results, &path)?;
        if path != "-" {
            eprintln!(
                "Successfully wrote {} bytes of Json data to {path}",
                std::fs::metadata(&path).map_or(0, |m| m.len())
            );
        }
    }
    Ok(())
}

async fn curl_command(args: LoadArgs) -> anyhow::Result<()> {
    let options = args.into_options(&hostname())?;
    let fetched = load::curl(&options).await?;
    let mut head = format!("{:?} {}\n", fetched.version, fetched.status);
    for (name, value) in &fetched.headers {
        head.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    eprintln!("{head}");
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&fetched.body)
        .context("writing the body to stdout")?;
    Ok(())
}

async fn bench_command(args: mesh_bench::BenchArgs) -> anyhow::Result<()> {
    let report = mesh_bench::run(args).await?;
    println!("report: {}", report.report_path.display());
    println!("chart:  {}", report.chart_path.display());
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
