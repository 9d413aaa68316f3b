//! `waypoint`: one pod of a waypoint `Gateway`, as its own process. It serves HBONE on
//! `INSTANCE_IP:15008`, metrics on 15020 and readiness on 15021, the admin server on
//! `127.0.0.1:15000`, and drains on SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use mesh::program::{self, Common};
use mesh_config::ObjectRef;
use mesh_hbone::{CertificateProvider, Pool};
use mesh_runtime::{CancellationToken, Readiness, ShutdownSignals};
use waypoint::{WaypointServer, WaypointSettings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The waypoint proxy (L7) of one waypoint Gateway.
#[derive(Parser, Debug)]
#[command(name = "waypoint", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// The namespace of the waypoint Gateway and of this pod.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The waypoint Gateway this process serves.
    #[arg(long, env = "GATEWAY_NAME")]
    gateway: String,
    /// This pod: its address and service account come from the config.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// The address to serve on, if not the pod's `status.podIP`.
    #[arg(long, env = "INSTANCE_IP")]
    instance_ip: Option<IpAddr>,
    /// Certificates in Istio's file-mounted layout (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem`), for the pod's own identity; reloaded when they change.
    #[arg(long, env = "CERT_DIR", conflicts_with_all = ["ca_dir", "ca_address"])]
    cert_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    program::main("waypoint", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let shutdown = CancellationToken::new();
    let common = &cli.common;
    let store = program::config_store(common, &shutdown).await?;
    let gateway = ObjectRef::new(&cli.namespace, &cli.gateway);
    let snapshot = store.load();
    let Some(waypoint) = snapshot.waypoint(&gateway) else {
        bail!(
            "Gateway {gateway} is not a waypoint in {}",
            common.config_source()
        );
    };
    let Some(pod) = waypoint.pods.iter().find(|p| p.name == cli.pod) else {
        bail!(
            "pod {}/{} is not a pod of waypoint {gateway}",
            cli.namespace,
            cli.pod
        );
    };
    let identity = pod.identity.clone();
    // Where the certificate comes from (clap allows one source).
    let certs: Arc<dyn CertificateProvider> = match &cli.cert_dir {
        Some(dir) => {
            let certs = program::file_certificates(dir)?;
            if certs.identity() != identity {
                bail!(
                    "{} holds a certificate for {}, but pod {} runs as {identity}",
                    dir.display(),
                    certs.identity(),
                    cli.pod
                );
            }
            certs
        }
        None => match program::signing_ca(common, false)? {
            Some(ca) => ca,
            None => bail!(
                "give --cert-dir (CERT_DIR), --ca-address (CA_ADDRESS) or --ca-dir (CA_DIR): \
                 where certificates come from"
            ),
        },
    };
    // Not ready, and not serving, until the waypoint holds its certificate.
    tokio::select! {
        () = program::await_certificate(&certs, &identity) => {}
        signal = signals.recv() => {
            tracing::info!(signal, "stopped before it had a certificate");
            return Ok(());
        }
    }
    let address = cli.instance_ip.unwrap_or(pod.ip);
    let settings = WaypointSettings {
        waypoint: gateway.clone(),
        address,
        hbone_port: mesh_core::ports::HBONE,
        identity,
        header_limits: waypoint::HeaderLimits::default(),
        timeouts: waypoint::Timeouts::default(),
        jwks_tls: None,
        netns: None,
    };
    let registry = prometheus::Registry::new();
    let pool = Pool::new(certs.clone(), waypoint::upstream_pool_config());
    let server = WaypointServer::bind(settings, store.clone(), certs, pool, &registry)
        .await
        .context("starting the waypoint")?;
    let readiness = Readiness::new();
    program::serve_status(
        None,
        address,
        &registry,
        &readiness,
        "the waypoint",
        &shutdown,
    )
    .await?;
    program::serve_admin(common, &store, &registry, &readiness, &shutdown).await?;
    let serving = tokio::spawn(server.run(shutdown.clone()));
    readiness.set_ready(true);
    tracing::info!(waypoint = %gateway, pod = %cli.pod, %address, "waypoint serving");
    let grace = Duration::from_secs(common.drain_seconds);
    program::run_until_signalled(signals, readiness, shutdown, grace).await;
    serving.abort();
    Ok(())
}
