//! Writes and removes the capture rules of one pod's namespace, with the system's
//! `iptables-restore` (nft backend on current distributions) and `ip`.
//!
//! Why the commands and not a crate: `iptables-restore` applies each table as one transaction
//! in the very text istio-cni's own tests compare against, and the crates that wrap iptables
//! run the same binary one rule at a time; the netlink crates that speak nftables directly
//! would need the rules rewritten as nft expressions, which nobody could diff against Istio's.

use std::process::Command;

use mesh_runtime::Netns;

use super::rules::{self, CapturePorts};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{program} in {netns}: {source}")]
    Spawn {
        program: &'static str,
        netns: String,
        source: std::io::Error,
    },
    #[error("{program} in {netns} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        netns: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Sends the pod's TCP to the ztunnel's listeners in it.
pub async fn install(netns: Netns, ports: CapturePorts) -> Result<(), InstallError> {
    blocking(move || {
        run(
            &netns,
            "iptables-restore",
            &[],
            rules::iptables(ports).as_bytes(),
        )?;
        for (i, args) in rules::policy_routing().iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match run(&netns, "ip", &args, b"") {
                // The first deletes a rule that is there only when set up before.
                Err(InstallError::Failed { .. }) if i == 0 => {}
                other => other?,
            }
        }
        Ok(())
    })
    .await
}

/// Stops capturing the pod's new connections, letting those open drain
/// ([`rules::iptables_released`]).
pub async fn remove(netns: Netns) -> Result<(), InstallError> {
    blocking(move || {
        run(
            &netns,
            "iptables-restore",
            &[],
            rules::iptables_released().as_bytes(),
        )
    })
    .await
}

async fn blocking(
    f: impl FnOnce() -> Result<(), InstallError> + Send + 'static,
) -> Result<(), InstallError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn run(
    netns: &Netns,
    program: &'static str,
    args: &[&str],
    input: &[u8],
) -> Result<(), InstallError> {
    let output = netns
        .output(Command::new(program).args(args), input)
        .map_err(|source| InstallError::Spawn {
            program,
            netns: netns.name().to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(InstallError::Failed {
        program,
        netns: netns.name().to_string(),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}
