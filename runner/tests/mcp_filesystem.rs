//! The MCP manager against the real published `@modelcontextprotocol/server-filesystem`
//! (installed by `scripts/test.d/mcp.sh` into `target/npm`, or `$BOTBURROW_MCP_FS_SERVER`).

mod mcp_support;

use botburrow_runner::mcp::manager::CommandSpec;
use botburrow_runner::mcp::{McpActivation, McpManager};
use botburrow_shared::agent::McpServerEntry;
use botburrow_shared::grants::Grants;
use botburrow_shared::ids::AgentId;
use mcp_support::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

fn filesystem_server() -> PathBuf {
    if let Ok(p) = std::env::var("BOTBURROW_MCP_FS_SERVER") {
        return PathBuf::from(p);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/npm/node_modules/.bin/mcp-server-filesystem");
    assert!(
        installed.is_file(),
        "the real filesystem MCP server is not installed: run scripts/test.d/mcp.sh (needs node and npm) \
         or set BOTBURROW_MCP_FS_SERVER; looked for {}",
        installed.display()
    );
    installed
}

#[tokio::test]
async fn the_published_filesystem_server_lists_tools_and_reads_a_workspace_file() {
    let (mut opts, registry) = options();
    opts.startup_timeout = Duration::from_secs(60);
    opts.builtin_commands.insert(
        "filesystem".into(),
        CommandSpec {
            program: filesystem_server(),
            args: vec![],
        },
    );
    let ws = tempfile::tempdir().expect("workspace");
    // The server resolves symlinks; compare against the canonical workspace path.
    let ws_path = ws.path().canonicalize().expect("canonical workspace");
    std::fs::write(ws_path.join("notes.txt"), "burrows are cosy\nsecond line\n")
        .expect("write file");
    let agent = AgentId::new("fs-reader");
    let g = Grants::parse("agents/fs-reader/config.yaml", &["fs:read"]).expect("valid");
    let servers = vec![McpServerEntry::Builtin("filesystem".into())];
    let mgr = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: &ws_path,
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .expect("the real server starts");

    let names: Vec<String> = mgr.tools().iter().map(|t| t.spec().name).collect();
    assert!(
        names.contains(&"mcp_filesystem_read_text_file".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"mcp_filesystem_list_directory".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n == "mcp_filesystem_write_file" || n == "mcp_filesystem_edit_file"),
        "fs:read only: {names:?}"
    );

    let file = ws_path.join("notes.txt").to_string_lossy().into_owned();
    let out = mgr
        .call("mcp_filesystem_read_text_file", json!({"path": file}))
        .await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.text.contains("burrows are cosy"), "{}", out.text);

    let listing = mgr
        .call(
            "mcp_filesystem_list_directory",
            json!({"path": ws_path.to_string_lossy()}),
        )
        .await;
    assert!(listing.text.contains("notes.txt"), "{}", listing.text);

    // The server confines itself to the workspace it was given: an error result, not a crash.
    let outside = mgr
        .call(
            "mcp_filesystem_read_text_file",
            json!({"path": "/etc/hostname"}),
        )
        .await;
    assert!(outside.is_error, "{outside:?}");

    // Writing needs fs:write.
    let forged = mgr
        .call(
            "mcp_filesystem_write_file",
            json!({"path": file, "content": "pwned"}),
        )
        .await;
    assert!(
        forged.is_error && forged.text.contains("filesystem:write"),
        "{forged:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ws_path.join("notes.txt")).expect("read"),
        "burrows are cosy\nsecond line\n"
    );

    let pid = mgr.pid("filesystem").expect("pid");
    mgr.shutdown().await;
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(10), || async { pid_gone(pid) }).await
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_server_starts_total",
            "server=\"filesystem\",outcome=\"started\""
        ),
        Some(1.0)
    );
}
