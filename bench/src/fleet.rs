//! Every process the harness starts: spawned pinned to a core, logged to a file, and stopped
//! by PID — gracefully, then forcibly — when the fleet is stopped or dropped (also on error).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{BenchError, io};

/// How long a stopped process gets to exit before it is killed.
const GRACE: Duration = Duration::from_secs(3);

/// What to start.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Unique short name: used for the log file and in errors.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Run under `taskset -c <core>`.
    pub core: Option<usize>,
    pub env: Vec<(String, String)>,
    /// Signal asking for a graceful exit (SIGINT for our binaries, SIGTERM for Envoy).
    pub stop_signal: Signal,
}

impl Spawn {
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Spawn {
        Spawn {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            core: None,
            env: Vec::new(),
            stop_signal: Signal::SIGINT,
        }
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Spawn {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn core(mut self, core: usize) -> Spawn {
        self.core = Some(core);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Spawn {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn stop_signal(mut self, signal: Signal) -> Spawn {
        self.stop_signal = signal;
        self
    }

    /// The command line as run (with `taskset` when pinned), for logs and the report.
    pub fn command_line(&self) -> Vec<String> {
        let mut line = Vec::new();
        if let Some(core) = self.core {
            line.extend(["taskset".to_owned(), "-c".to_owned(), core.to_string()]);
        }
        line.push(self.program.display().to_string());
        line.extend(self.args.iter().cloned());
        line
    }

    fn command(&self, log: File) -> Result<Command, BenchError> {
        let line = self.command_line();
        let mut command = Command::new(&line[0]);
        command.args(&line[1..]);
        let stderr = log
            .try_clone()
            .map_err(io("duplicating log of", &self.name))?;
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        Ok(command)
    }
}

struct Managed {
    name: String,
    log: PathBuf,
    child: Child,
    stop_signal: Signal,
}

/// The running processes; stopping (or dropping) ends every one of them.
pub struct Fleet {
    logs: PathBuf,
    children: Vec<Managed>,
    started: Vec<(String, String)>,
}

impl Fleet {
    /// Processes will log to `<logs>/<name>.log`.
    pub fn new(logs: &Path) -> Fleet {
        Fleet {
            logs: logs.to_owned(),
            children: Vec::new(),
            started: Vec::new(),
        }
    }

    /// Starts `spec`; returns its PID (the program's own: `taskset` execs it).
    pub fn spawn(&mut self, spec: Spawn) -> Result<u32, BenchError> {
        let log = self.logs.join(format!("{}.log", spec.name));
        let file = File::create(&log).map_err(io("creating log", &log))?;
        let child = spec
            .command(file)?
            .spawn()
            .map_err(|source| BenchError::Spawn {
                name: spec.name.clone(),
                program: spec.program.clone(),
                source,
            })?;
        let pid = child.id();
        let line = spec.command_line().join(" ");
        tracing::debug!(name = %spec.name, pid, command = %line, "started");
        self.started.push((spec.name.clone(), line));
        self.children.push(Managed {
            name: spec.name,
            log,
            child,
            stop_signal: spec.stop_signal,
        });
        Ok(pid)
    }

    /// Fails, naming the process and quoting its log, if any started process has exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        for managed in &mut self.children {
            if let Ok(Some(status)) = managed.child.try_wait() {
                return Err(BenchError::ExitedEarly {
                    name: managed.name.clone(),
                    status: status.to_string(),
                    log_tail: log_tail(&managed.log, 15),
                });
            }
        }
        Ok(())
    }

    /// Every process started so far (name, command line), stopped ones included.
    pub fn started(&self) -> &[(String, String)] {
        &self.started
    }

    /// PIDs of the processes still registered, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|m| (m.name.clone(), m.child.id()))
            .collect()
    }

    /// Asks every process to exit, waits up to 3 s, kills the rest, and reaps them all.
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous by design: also runs from Drop, outside any runtime"
    )]
    pub fn stop(&mut self) {
        for managed in &mut self.children {
            if matches!(managed.child.try_wait(), Ok(None)) {
                let pid = Pid::from_raw(i32::try_from(managed.child.id()).unwrap_or(i32::MAX));
                let _ = kill(pid, managed.stop_signal);
            }
        }
        let deadline = Instant::now() + GRACE;
        for managed in &mut self.children {
            while matches!(managed.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(managed.child.try_wait(), Ok(None)) {
                tracing::warn!(name = %managed.name, "did not exit in time; killing it");
                let _ = managed.child.kill();
            }
            let _ = managed.child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a synchronous test polls a child process"
    )]
    fn stop_ends_started_processes_and_check_alive_reports_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fleet = Fleet::new(dir.path());
        let pid = fleet
            .spawn(Spawn::new("sleeper", "sleep").args(["30"]).core(0))
            .expect("spawn sleep");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        fleet.check_alive().expect("still running");
        fleet
            .spawn(Spawn::new("quitter", "sh").args(["-c", "echo bye; exit 3"]))
            .expect("spawn sh");
        let deadline = Instant::now() + Duration::from_secs(5);
        let error = loop {
            match fleet.check_alive() {
                Err(e) => break e,
                Ok(()) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(()) => panic!("quitter never reported"),
            }
        };
        let text = error.to_string();
        assert!(text.contains("quitter") && text.contains("bye"), "{text}");
        let started = Instant::now();
        drop(fleet);
        assert!(
            started.elapsed() < GRACE,
            "sleep ignores SIGINT? {:?}",
            started.elapsed()
        );
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sleep {pid} survived"
        );
    }
}
