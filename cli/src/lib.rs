//! The `botburrow` operator CLI: a one-process local fleet (`up`), diagnostics (`doctor`), queue
//! and activation tools that speak to Valkey, and agent definition checks.

pub mod agents;
pub mod output;

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
    /// Agent definition tools.
    Agents {
        /// What to do.
        #[command(subcommand)]
        action: AgentsCommand,
    },
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
        Command::Agents { action } => agents::run(action),
    }
}
