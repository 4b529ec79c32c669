//! Thin entry point over the `botburrow_coordinator` library: settings, telemetry, dependencies,
//! then run until SIGTERM/SIGINT (leadership is released and the process exits 0 within 5 s).

use botburrow_shared::health::new_registry;
use botburrow_shared::settings::{CoordinatorSettings, load_or_exit};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = load_or_exit(CoordinatorSettings::from_env);
    botburrow_shared::telemetry::init(&settings.common.log_level, settings.common.log_format);
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let Some(deps) =
        botburrow_coordinator::deps::build_when_ready(&settings, new_registry(), &shutdown).await
    else {
        return Ok(());
    };
    botburrow_coordinator::run(settings, deps, shutdown).await
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "coordinator_shutdown_requested");
        shutdown.cancel();
    });
    Ok(())
}
