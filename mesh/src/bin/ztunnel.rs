//! `ztunnel`: the node proxy of one node, as its own process. For every pod of `NODE_NAME`
//! it serves HBONE on `podIP:15008` and the pod's SOCKS5 entry on `podIP:15080`; metrics on
//! the node's address, 15020, readiness on 15021; the admin server on `127.0.0.1:15000`; it
//! drains on SIGTERM.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use mesh::program::{self, Common};
use mesh_hbone::{Pool, PoolConfig};
use mesh_runtime::{CancellationToken, ShutdownSignals};
use ztunnel::{Ztunnel, ZtunnelSettings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ztunnel (L4 node proxy) of one node.
#[derive(Parser, Debug)]
#[command(name = "ztunnel", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// The node whose pods this ztunnel serves.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Where the status ports listen, if not the node's InternalIP from the config.
    #[arg(long, env = "INSTANCE_IP")]
    instance_ip: Option<IpAddr>,
}

fn main() -> ExitCode {
    program::main("ztunnel", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install()?;
    let shutdown = CancellationToken::new();
    let common = &cli.common;
    let store = program::config_store(common, &shutdown).await?;
    let Some(node) = store.load().node(&cli.node).cloned() else {
        bail!("node {:?} is not in {}", cli.node, common.config_source());
    };
    // A ztunnel presents the identity of every pod on its node: it needs a CA, not one
    // certificate (Istio's CA issues them on the pods' behalf).
    let Some(certs) = program::signing_ca(common, true)? else {
        bail!(
            "give --ca-address (CA_ADDRESS) or --ca-dir (CA_DIR): a ztunnel needs a certificate \
             for each pod of its node"
        );
    };
    let registry = prometheus::Registry::new();
    let pool = Pool::new(certs.clone(), PoolConfig::default());
    let settings = ZtunnelSettings::new(&cli.node);
    let ztunnel = Ztunnel::new(settings, store.clone(), certs, pool, &registry)
        .context("starting the ztunnel")?;
    let readiness = ztunnel.readiness();
    let address = cli.instance_ip.unwrap_or(node.address);
    program::serve_status(
        None,
        address,
        &registry,
        &readiness,
        "the ztunnel",
        &shutdown,
    )
    .await?;
    program::serve_admin(common, &store, &registry, &readiness, &shutdown).await?;
    let serving = tokio::spawn(ztunnel.run(shutdown.clone()));
    tracing::info!(node = %cli.node, %address, "ztunnel serving");
    let grace = Duration::from_secs(common.drain_seconds);
    program::run_until_signalled(signals, readiness, shutdown, grace).await;
    serving.abort();
    Ok(())
}
