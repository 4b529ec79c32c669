//! Helpers shared by the MCP integration tests: the test server binary, options and activations.
#![allow(dead_code)]

use botburrow_runner::mcp::{McpMetrics, McpOptions, ToolCredentials};
use botburrow_shared::health::{SharedRegistry, new_registry};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The `botburrow-test-mcp-server` binary (testkit), built once if this test run lacks it.
pub fn test_server() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> -> target/<profile>/
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let bin = dir.join("botburrow-test-mcp-server");
        if !bin.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "botburrow-testkit",
                    "--bin",
                    "botburrow-test-mcp-server",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build for the test MCP server");
            assert!(
                status.success(),
                "building botburrow-test-mcp-server failed"
            );
        }
        assert!(bin.is_file(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// Options with fixed, fake credentials and a fresh registry (returned for metric assertions).
pub fn options() -> (McpOptions, SharedRegistry) {
    let registry = new_registry();
    let metrics = McpMetrics::new(&registry);
    let mut opts = McpOptions::from_env(&botburrow_shared::settings::ProcessEnv, metrics);
    opts.credentials = ToolCredentials {
        github_pat: Some(botburrow_shared::settings::Secret::new("ghp_test_pat")),
        brave_api_key: Some(botburrow_shared::settings::Secret::new("brave_test_key")),
        database_url: Some(botburrow_shared::settings::Secret::new(
            "postgres://u:pw@127.0.0.1:1/db",
        )),
        database_urls: Default::default(),
        hub_url: Some("http://127.0.0.1:9".into()),
        hub_api_key: Some(botburrow_shared::settings::Secret::new("hub_test_key")),
    };
    opts.startup_timeout = Duration::from_secs(20);
    opts.call_timeout = Duration::from_secs(20);
    (opts, registry)
}

/// A custom server entry running the test server.
pub fn custom(
    name: &str,
    grant: Option<&str>,
    extra: &[&str],
) -> botburrow_shared::agent::McpServerEntry {
    botburrow_shared::agent::McpServerEntry::Custom(botburrow_shared::agent::CustomMcpServer {
        name: name.into(),
        command: test_server().to_string_lossy().into_owned(),
        args: extra.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        optional: false,
        grant: grant.map(str::to_string),
        tool_scopes: Default::default(),
    })
}

/// Whether a pid is gone (no /proc entry, or a zombie nobody reaped yet: it no longer runs).
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
            .unwrap_or(false),
    }
}

/// Renders the registry and returns the line for a counter sample, if any.
pub fn metric_value(registry: &SharedRegistry, name: &str, labels: &str) -> Option<f64> {
    let text = botburrow_shared::health::render_metrics(registry);
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
