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
use std::collections::BTreeMap;
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

/// Options that run the real filesystem server for the built-in `filesystem`.
fn fs_options() -> (
    botburrow_runner::mcp::McpOptions,
    botburrow_shared::health::SharedRegistry,
) {
    let (mut opts, registry) = options();
    opts.startup_timeout = Duration::from_secs(60);
    opts.builtin_commands.insert(
        "filesystem".into(),
        CommandSpec {
            program: filesystem_server(),
            args: vec![],
        },
    );
    (opts, registry)
}

async fn start_fs(
    opts: &botburrow_runner::mcp::McpOptions,
    agent: &str,
    grants: &[&str],
    ws: &std::path::Path,
) -> McpManager {
    let agent = AgentId::new(agent);
    let g = Grants::parse("agents/t/config.yaml", grants).expect("valid grants");
    let servers = vec![McpServerEntry::Builtin("filesystem".into())];
    McpManager::start(
        opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws,
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .expect("start (a refused server is not an error)")
}

/// Running processes one of whose arguments is exactly `arg` (the filesystem server gets the
/// workspace as its last argument, and every test has its own workspace).
fn processes_with_arg(arg: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) && !pid_gone(pid) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn an_agent_without_a_filesystem_grant_gets_no_filesystem_server() {
    let (opts, registry) = fs_options();
    let ws = tempfile::tempdir().expect("workspace");
    let ws_path = ws.path().canonicalize().expect("canonical workspace");
    let ws_arg = ws_path.to_string_lossy().into_owned();

    for grants in [&[][..], &["github:read", "hub:write", "notes:*"][..]] {
        let mgr = start_fs(&opts, "no-fs", grants, &ws_path).await;
        assert!(mgr.servers().is_empty(), "{grants:?}: {:?}", mgr.servers());
        assert_eq!(mgr.pid("filesystem"), None, "{grants:?}");
        let names: Vec<String> = mgr.tools().iter().map(|t| t.spec().name).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("mcp_filesystem_")),
            "{grants:?}: {names:?}"
        );
        let out = mgr
            .call(
                "mcp_filesystem_list_directory",
                json!({"path": ws_arg.clone()}),
            )
            .await;
        assert!(
            out.is_error && out.text.contains("Unknown tool"),
            "{grants:?}: {out:?}"
        );
        // No process was spawned for it: the manager would still hold it at this point.
        assert_eq!(processes_with_arg(&ws_arg), Vec::<u32>::new(), "{grants:?}");
        mgr.shutdown().await;
    }
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_server_starts_total",
            "server=\"filesystem\",outcome=\"refused\""
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_server_starts_total",
            "server=\"filesystem\",outcome=\"started\""
        ),
        None
    );

    // The same scan does see the server once the agent holds fs:read.
    let mgr = start_fs(&opts, "fs-reader", &["fs:read"], &ws_path).await;
    let pid = mgr.pid("filesystem").expect("started with fs:read");
    assert!(processes_with_arg(&ws_arg).contains(&pid), "{pid}");
    mgr.shutdown().await;
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(10), || async {
            processes_with_arg(&ws_arg).is_empty()
        })
        .await
    );
}

#[tokio::test]
async fn the_published_filesystem_server_killed_between_calls_gives_error_results() {
    let (opts, registry) = fs_options();
    let ws = tempfile::tempdir().expect("workspace");
    let ws_path = ws.path().canonicalize().expect("canonical workspace");
    std::fs::write(ws_path.join("notes.txt"), "still here\n").expect("write file");
    let file = ws_path.join("notes.txt").to_string_lossy().into_owned();
    let mgr = start_fs(&opts, "fs-reader", &["fs:read"], &ws_path).await;

    let out = mgr
        .call("mcp_filesystem_read_text_file", json!({"path": file}))
        .await;
    assert!(!out.is_error && out.text.contains("still here"), "{out:?}");

    // Kill the server's whole process group (it leads its own group).
    let pid = mgr.pid("filesystem").expect("pid");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killpg");
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(10), || async { pid_gone(pid) }).await,
        "server {pid} survived SIGKILL"
    );

    // Each later call is an error result naming the server, well within the call timeout.
    for _ in 0..2 {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            mgr.call("mcp_filesystem_read_text_file", json!({"path": file})),
        )
        .await
        .expect("a call to a dead server returns, it does not hang");
        assert!(out.is_error, "{out:?}");
        assert!(
            out.text.starts_with("MCP server 'filesystem' "),
            "{}",
            out.text
        );
    }
    let count = |outcome: &str| {
        metric_value(
            &registry,
            "botburrow_mcp_tool_calls_total",
            &format!("server=\"filesystem\",outcome=\"{outcome}\""),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("ok"), 1.0);
    // The first call after the kill may find the transport already closed or see it close.
    assert_eq!(count("server_died") + count("unavailable"), 2.0);
    assert_eq!(count("timeout"), 0.0);

    tokio::time::timeout(Duration::from_secs(10), mgr.shutdown())
        .await
        .expect("shutdown after the server died is bounded");
}

#[tokio::test]
async fn the_filesystem_server_gets_only_a_minimal_env_whatever_else_the_agent_holds() {
    // options() carries a GitHub PAT, Brave key, database URL and Hub key; the agent holds
    // grants that would unlock each of them for their own servers.
    let (opts, _registry) = fs_options();
    let ws = tempfile::tempdir().expect("workspace");
    let ws_path = ws.path().canonicalize().expect("canonical workspace");
    let ws_arg = ws_path.to_string_lossy().into_owned();
    let list = [
        "fs:read",
        "github:write",
        "brave:search",
        "hub:write",
        "postgres:*",
    ];
    let agent = AgentId::new("fs-everything");
    let g = Grants::parse("agents/t/config.yaml", &list).expect("valid grants");
    let entry = McpServerEntry::Builtin("filesystem".into());
    let act = McpActivation {
        agent_id: &agent,
        workspace: &ws_path,
        grants: &g,
        servers: std::slice::from_ref(&entry),
    };

    // What the manager builds for the server (the same spec it starts it from).
    let spec = botburrow_runner::mcp::manager::launch_spec(&opts, &act, &entry)
        .expect("no config error")
        .expect("fs:read lets it start");
    assert_eq!(spec.program, filesystem_server());
    let args: Vec<&str> = spec.args.iter().map(|a| a.expose()).collect();
    assert_eq!(args, vec![ws_arg.as_str()]);
    let built: BTreeMap<String, String> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect();
    let keys: Vec<&str> = built.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["HOME", "LANG", "PATH"], "{built:?}");
    assert_eq!(built["HOME"], ws_arg);

    // And the real process runs with exactly that environment (read back from /proc).
    let mgr = start_fs(&opts, "fs-everything", &list, &ws_path).await;
    let pid = mgr.pid("filesystem").expect("pid");
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read the server's environ");
    let actual: BTreeMap<String, String> = raw
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(actual, built);
    let text = String::from_utf8_lossy(&raw);
    for secret in ["ghp_test_pat", "brave_test_key", "hub_test_key", "u:pw@"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the filesystem server"
        );
    }
    mgr.shutdown().await;
}
