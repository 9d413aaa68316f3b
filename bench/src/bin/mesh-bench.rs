//! Stand-alone entry to the harness (`loadtest bench` is the usual one).

use std::process::ExitCode;

use clap::Parser;
use mesh_bench::BenchArgs;

#[derive(Parser)]
#[command(
    name = "mesh-bench",
    about = "Side-by-side benchmark: direct vs Envoy vs the mesh"
)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mesh-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mesh_bench::run(cli.bench)) {
        Ok(report) => {
            println!("{}", report.report_path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mesh-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
