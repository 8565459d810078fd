//! `run`: wires sources, outbox, dispatcher and server together.

use crate::config::RunConfig;

/// Runs the service until SIGTERM or SIGINT.
pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    anyhow::bail!(
        "the service is not built yet ({} endpoints configured)",
        config.endpoints.len()
    )
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
