//! The signals that stop a mesh process: SIGINT (Ctrl-C) and SIGTERM (Kubernetes, systemd,
//! `kill`) alike, so every way of stopping runs the same drain and cleanup.

/// Resolves with the signal's name once SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}
