//! Finding the prebuilt binaries and starting what each path needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::BenchCa;
use crate::error::BenchError;
use crate::fleet::{Fleet, Spawn};
use crate::paths::{PathId, addr};
use crate::{envoy, mesh, probe};

/// Cores: the proxy under test on one, load generator and backend on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cores {
    pub proxy: usize,
    pub load: usize,
}

impl Cores {
    /// Core 0 for proxies and core 1 for the rest; everything on core 0 with one CPU.
    pub fn for_cpus(cpus: usize) -> Cores {
        Cores {
            proxy: 0,
            load: usize::from(cpus >= 2),
        }
    }
}

/// The prebuilt binaries the run uses.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub loadtest: PathBuf,
    /// `None`: the mesh rows are not run.
    pub mesh: Option<PathBuf>,
}

/// `--bin-dir`, else the directory of the running executable.
pub fn bin_dir(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let exe =
        std::env::current_exe().map_err(crate::error::io("locating", "the current executable"))?;
    Ok(exe.parent().map(Path::to_owned).unwrap_or_default())
}

impl Binaries {
    /// `loadtest` must be in `dir`; `mesh` may be missing.
    pub fn find(dir: &Path) -> Result<Binaries, BenchError> {
        let loadtest = dir.join("loadtest");
        if !loadtest.is_file() {
            return Err(BenchError::MissingBinary {
                binary: "loadtest",
                package: "loadtest",
                dir: dir.to_owned(),
            });
        }
        let mesh = Some(dir.join("mesh")).filter(|m| m.is_file());
        Ok(Binaries { loadtest, mesh })
    }
}

/// The nearest ancestor of `start` holding a Cargo workspace.
pub fn find_workspace(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.contains("[workspace]"))
        })
        .map(Path::to_owned)
}

/// Where `.bench/venv` lives: the workspace around `cwd`, else the workspace this crate was
/// built from (when it still exists), else `cwd`.
pub fn workspace_root(cwd: &Path) -> PathBuf {
    find_workspace(cwd)
        .or_else(|| find_workspace(Path::new(env!("CARGO_MANIFEST_DIR"))))
        .unwrap_or_else(|| cwd.to_owned())
}

/// Fails if something already listens where the run will listen (e.g. a bench still running).
pub fn ensure_free(paths: &[PathId]) -> Result<(), BenchError> {
    let mut addresses = vec![addr::BACKEND];
    addresses.extend(paths.iter().flat_map(|p| p.listen_addresses()));
    for address in addresses {
        if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Err(BenchError::AddressInUse(address));
        }
    }
    Ok(())
}

/// Starts the echo backend on the load core and waits until it answers.
pub async fn start_backend(
    binaries: &Binaries,
    cores: Cores,
    fleet: &mut Fleet,
) -> Result<u32, BenchError> {
    let spawn = Spawn::new("backend", &binaries.loadtest)
        .args([
            "server",
            "-http-port",
            &addr::BACKEND.to_string(),
            "-name",
            "backend",
        ])
        .core(cores.load)
        .env("RUST_LOG", "warn");
    let pid = fleet.spawn(spawn)?;
    probe::wait_ready(
        "echo backend",
        addr::BACKEND,
        "/echo",
        Duration::from_secs(10),
        fleet,
    )
    .await?;
    Ok(pid)
}

/// What starting the processes of the Envoy and mesh paths needs.
pub struct Launch<'a> {
    pub envoy: Option<&'a Path>,
    pub mesh: Option<&'a Path>,
    pub run_dir: &'a Path,
    pub ca: &'a BenchCa,
    pub cores: Cores,
}

/// Starts the proxies of `path`; returns the PIDs whose CPU and memory are measured. The
/// mesh process serves both mesh paths: it is started once and its PID reused.
pub async fn start_path(
    path: PathId,
    launch: &Launch<'_>,
    mesh_pid: &mut Option<u32>,
    fleet: &mut Fleet,
) -> Result<Vec<u32>, BenchError> {
    match path {
        PathId::Direct => Ok(Vec::new()),
        PathId::MeshZtunnel | PathId::MeshWaypoint => {
            if let Some(pid) = *mesh_pid {
                return Ok(vec![pid]);
            }
            let binary = launch
                .mesh
                .ok_or_else(|| BenchError::Unavailable("the mesh binary".to_owned()))?;
            let pid = mesh::start(binary, launch.run_dir, launch.cores.proxy, fleet).await?;
            *mesh_pid = Some(pid);
            Ok(vec![pid])
        }
        PathId::EnvoyTls | PathId::EnvoyHbone | PathId::EnvoyHboneWaypoint => {
            let binary = launch
                .envoy
                .ok_or_else(|| BenchError::Unavailable("an Envoy binary".to_owned()))?;
            let roles = envoy::roles(path, launch.ca)?;
            envoy::start(binary, roles, launch.run_dir, launch.cores.proxy, fleet).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_split_when_there_are_two() {
        assert_eq!(Cores::for_cpus(2), Cores { proxy: 0, load: 1 });
        assert_eq!(Cores::for_cpus(1), Cores { proxy: 0, load: 0 });
    }

    #[test]
    fn workspace_root_is_found_from_the_crate_directory() {
        let root = workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(root.join("bench").is_dir(), "{}", root.display());
        assert_eq!(
            workspace_root(Path::new("/")),
            root,
            "falls back to the build's workspace"
        );
        let missing = Binaries::find(Path::new("/nonexistent-dir")).expect_err("no loadtest");
        assert!(
            missing.to_string().contains("cargo build -p loadtest"),
            "{missing}"
        );
    }
}
