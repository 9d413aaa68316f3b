use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An Envoy-free ambient mesh, run locally from Kubernetes-shaped YAML.
#[derive(Parser)]
#[command(name = "mesh", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole mesh (ztunnels, waypoints, echo apps) until Ctrl-C, hot-reloading the files.
    Up {
        /// A manifest file or a directory of them.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Put every pod in a network namespace of its own (`ip netns` name
        /// `mesh-<namespace>.<pod>`) and capture its traffic transparently, as in a cluster
        /// (root; pod addresses in one /16 such as 10.244.0.0/16, see examples/demo-netns.yaml).
        #[arg(long)]
        netns: bool,
    },
    /// Check manifests; print every problem and exit non-zero if there is any.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Start the example mesh, send traffic through it, report, and exit.
    Demo {
        /// Use these manifests instead of the built-in examples/demo.yaml.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// A certificate authority on disk for the `waypoint` and `ztunnel` programs (development).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Waypoints in a cluster: the Gateway to declare, and what it runs as.
    Waypoint {
        #[command(subcommand)]
        command: WaypointCommand,
    },
}

/// The waypoint Gateway `generate` prints and `apply` applies.
#[derive(clap::Args)]
struct GatewayArgs {
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[arg(long, default_value = "waypoint")]
    name: String,
    /// What traffic it serves: service, workload, all or none (`istio.io/waypoint-for`).
    #[arg(long = "for", default_value = "service")]
    waypoint_for: String,
}

#[derive(Subcommand)]
enum WaypointCommand {
    /// Print a waypoint Gateway (as `istioctl waypoint generate` does), of the mesh's class.
    Generate {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Apply a waypoint Gateway to the cluster (in-cluster, or `KUBECONFIG`), as
    /// `istioctl waypoint apply` does; the waypoint controller then runs it.
    Apply {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Label the namespace `istio.io/use-waypoint=<name>`: its Services use the waypoint.
        #[arg(long)]
        enroll_namespace: bool,
        /// Wait until the waypoint is programmed (has an address), at most `--timeout`.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print what a waypoint Gateway runs as (ServiceAccount, Deployment, Service, RBAC), for
    /// `kubectl apply` where no controller runs.
    Render {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "waypoint")]
        name: String,
        /// The waypoint program's container image.
        #[arg(long)]
        image: String,
        #[arg(long, default_value = "istiod.istio-system.svc:15012")]
        ca_address: String,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// ConfigMaps (YAML files) with Istio's overlay keys (`deployment`, `service`,
        /// `horizontalPodAutoscaler`, `podDisruptionBudget`, ...), merged in the order given.
        #[arg(long = "parameters")]
        parameters: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a root CA: `ca-cert.pem`, `ca-key.pem` (0600) and `root-cert.pem` in `--dir`.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Sign a workload certificate under the CA in `--ca-dir` and write it in Istio's
    /// file-mounted layout (`cert-chain.pem`, `key.pem`, `root-cert.pem`) into `--out`.
    Mint {
        #[arg(long)]
        ca_dir: PathBuf,
        /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
        #[arg(long)]
        identity: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own report; `up` shows the proxies' logs and access logs.
    mesh_runtime::init_logging_with(match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    });
    // Every connection the proxies hold is a descriptor; the connection caps follow this limit.
    let open_files = mesh_runtime::raise_open_file_limit();
    let caps = mesh_runtime::ConnectionLimit::process().limits();
    tracing::debug!(
        open_files,
        per_process = caps.per_process,
        per_peer = caps.per_peer,
        "connection caps"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up { file, netns } => up(file, netns).await,
            Command::Validate { file } => validate(file),
            Command::Demo { file } => mesh::demo::run(file).await,
            Command::Ca { command } => ca(command),
            Command::Waypoint { command } => waypoint(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(file: PathBuf) -> anyhow::Result<()> {
    match mesh_config::load_path(&file) {
        Ok(snapshot) => {
            for warning in snapshot.warnings() {
                println!("warning: {warning}");
            }
            print_route_statuses(&snapshot);
            println!(
                "{}: valid ({} nodes, {} workloads, {} services, {} waypoints)",
                file.display(),
                snapshot.nodes().len(),
                snapshot.workloads().count(),
                snapshot.services().count(),
                snapshot.waypoints().count()
            );
            Ok(())
        }
        Err(errors) => {
            println!("{errors}");
            anyhow::bail!("{} is invalid", file.display())
        }
    }
}

async fn waypoint(command: WaypointCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use mesh_kubernetes::waypoint_deploy::{self, GatewayRef, PodSettings, WAYPOINT_CLASS};
    let objects = match command {
        WaypointCommand::Generate { gateway } => vec![waypoint_gateway(&gateway)?],
        WaypointCommand::Apply {
            gateway,
            enroll_namespace,
            wait,
            timeout,
        } => {
            let gateway = waypoint_gateway(&gateway)?;
            return waypoint_apply(&gateway, enroll_namespace, wait.then_some(timeout)).await;
        }
        WaypointCommand::Render {
            namespace,
            name,
            image,
            ca_address,
            trust_domain,
            parameters,
        } => {
            let mut overlays = mesh_kubernetes::overlay::Overlays::default();
            for path in parameters {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let config_map: serde_json::Value = serde_norway::from_str(&text)
                    .with_context(|| format!("{}: not YAML", path.display()))?;
                (overlays.add_config_map(&config_map))
                    .with_context(|| format!("{}", path.display()))?;
            }
            let gateway = GatewayRef::new(&namespace, &name, WAYPOINT_CLASS, None);
            let pod = PodSettings {
                image,
                ca_address,
                trust_domain,
            };
            let mut objects = vec![waypoint_deploy::config_reader()];
            objects.extend(waypoint_deploy::render(&gateway, &pod, &overlays)?);
            objects
        }
    };
    // Written, not printed: a closed pipe (`| head`) is an error, not a panic.
    let mut out = std::io::stdout().lock();
    for object in objects {
        std::io::Write::write_all(&mut out, b"---\n")?;
        std::io::Write::write_all(&mut out, serde_norway::to_string(&object)?.as_bytes())?;
    }
    Ok(())
}

/// The waypoint Gateway `generate` prints and `apply` applies.
fn waypoint_gateway(args: &GatewayArgs) -> anyhow::Result<serde_json::Value> {
    let known = ["service", "workload", "all", "none"];
    let waypoint_for = args.waypoint_for.as_str();
    anyhow::ensure!(
        known.contains(&waypoint_for),
        "--for {waypoint_for:?}: one of {known:?}"
    );
    Ok(mesh_kubernetes::waypoint_deploy::gateway(
        &args.namespace,
        &args.name,
        waypoint_for,
    ))
}

async fn waypoint_apply(
    gateway: &serde_json::Value,
    enroll_namespace: bool,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use mesh_kubernetes::enroll;
    let namespace = gateway["metadata"]["namespace"].as_str().unwrap_or("");
    let name = gateway["metadata"]["name"].as_str().unwrap_or("");
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or KUBECONFIG)")?;
    enroll::apply_gateway(&client, gateway).await?;
    println!("waypoint {namespace}/{name} applied");
    if enroll_namespace {
        enroll::enroll_namespace(&client, namespace, name).await?;
        println!("namespace {namespace} labelled istio.io/use-waypoint={name}");
    }
    if let Some(timeout) = wait {
        let addresses = enroll::wait_programmed(&client, namespace, name, timeout).await?;
        println!(
            "waypoint {namespace}/{name} programmed at {}",
            addresses.join(", ")
        );
    }
    Ok(())
}

fn ca(command: CaCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use mesh_hbone::{FileCertificates, Identity, LocalCa};
    match command {
        CaCommand::Init { dir, trust_domain } => {
            let ca = LocalCa::new(&trust_domain).context("creating the CA")?;
            ca.save(&dir)?;
            println!("root CA for {trust_domain} written to {}", dir.display());
        }
        CaCommand::Mint {
            ca_dir,
            identity,
            out,
        } => {
            let identity: Identity = identity.parse().context("--identity")?;
            let ca = LocalCa::load(&ca_dir, &identity.trust_domain)?;
            let cert = ca.mint(&identity)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            FileCertificates::write(&out, &cert, &ca.root_pem())?;
            println!("certificate for {identity} written to {}", out.display());
        }
    }
    Ok(())
}

/// Each route's `status.parents` conditions, as a controller would write them (reloads log
/// the same).
fn print_route_statuses(snapshot: &mesh_config::Snapshot) {
    let statuses = snapshot.route_statuses();
    if !statuses.is_empty() {
        println!("route status (what a controller would write in status.parents):");
        for status in statuses {
            println!("{status}");
        }
    }
}

async fn up(file: PathBuf, netns: bool) -> anyhow::Result<()> {
    use mesh::local::{LocalMesh, LocalNetwork, Tuning};
    // Caught before anything says the mesh is up, so a signal sent at once still cleans up.
    let mut signals = mesh_runtime::ShutdownSignals::install()?;
    let network = if netns {
        LocalNetwork::Netns {
            prefix: mesh::local::NETNS_PREFIX.into(),
            dir: PathBuf::from(mesh::local::NETNS_DIR),
        }
    } else {
        LocalNetwork::Loopback
    };
    let mesh = LocalMesh::start_from_path_in(&file, Tuning::default(), network.clone()).await?;
    mesh.wait_ready(std::time::Duration::from_secs(10)).await?;
    let snapshot = mesh.store.load();
    for line in mesh::local::describe(&snapshot, &network) {
        println!("{line}");
    }
    print_route_statuses(&snapshot);
    println!(
        "mesh is up; watching {} for changes. Ctrl-C to stop.",
        file.display()
    );
    let signal = signals.recv().await;
    tracing::info!(signal, "stopping");
    mesh.stop().await;
    Ok(())
}
