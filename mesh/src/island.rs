//! A local mesh's network in namespaces: one namespace per pod, each holding its pod's address
//! on `eth0`, all joined by veth pairs to a bridge in a hub namespace (the pods' gateway). The
//! namespaces are an island: nothing links them to the host's network, so nothing they send
//! can leave the machine. Built and removed with `ip` (iproute2); needs root.
//!
//! Each pod's namespace is also named `<namespace>.<pod>` in the island's directory, as the
//! ztunnel's `Capture::NetnsDir` expects.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use mesh_runtime::Netns;

/// Where `ip netns` keeps its named namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// One pod of an island.
#[derive(Clone, Debug)]
pub struct IslandPod {
    /// `<namespace>.<pod>`: its name in the island's directory.
    pub name: String,
    pub ip: Ipv4Addr,
}

/// A built island; dropping it removes every namespace it made.
#[derive(Debug)]
pub struct Island {
    /// Prefix of every `ip netns` name it made (`mesh-<tag>-`).
    prefix: String,
    dir: PathBuf,
    made: Vec<String>,
}

impl Island {
    /// Builds the island for `pods` (all inside `network`, whose first address is the gateway)
    /// with its directory at `dir`. Namespaces left by an earlier island of the same `tag`
    /// (a run that crashed) are removed first.
    pub fn create(
        tag: &str,
        dir: &Path,
        network: Ipv4Net,
        pods: &[IslandPod],
    ) -> anyhow::Result<Island> {
        let prefix = format!("mesh-{tag}-");
        remove_named(&prefix)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut island = Island {
            prefix: prefix.clone(),
            dir: dir.to_path_buf(),
            made: Vec::new(),
        };
        let gateway = network
            .hosts()
            .next()
            .with_context(|| format!("{network} has no address for a gateway"))?;
        let hub = island.add_netns("hub")?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        let gateway_cidr = format!("{gateway}/{}", network.prefix_len());
        ip(&["-n", &hub, "addr", "add", &gateway_cidr, "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, pod) in pods.iter().enumerate() {
            if !network.contains(&pod.ip) || pod.ip == gateway {
                bail!(
                    "pod {} address {} is not a pod address of {network}",
                    pod.name,
                    pod.ip
                );
            }
            let netns = island.add_netns(&format!("p{i}"))?;
            let port = format!("v{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/{}", pod.ip, network.prefix_len());
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
            let link = island.dir.join(&pod.name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(NETNS_RUN_DIR).join(&netns), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(island)
    }

    /// The directory naming every pod's namespace.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace of pod `name` (`<namespace>.<pod>`), as its apps and clients see it.
    pub fn netns(&self, name: &str) -> anyhow::Result<Netns> {
        Ok(Netns::open(&self.dir.join(name))?)
    }

    fn add_netns(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}{suffix}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.made.push(name.clone());
        Ok(name)
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        for name in self.made.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &name]) {
                tracing::warn!(netns = %name, error = %e, "cannot remove network namespace");
            }
        }
    }
}

/// Removes every `ip netns` namespace whose name starts with `prefix`.
fn remove_named(prefix: &str) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context(format!("reading {NETNS_RUN_DIR}")),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.starts_with(prefix) {
            ip(&["netns", "del", &name])?;
        }
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2); is it installed?")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
