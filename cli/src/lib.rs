//! The `botburrow` operator CLI: a one-process local fleet (`up`), diagnostics (`doctor`), queue
//! and activation tools that speak to Valkey, and agent definition checks.

pub mod agents;
pub mod doctor;
pub mod output;
pub mod queue_cmd;
pub mod up;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "botburrow", version, about = "Run, inspect and debug a botburrow fleet")]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole fleet locally in one process (dev Hub, coordinator, runner).
    Up(up::UpArgs),
    /// Check settings, Valkey, the Hub, provider keys, agents and MCP programs.
    Doctor(doctor::DoctorArgs),
    /// Agent definition tools.
    Agents {
        /// What to do.
        #[command(subcommand)]
        action: AgentsCommand,
    },
    /// Inspect and repair the work queue in Valkey.
    Queue {
        /// Valkey URL (default: $VALKEY_URL, $REDIS_URL, redis://127.0.0.1:6379).
        #[arg(long, global = true)]
        valkey_url: Option<String>,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        action: queue_cmd::QueueCommand,
    },
    /// List or force-stop running activations.
    Activation {
        /// Valkey URL (default: $VALKEY_URL, $REDIS_URL, redis://127.0.0.1:6379).
        #[arg(long, global = true)]
        valkey_url: Option<String>,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        /// What to do.
        #[command(subcommand)]
        action: queue_cmd::ActivationCommand,
    },
}

/// The Valkey URL from a flag or the same variables the binaries read.
pub fn valkey_url(flag: Option<String>) -> String {
    use botburrow_shared::settings::{EnvSource, ProcessEnv};
    flag.or_else(|| {
        ["BOTBURROW_VALKEY_URL", "VALKEY_URL", "BOTBURROW_REDIS_URL", "REDIS_URL"].iter().find_map(|n| ProcessEnv.var(n))
    })
    .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}

fn block_on<F: std::future::Future<Output = Result<ExitCode, String>>>(f: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `botburrow agents ...`
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Check every agent under DIR/agents; print each problem with file and field; exit 1 if any.
    Validate {
        /// The definitions root (holding agents/<id>/config.yaml).
        dir: PathBuf,
        /// Permission policy file to apply (default: $AGENT_PERMISSIONS_PATH).
        #[arg(long, env = "AGENT_PERMISSIONS_PATH")]
        policy: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the agents under DIR/agents with their executor, model and grants.
    List {
        /// The definitions root.
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Parses arguments and runs the command; the binary's `main` is only this.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            init_local_logging();
            block_on(async move { up::run(args).await.map(|()| ExitCode::SUCCESS) })
        }
        Command::Doctor(args) => block_on(async move { Ok(doctor::run(args, &doctor::process_env()).await) }),
        Command::Agents { action } => agents::run(action),
        Command::Queue { valkey_url: url, json, action } => block_on(queue_cmd::run_queue(&valkey_url(url), action, json)),
        Command::Activation { valkey_url: url, json, action } => {
            block_on(queue_cmd::run_activation(&valkey_url(url), action, json))
        }
    }
}

/// Human-readable logs at `warn` for local commands (override with `LOG_LEVEL`/`RUST_LOG`), so
/// `botburrow up` prints its own lines without a wall of JSON.
fn init_local_logging() {
    use botburrow_shared::settings::{EnvSource, LogFormat, ProcessEnv};
    let level = ["LOG_LEVEL", "RUST_LOG"].iter().find_map(|n| ProcessEnv.var(n)).unwrap_or_else(|| "warn".into());
    let format = match ProcessEnv.var("LOG_FORMAT").as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    botburrow_shared::telemetry::init(&level, format);
}
