//! `botburrow-runner`: thin entry point over [`botburrow_runner::app`]: settings (exit 64 on
//! invalid ones), telemetry, dependencies, then run until SIGTERM/SIGINT and drain.

use botburrow_runner::app::{RunnerDeps, run};
use botburrow_shared::health::new_registry;
use botburrow_shared::settings::{RunnerSettings, load_or_exit};
use botburrow_shared::telemetry;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = load_or_exit(RunnerSettings::from_env);
    telemetry::init(&settings.common.log_level, settings.common.log_format);
    // Signals first: a runner still waiting for Valkey must stop cleanly on SIGTERM too.
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("runner_shutdown_requested");
        on_signal.cancel();
    });
    let deps = match RunnerDeps::connect_when_ready(&settings, new_registry(), &shutdown).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            tracing::info!("runner_stopped");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            tracing::error!(error = %e, "runner_start_failed");
            return ExitCode::from(1);
        }
    };
    match run(settings, deps, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "runner_failed");
            ExitCode::from(1)
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
