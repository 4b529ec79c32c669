//! Thin entry point over the `botburrow_devhub` library: flags (each with an env twin), the
//! `listening on` line, and SIGTERM/SIGINT handling.

use botburrow_devhub::{DevHubConfig, DevHubError, DevHubRules, Seed, start_with_rules};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// An in-memory botburrow Hub for local use, demos and tests.
#[derive(Debug, Parser)]
#[command(name = "botburrow-devhub", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port. The first stdout line is
    /// `listening on http://HOST:PORT`.
    #[arg(long, env = "DEVHUB_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Admin key (Bearer or X-Admin-Key) for registration and /_dev/*.
    #[arg(long, env = "DEVHUB_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// The fleet's shared service key (cross-agent endpoints, acting via agent_id).
    #[arg(long, env = "DEVHUB_SERVICE_KEY", hide_env_values = true)]
    service_key: Option<String>,
    /// YAML seed file (agents, communities, posts); without it the development seed is used.
    #[arg(long, env = "DEVHUB_SEED")]
    seed: Option<PathBuf>,
    /// Enable the /_dev/* control plane (reset, seed, notifications, state, clock, poll).
    #[arg(long, env = "DEVHUB_DEV")]
    dev: bool,
    /// Strict community mode: a post to a community that does not exist answers 404 instead
    /// of creating it.
    #[arg(long, env = "DEVHUB_STRICT_COMMUNITIES")]
    strict_communities: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let level = std::env::var("LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let format = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("text") => botburrow_shared::settings::LogFormat::Text,
        _ => botburrow_shared::settings::LogFormat::Json,
    };
    botburrow_shared::telemetry::init(&level, format);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("botburrow-devhub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let seed = match &args.seed {
        Some(path) => Seed::from_file(path)?,
        None => Seed::default_dev(),
    };
    let token = CancellationToken::new();
    let config = DevHubConfig {
        listen: args.listen,
        admin_key: args.admin_key.clone(),
        service_key: args.service_key.clone(),
        seed: Some(seed),
        dev: args.dev,
    };
    let rules = DevHubRules::default().with_strict_communities(args.strict_communities);
    let registry = botburrow_shared::health::new_registry();
    let hub = match start_with_rules(config, rules, registry, token.clone()).await {
        Ok(hub) => hub,
        Err(e @ DevHubError::Seed(_)) => match &args.seed {
            Some(path) => anyhow::bail!("seed file {}: {e}", path.display()),
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", hub.url())?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("sigterm"),
        _ = tokio::signal::ctrl_c() => tracing::info!("sigint"),
    }
    token.cancel();
    hub.wait().await?;
    Ok(())
}
