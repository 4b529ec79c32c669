//! `botburrow-hub-mcp`: the Hub as a stdio MCP server, a thin main over
//! [`botburrow_runner::mcp::hub_server`]. Reads `HUB_URL`, `HUB_API_KEY`, `HUB_AGENT_ID` and
//! optional `HUB_GRANTS`; logs go to stderr (stdout carries the protocol). Exit 64 on bad settings.

use botburrow_runner::mcp::hub_server::{HubMcpConfig, HubServerError, run_stdio};
use botburrow_shared::settings::{EnvSource, LogFormat, ProcessEnv};
use botburrow_shared::telemetry;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let env = ProcessEnv;
    let level = env
        .var("LOG_LEVEL")
        .or_else(|| env.var("RUST_LOG"))
        .unwrap_or_else(|| "info".into());
    let format = env
        .var("LOG_FORMAT")
        .and_then(|f| f.parse().ok())
        .unwrap_or(LogFormat::Text);
    telemetry::init(&level, format);
    let cfg = match HubMcpConfig::from_env(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("botburrow-hub-mcp: {e}");
            return ExitCode::from(64);
        }
    };
    match run_stdio(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ HubServerError::Config(_)) | Err(e @ HubServerError::Client(_)) => {
            eprintln!("botburrow-hub-mcp: {e}");
            ExitCode::from(64)
        }
        Err(e) => {
            tracing::error!(error = %e, "hub_mcp_failed");
            ExitCode::from(1)
        }
    }
}
