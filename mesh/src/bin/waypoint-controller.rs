//! `waypoint-controller`: turns every Gateway of the mesh's waypoint class into what it runs
//! as (ServiceAccount, Deployment, Service, HPA and PDB from overlays), by server-side apply,
//! and writes the Gateways' status. Its own program, not a mode of a proxy: it holds write
//! access to Deployments and Services that no data-plane pod should hold, and it runs as one
//! replica where the proxies scale. Readiness on 15021 once the class is installed.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mesh::program;
use mesh_kubernetes::controller::{self, ControllerSettings};
use mesh_kubernetes::waypoint_deploy::PodSettings;
use mesh_runtime::{CancellationToken, Readiness, ShutdownSignals};

/// The waypoint controller of the mesh's Gateway class.
#[derive(Parser, Debug)]
#[command(name = "waypoint-controller", version)]
struct Cli {
    /// The container image of the `waypoint` program, for the Deployments it renders.
    #[arg(long, env = "WAYPOINT_IMAGE")]
    image: String,
    /// Istio's CA, as the waypoints are told it.
    #[arg(
        long,
        env = "CA_ADDRESS",
        default_value = "istiod.istio-system.svc:15012"
    )]
    ca_address: String,
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Where class-wide overlay ConfigMaps live: the controller's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "mesh-system")]
    system_namespace: String,
    /// The cluster's DNS domain, for the Gateways' addresses.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Where the status ports (metrics 15020, readiness 15021) are served.
    #[arg(long, env = "INSTANCE_IP", default_value = "0.0.0.0")]
    status_ip: IpAddr,
}

fn main() -> ExitCode {
    program::main("waypoint-controller", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let shutdown = CancellationToken::new();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or KUBECONFIG)")?;
    let registry = prometheus::Registry::new();
    let readiness = Readiness::new();
    program::serve_status(
        None,
        cli.status_ip,
        &registry,
        &readiness,
        "the waypoint controller",
        &shutdown,
    )
    .await?;
    let settings = ControllerSettings {
        pod: PodSettings {
            image: cli.image,
            ca_address: cli.ca_address,
            trust_domain: cli.trust_domain,
        },
        system_namespace: cli.system_namespace,
        cluster_domain: cli.cluster_domain,
    };
    let installed = {
        let readiness = readiness.clone();
        move || readiness.set_ready(true)
    };
    let controlling = controller::run(client, settings, installed, shutdown.clone());
    tokio::select! {
        result = controlling => result.context("the waypoint controller")?,
        signal = signals.recv() => {
            tracing::info!(signal, "stopping");
            readiness.set_ready(false);
            shutdown.cancel();
        }
    }
    Ok(())
}
