//! `ztunnel`: the node proxy of one node, as its own process. For every pod of `NODE_NAME`
//! it serves HBONE on 15008 and takes the pod's outgoing connections: captured inside the
//! pod's network namespace (`CAPTURE=zds`, pods handed over by istio-cni's node agent; or
//! `netns-dir`), or through the pod's SOCKS5 entry on `podIP:15080` (`loopback`, the default).
//! Metrics on the node's address, 15020, readiness on 15021; the admin server on
//! `127.0.0.1:15000`; it drains on SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use mesh::program::{self, Common};
use mesh_hbone::{Pool, PoolConfig};
use mesh_runtime::{CancellationToken, ShutdownSignals};
use ztunnel::capture::Capture;
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
    /// How pods' traffic reaches the ztunnel: `zds` (in-pod capture, pods handed over by
    /// istio-cni's node agent at --cni-socket), `netns-dir` (in-pod capture of the namespaces
    /// named `<namespace>.<pod>` in --netns-dir, rules written by the ztunnel), or `loopback`
    /// (SOCKS5 on each pod's address, no capture).
    #[arg(long, env = "CAPTURE", value_enum, default_value = "loopback")]
    capture: CaptureMode,
    /// istio-cni's node agent socket (`zds`; default /var/run/ztunnel/ztunnel.sock).
    #[arg(long, env = "INPOD_UDS")]
    cni_socket: Option<PathBuf>,
    /// The directory naming each pod's network namespace (`netns-dir`).
    #[arg(long, env = "NETNS_DIR")]
    netns_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CaptureMode {
    Loopback,
    Zds,
    NetnsDir,
}

impl Cli {
    fn capture(&self) -> anyhow::Result<Capture> {
        // A setting of another mode would be ignored: refused instead.
        match (self.capture, &self.cni_socket, &self.netns_dir) {
            (CaptureMode::Zds, _, Some(_)) | (CaptureMode::Loopback, _, Some(_)) => {
                bail!("--netns-dir (NETNS_DIR) applies to --capture netns-dir only")
            }
            (CaptureMode::NetnsDir, Some(_), _) | (CaptureMode::Loopback, Some(_), _) => {
                bail!("--cni-socket (INPOD_UDS) applies to --capture zds only")
            }
            _ => {}
        }
        Ok(match self.capture {
            CaptureMode::Loopback => Capture::Loopback,
            CaptureMode::Zds => Capture::Zds(
                self.cni_socket
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(ztunnel::capture::zds::DEFAULT_SOCKET)),
            ),
            CaptureMode::NetnsDir => match &self.netns_dir {
                Some(dir) => Capture::NetnsDir(dir.clone()),
                None => bail!("--capture netns-dir needs --netns-dir (NETNS_DIR)"),
            },
        })
    }
}

fn main() -> ExitCode {
    program::main("ztunnel", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Settings first: a mistake in them is refused before anything is read or bound.
    let capture = cli.capture()?;
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
    let settings = ZtunnelSettings {
        capture,
        ..ZtunnelSettings::new(&cli.node)
    };
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
    tracing::info!(node = %cli.node, %address, capture = ?cli.capture, "ztunnel serving");
    let grace = Duration::from_secs(common.drain_seconds);
    program::run_until_signalled(signals, readiness, shutdown, grace).await;
    serving.abort();
    Ok(())
}
