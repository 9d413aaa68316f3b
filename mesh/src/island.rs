//! A local mesh's network in namespaces: one namespace per pod, each holding its pod's address
//! on `eth0`, all joined by veth pairs to a bridge in a hub namespace (the pods' gateway). The
//! namespaces are an island: nothing links them to the host's network, so nothing they send
//! can leave the machine. Built and changed with `ip` (iproute2); needs root.
//!
//! Each pod's namespace is `ip netns` name `<prefix><namespace>.<pod>` (so `ip netns exec
//! mesh-default.sleep curl …` runs in pod default/sleep), and is also named `<namespace>.<pod>`
//! in the island's directory, as the ztunnel's `Capture::NetnsDir` expects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use mesh_runtime::Netns;

/// Where `ip netns` keeps its named namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";
/// The hub's bridge, the pods' gateway.
const BRIDGE: &str = "br0";

/// One pod of an island.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IslandPod {
    /// `<namespace>.<pod>`.
    pub name: String,
    pub ip: Ipv4Addr,
}

/// A built island; dropping it removes every namespace it made.
#[derive(Debug)]
pub struct Island {
    /// Prefix of every `ip netns` name it makes.
    prefix: String,
    dir: PathBuf,
    network: Ipv4Net,
    gateway: Ipv4Addr,
    hub: String,
    /// The pods' namespaces, with the hub's end of their veth pair.
    pods: BTreeMap<String, (IslandPod, String)>,
    next_port: u32,
}

impl Island {
    /// Builds an island with no pods yet: its hub and bridge, whose address is the first of
    /// `network` (the pods' gateway), and its directory at `dir`. Namespaces whose `ip netns`
    /// name starts with `prefix` are removed first: an earlier island's, left by a crash.
    pub fn create(prefix: &str, dir: &Path, network: Ipv4Net) -> anyhow::Result<Island> {
        remove_named(prefix)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let gateway = (network.hosts().next())
            .with_context(|| format!("{network} has no address for a gateway"))?;
        let hub = format!("{prefix}hub");
        let island = Island {
            prefix: prefix.into(),
            dir: dir.to_path_buf(),
            network,
            gateway,
            hub: hub.clone(),
            pods: BTreeMap::new(),
            next_port: 0,
        };
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"])?;
        let gateway_cidr = format!("{gateway}/{}", network.prefix_len());
        ip(&["-n", &hub, "addr", "add", &gateway_cidr, "dev", BRIDGE])?;
        ip(&["-n", &hub, "link", "set", BRIDGE, "up"])?;
        Ok(island)
    }

    /// Makes the island's pods exactly `pods`: namespaces for new pods (or pods whose address
    /// changed), none left for pods gone.
    pub fn sync(&mut self, pods: &[IslandPod]) -> anyhow::Result<()> {
        let gone: Vec<String> = (self.pods.iter())
            .filter(|(_, (pod, _))| !pods.contains(pod))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.remove(&name)?;
        }
        for pod in pods {
            if !self.pods.contains_key(&pod.name) {
                self.add(pod)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, pod: &IslandPod) -> anyhow::Result<()> {
        admit(self.network, std::slice::from_ref(pod))?;
        let network = self.network;
        let netns = self.netns_name(&pod.name);
        let port = format!("v{}", self.next_port);
        self.next_port += 1;
        let hub = &self.hub;
        ip(&["netns", "add", &netns])?;
        // Recorded at once, so a failure below still removes it.
        self.pods
            .insert(pod.name.clone(), (pod.clone(), port.clone()));
        ip(&[
            "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ])?;
        ip(&["-n", hub, "link", "set", &port, "master", BRIDGE, "up"])?;
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
            &self.gateway.to_string(),
        ])?;
        let link = self.dir.join(&pod.name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new(NETNS_RUN_DIR).join(&netns), &link)
            .with_context(|| format!("linking {}", link.display()))?;
        Ok(())
    }

    fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        if self.pods.remove(name).is_some() {
            let _ = std::fs::remove_file(self.dir.join(name));
            // Deleting the namespace deletes its veth end, and so the pair.
            ip(&["netns", "del", &self.netns_name(name)])?;
        }
        Ok(())
    }

    /// Whether `pods` can all join this island ([`admit`]).
    pub fn admits(&self, pods: &[IslandPod]) -> anyhow::Result<()> {
        admit(self.network, pods)
    }

    /// The directory naming every pod's namespace.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `ip netns` name of pod `name` (`<namespace>.<pod>`).
    pub fn netns_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The namespace of pod `name` (`<namespace>.<pod>`), as its apps and clients see it.
    pub fn netns(&self, name: &str) -> anyhow::Result<Netns> {
        Ok(Netns::open(&self.dir.join(name))?)
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        let names: Vec<String> = self.pods.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.remove(&name) {
                tracing::warn!(pod = %name, error = %format!("{e:#}"), "cannot remove network namespace");
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.hub]) {
            tracing::warn!(netns = %self.hub, error = %format!("{e:#}"), "cannot remove network namespace");
        }
    }
}

/// Whether `pods` can sit on `network`: inside it, and neither its first address (the
/// gateway) nor its broadcast address.
pub fn admit(network: Ipv4Net, pods: &[IslandPod]) -> anyhow::Result<()> {
    let gateway = network.hosts().next();
    for pod in pods {
        if !network.contains(&pod.ip) || Some(pod.ip) == gateway || pod.ip == network.broadcast() {
            bail!(
                "pod {} address {} is not a pod address of {network}: every pod sits on one \
                 bridge network, whose first address is the gateway (use addresses such as \
                 10.244.0.0/16)",
                pod.name,
                pod.ip
            );
        }
    }
    Ok(())
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
            "ip {} failed: {} (network namespaces need root)",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
