//! Grants end to end through the MCP manager: read-only agents never see write tools, forged
//! calls are refused, and the permission policy removes servers and their credentials.

mod mcp_support;

use botburrow_runner::mcp::manager::CommandSpec;
use botburrow_runner::mcp::{McpActivation, McpManager};
use botburrow_runner::tools::ToolSet;
use botburrow_shared::agent::McpServerEntry;
use botburrow_shared::grants::Grants;
use botburrow_shared::ids::AgentId;
use botburrow_shared::policy::{Policy, PolicyStore};
use mcp_support::*;
use serde_json::json;
use std::path::Path;

/// The test server impersonating the GitHub server: one read tool and one write tool of the
/// real server's names.
fn github_impostor() -> CommandSpec {
    CommandSpec {
        program: test_server(),
        args: vec![
            "--tool".into(),
            "get_file_contents".into(),
            "--tool".into(),
            "create_issue".into(),
        ],
    }
}

#[tokio::test]
async fn a_github_read_agent_gets_no_write_tool_and_a_forged_call_is_refused() {
    let (mut opts, registry) = options();
    opts.builtin_commands
        .insert("github".into(), github_impostor());
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("reader");
    let g = Grants::parse("agents/reader/config.yaml", &["github:read"]).expect("valid");
    let servers = vec![McpServerEntry::Builtin("github".into())];
    let mgr = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .expect("starts");

    let mut set = ToolSet::new();
    mgr.add_to(&mut set);
    let names: Vec<String> = set.specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        vec!["mcp_github_get_file_contents"],
        "only the read tool is offered"
    );

    let read = set
        .call("mcp_github_get_file_contents", json!({"text": "README.md"}))
        .await;
    assert!(!read.is_error, "{read:?}");
    assert_eq!(read.text, "get_file_contents: {\"text\":\"README.md\"}");

    // The model names a write tool it was never offered.
    let forged = mgr
        .call("mcp_github_create_issue", json!({"text": "spam"}))
        .await;
    assert!(forged.is_error);
    assert_eq!(
        forged.text,
        "Tool 'mcp_github_create_issue' is not permitted: it needs the grant github:write"
    );
    assert!(
        set.call("mcp_github_create_issue", json!({"text": "spam"}))
            .await
            .is_error
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_tool_calls_total",
            "server=\"github\",outcome=\"refused\""
        ),
        Some(1.0)
    );
    // Unknown tools of a built-in server count as write tools.
    assert!(
        mgr.call("mcp_github_echo", json!({"text": "x"}))
            .await
            .is_error
    );
    mgr.shutdown().await;

    // The same server with github:* offers both.
    let all = Grants::parse("f", &["github:*"]).expect("valid");
    let mgr = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &all,
            servers: &servers,
        },
    )
    .await
    .expect("starts");
    let out = mgr
        .call("mcp_github_create_issue", json!({"text": "bug"}))
        .await;
    assert!(!out.is_error, "{out:?}");
    mgr.shutdown().await;
}

#[tokio::test]
async fn custom_servers_honour_per_tool_scopes() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("notes-agent");
    let mut entry = custom(
        "notes",
        Some("notes:read"),
        &["--tool", "read_note", "--tool", "write_note"],
    );
    if let McpServerEntry::Custom(c) = &mut entry {
        c.tool_scopes.insert("read_note".into(), "read".into());
        c.tool_scopes.insert("write_note".into(), "write".into());
    }
    let servers = vec![entry];
    let g = Grants::parse("f", &["notes:read"]).expect("valid");
    let mgr = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .expect("starts");
    let names: Vec<String> = mgr.tools().iter().map(|t| t.spec().name).collect();
    assert!(
        names.contains(&"mcp_notes_read_note".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"mcp_notes_echo".to_string()),
        "tools without a scope follow the server's grant: {names:?}"
    );
    assert!(
        !names.contains(&"mcp_notes_write_note".to_string()),
        "{names:?}"
    );
    let out = mgr.call("mcp_notes_write_note", json!({"text": "x"})).await;
    assert_eq!(
        out.text,
        "Tool 'mcp_notes_write_note' is not permitted: it needs the grant notes:write"
    );
    mgr.shutdown().await;
}

async fn start_for(store: &PolicyStore, ws: &Path) -> (McpManager, Grants) {
    let (mut opts, _registry) = options();
    opts.builtin_commands
        .insert("github".into(), github_impostor());
    let agent = AgentId::new("researcher");
    let declared = Grants::parse(
        "agents/researcher/config.yaml",
        &["github:write", "hub:read", "probe:*"],
    )
    .expect("valid");
    let effective = store.effective(agent.as_str(), &declared);
    // `probe` reports its environment; its grant is probe:*, so no credential of its own.
    let probe = custom("probe", None, &[]);
    let hubby = custom("hubby", Some("hub:read"), &[]);
    let servers = vec![McpServerEntry::Builtin("github".into()), probe, hubby];
    let mgr = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws,
            grants: &effective,
            servers: &servers,
        },
    )
    .await
    .expect("starts");
    (mgr, effective)
}

#[tokio::test]
async fn a_policy_deny_removes_the_grant_its_server_and_its_credential() {
    let ws = tempfile::tempdir().expect("workspace");
    // Without a policy: github starts and gets the PAT.
    let open = PolicyStore::fixed(Policy::default());
    let (mgr, effective) = start_for(&open, ws.path()).await;
    assert!(effective.allows("github", "write"));
    assert_eq!(mgr.servers(), vec!["github", "probe", "hubby"]);
    assert!(
        mgr.tools()
            .iter()
            .any(|t| t.spec().name == "mcp_github_create_issue")
    );
    mgr.shutdown().await;

    // The cluster denies github for this agent (and hub writes for everyone).
    let policy = Policy::parse(
        Path::new("permissions.yaml"),
        "default:\n  denied: [\"hub:write\"]\nagents:\n  researcher:\n    denied: [\"github:*\", \"hub:write\"]\n",
    )
    .expect("valid");
    let store = PolicyStore::fixed(policy);
    let (mgr, effective) = start_for(&store, ws.path()).await;
    assert!(
        !effective.has_service("github"),
        "{:?}",
        effective.to_strings()
    );
    assert_eq!(
        mgr.servers(),
        vec!["probe", "hubby"],
        "github must not start"
    );
    assert!(
        !mgr.tools()
            .iter()
            .any(|t| t.spec().name.starts_with("mcp_github_"))
    );
    for server in ["probe", "hubby"] {
        let env = mgr.call(&format!("mcp_{server}_env"), json!({})).await.text;
        assert!(env.contains("HOME="), "{env}");
        assert!(
            !env.contains("GITHUB_PERSONAL_ACCESS_TOKEN"),
            "{server} got the PAT: {env}"
        );
        assert!(!env.contains("ghp_test_pat"), "{server} got the PAT: {env}");
    }
    let hub_env = mgr.call("mcp_hubby_env", json!({})).await.text;
    assert!(
        !hub_env.contains("HUB_API_KEY") && !hub_env.contains("hub_test_key"),
        "a custom server never gets the fleet's Hub key: {hub_env}"
    );
    mgr.shutdown().await;
}
