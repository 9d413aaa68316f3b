//! The signals that stop a mesh process: SIGINT (Ctrl-C) and SIGTERM (Kubernetes, systemd,
//! `kill`) alike, so every way of stopping runs the same drain and cleanup.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM, caught from the moment this is made: install it before telling anyone
/// the process is up, or a signal sent at once kills the process without its cleanup.
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    /// Catches both signals from now on (needs a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves with the signal's name once SIGINT or SIGTERM arrives.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
