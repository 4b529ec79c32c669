//! The MCP manager against a real stdio MCP server process (testkit's `botburrow-test-mcp-server`).

mod mcp_support;

use botburrow_runner::mcp::manager::CommandSpec;
use botburrow_runner::mcp::{McpActivation, McpManager};
use botburrow_runner::tools::ToolSet;
use botburrow_shared::agent::McpServerEntry;
use botburrow_shared::grants::Grants;
use botburrow_shared::ids::AgentId;
use botburrow_testkit::eventually;
use mcp_support::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn grants(list: &[&str]) -> Grants {
    Grants::parse("agents/t/config.yaml", list).expect("valid grants")
}

fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn lists_and_calls_tools_under_prefixed_names() {
    let (opts, registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["test_srv:*"]);
    let servers = vec![custom("test_srv", None, &[])];
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
    assert_eq!(mgr.servers(), vec!["test_srv"]);

    let mut set = ToolSet::new();
    mgr.add_to(&mut set);
    let names: Vec<String> = set.specs().into_iter().map(|s| s.name).collect();
    for expected in [
        "mcp_test_srv_echo",
        "mcp_test_srv_env",
        "mcp_test_srv_crash",
        "mcp_test_srv_fail",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    let echo = set
        .specs()
        .into_iter()
        .find(|s| s.name == "mcp_test_srv_echo")
        .expect("echo");
    assert_eq!(echo.description, "Echo the given text back");
    assert_eq!(echo.input_schema["required"], json!(["text"]));

    let out = set
        .call("mcp_test_srv_echo", json!({"text": "hello burrow"}))
        .await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(out.text, "hello burrow");

    // isError is honoured and every text part is kept.
    let out = set
        .call("mcp_test_srv_fail", json!({"message": "boom"}))
        .await;
    assert!(out.is_error);
    assert_eq!(out.text, "failure part 1\nboom");

    // A protocol-level error (unknown arguments shape) is an error result, not a panic.
    let out = mgr.call("mcp_test_srv_echo", json!("not an object")).await;
    assert!(
        out.is_error && out.text.contains("must be a JSON object"),
        "{out:?}"
    );

    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_tool_calls_total",
            "server=\"test_srv\",outcome=\"ok\""
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_tool_calls_total",
            "server=\"test_srv\",outcome=\"tool_error\""
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_server_starts_total",
            "server=\"test_srv\",outcome=\"started\""
        ),
        Some(1.0)
    );
    mgr.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_the_server_and_its_process_group() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["k:*"]);
    let servers = vec![custom("k", None, &[])];
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
    let pid = mgr.pid("k").expect("pid");
    let reported: u32 = mgr
        .call("mcp_k_pid", json!({}))
        .await
        .text
        .parse()
        .expect("pid text");
    assert_eq!(pid, reported);
    let grandchild: u32 = mgr
        .call("mcp_k_spawn", json!({}))
        .await
        .text
        .parse()
        .expect("grandchild pid");
    assert!(!pid_gone(pid) && !pid_gone(grandchild));

    mgr.shutdown().await;
    assert!(
        eventually(Duration::from_secs(10), || async { pid_gone(pid) }).await,
        "server {pid} still running"
    );
    assert!(
        eventually(Duration::from_secs(10), || async { pid_gone(grandchild) }).await,
        "grandchild {grandchild} survived the activation"
    );
}

#[tokio::test]
async fn dropping_the_manager_kills_the_servers() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["d:*"]);
    let servers = vec![custom("d", None, &[])];
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
    let pid = mgr.pid("d").expect("pid");
    drop(mgr);
    assert!(
        eventually(Duration::from_secs(10), || async { pid_gone(pid) }).await,
        "server {pid} still running"
    );
}

#[tokio::test]
async fn a_server_crashing_mid_call_gives_error_results() {
    let (opts, registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["c:*"]);
    let servers = vec![custom("c", None, &[])];
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
    let out = mgr.call("mcp_c_crash", json!({})).await;
    assert!(out.is_error, "{out:?}");
    assert!(out.text.contains("MCP server 'c' exited"), "{}", out.text);
    let later = mgr
        .call("mcp_c_echo", json!({"text": "still there?"}))
        .await;
    assert!(later.is_error, "{later:?}");
    assert!(later.text.contains("not running"), "{}", later.text);
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_tool_calls_total",
            "server=\"c\",outcome=\"server_died\""
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_tool_calls_total",
            "server=\"c\",outcome=\"unavailable\""
        ),
        Some(1.0)
    );
    mgr.shutdown().await;
}

#[tokio::test]
async fn servers_the_grants_do_not_allow_are_not_started() {
    let (mut opts, registry) = options();
    // If github were started it would run the test server, so "not started" is observable.
    opts.builtin_commands.insert(
        "github".into(),
        CommandSpec {
            program: test_server(),
            args: vec![],
        },
    );
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["hub:read"]);
    let servers = vec![
        McpServerEntry::Builtin("github".into()),
        custom("private", None, &[]),
        custom("scoped", Some("arxiv:read"), &[]),
    ];
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
    .expect("refusals are not errors");
    assert!(mgr.servers().is_empty(), "{:?}", mgr.servers());
    assert!(mgr.tools().is_empty());
    for s in ["github", "private", "scoped"] {
        assert_eq!(
            metric_value(
                &registry,
                "botburrow_mcp_server_starts_total",
                &format!("server=\"{s}\",outcome=\"refused\"")
            ),
            Some(1.0),
            "{s}"
        );
    }
}

#[tokio::test]
async fn each_server_gets_a_minimal_env_with_only_its_granted_credentials() {
    let (mut opts, _registry) = options();
    opts.builtin_commands.insert(
        "github".into(),
        CommandSpec {
            program: test_server(),
            args: vec![],
        },
    );
    opts.builtin_commands.insert(
        "brave".into(),
        CommandSpec {
            program: test_server(),
            args: vec![],
        },
    );
    // The test server standing in for botburrow-hub-mcp, to see what the built-in `hub` gets.
    opts.builtin_commands.insert(
        "hub".into(),
        CommandSpec {
            program: test_server(),
            args: vec![],
        },
    );
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("agent-7");
    // github:write (implies read): the test server's `env` tool is unknown to the github table,
    // so it counts as a write tool.
    let g = grants(&["github:write", "hub:write", "notes:*"]);
    let mut with_env = custom("notes", None, &[]);
    if let McpServerEntry::Custom(c) = &mut with_env {
        c.env.insert("NOTES_MODE".into(), "plain".into());
    }
    let servers = vec![
        McpServerEntry::Builtin("github".into()),
        McpServerEntry::Builtin("brave".into()),
        McpServerEntry::Builtin("hub".into()),
        custom("hubby", Some("hub:read"), &[]),
        custom("hubwriter", Some("hub:write"), &[]),
        with_env,
    ];
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
    assert_eq!(
        mgr.servers(),
        vec!["github", "hub", "hubby", "hubwriter", "notes"],
        "brave needs brave:search"
    );

    let ws_text = ws.path().to_string_lossy().into_owned();
    let github = env_map(&mgr.call("mcp_github_env", json!({})).await.text);
    let keys: Vec<&str> = github.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec!["GITHUB_PERSONAL_ACCESS_TOKEN", "HOME", "LANG", "PATH"],
        "{github:?}"
    );
    assert_eq!(github["GITHUB_PERSONAL_ACCESS_TOKEN"], "ghp_test_pat");
    assert_eq!(github["HOME"], ws_text);

    // Only the built-in hub server (botburrow-hub-mcp, acting as this one agent) gets the
    // fleet's Hub key.
    let hub = env_map(&mgr.call("mcp_hub_env", json!({})).await.text);
    let keys: Vec<&str> = hub.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "HOME",
            "HUB_AGENT_ID",
            "HUB_API_KEY",
            "HUB_GRANTS",
            "HUB_URL",
            "LANG",
            "PATH"
        ],
        "{hub:?}"
    );
    assert_eq!(hub["HUB_AGENT_ID"], "agent-7");
    assert_eq!(hub["HUB_API_KEY"], "hub_test_key");
    assert_eq!(hub["HUB_GRANTS"], "hub:write");

    // A custom command with a hub grant never sees it (it could act as any agent with it).
    for server in ["hubby", "hubwriter"] {
        let text = mgr.call(&format!("mcp_{server}_env"), json!({})).await.text;
        let env = env_map(&text);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["HOME", "LANG", "PATH"], "{server}: {env:?}");
        assert!(
            !text.contains("hub_test_key"),
            "{server} got the Hub key: {text}"
        );
    }

    let notes = env_map(&mgr.call("mcp_notes_env", json!({})).await.text);
    let keys: Vec<&str> = notes.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec!["HOME", "LANG", "NOTES_MODE", "PATH"],
        "{notes:?}"
    );
    mgr.shutdown().await;
}

async fn start_with(
    opts: &botburrow_runner::mcp::McpOptions,
    list: &[&str],
    servers: &[McpServerEntry],
    ws: &std::path::Path,
) -> Result<McpManager, botburrow_runner::mcp::McpError> {
    let agent = AgentId::new("analyst");
    let g = grants(list);
    McpManager::start(
        opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws,
            grants: &g,
            servers,
        },
    )
    .await
}

#[tokio::test]
async fn postgres_gets_only_the_url_of_the_granted_database() {
    use botburrow_shared::settings::Secret;
    let (mut opts, _registry) = options();
    opts.builtin_commands.insert(
        "postgres".into(),
        CommandSpec {
            program: test_server(),
            args: vec![],
        },
    );
    // The runner's plain DATABASE_URL names the hr database.
    opts.credentials.database_url = Some(Secret::new("postgres://u:pw@127.0.0.1:1/hr"));
    let ws = tempfile::tempdir().expect("workspace");
    let servers = vec![
        McpServerEntry::Builtin("postgres".into()),
        custom("pgtool", Some("postgres:sales:read"), &[]),
    ];

    // A sales grant must not receive the hr URL: the server fails to start, naming the grant.
    let err = start_with(&opts, &["postgres:sales:write"], &servers, ws.path())
        .await
        .err()
        .expect("no URL for sales");
    assert_eq!(
        err.to_string(),
        "MCP server 'postgres' failed to start: no database URL for the grant postgres:sales:write (set DATABASE_URL_SALES, or a DATABASE_URL whose database is 'sales')"
    );

    // With DATABASE_URL_SALES, the built-in and the custom server both get the sales URL only.
    opts.credentials.database_urls.insert(
        "SALES".into(),
        Secret::new("postgres://ro:pw@127.0.0.1:1/sales"),
    );
    let mgr = start_with(&opts, &["postgres:sales:write"], &servers, ws.path())
        .await
        .expect("starts");
    for server in ["postgres", "pgtool"] {
        let text = mgr.call(&format!("mcp_{server}_env"), json!({})).await.text;
        let env = env_map(&text);
        assert_eq!(
            env.get("DATABASE_URL").map(String::as_str),
            Some("postgres://ro:pw@127.0.0.1:1/sales"),
            "{server}: {text}"
        );
        assert!(!text.contains("/hr"), "{server} got the hr URL: {text}");
    }
    mgr.shutdown().await;

    // Connected to sales, the built-in server's tools are checked against the grants on sales:
    // a write grant on another database does not make its write tools callable.
    opts.credentials.database_url = None;
    let servers = vec![McpServerEntry::Builtin("postgres".into())];
    let mgr = start_with(
        &opts,
        &["postgres:sales:read", "postgres:hr:write"],
        &servers,
        ws.path(),
    )
    .await
    .expect("starts");
    // `env` is not in the postgres read table, so it counts as a write tool.
    let out = mgr.call("mcp_postgres_env", json!({})).await;
    assert_eq!(
        out.text,
        "Tool 'mcp_postgres_env' is not permitted: it needs the grant postgres:sales:write"
    );
    mgr.shutdown().await;
}

#[tokio::test]
async fn a_server_that_cannot_start_fails_the_activation_with_its_name() {
    let (mut opts, registry) = options();
    opts.builtin_commands.insert(
        "github".into(),
        CommandSpec {
            program: "/nonexistent/mcp-github".into(),
            args: vec![],
        },
    );
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["github:read", "early:*", "slow:*"]);

    let servers = vec![McpServerEntry::Builtin("github".into())];
    let err = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .err()
    .expect("must fail");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "MCP server 'github' failed to start: cannot run '/nonexistent/mcp-github'"
        ),
        "{text}"
    );

    let servers = vec![custom("early", None, &["--exit-at-start"])];
    let err = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .err()
    .expect("must fail");
    let text = err.to_string();
    assert!(
        text.starts_with("MCP server 'early' failed to start: "),
        "{text}"
    );
    assert!(
        text.contains("refusing to start (--exit-at-start)"),
        "stderr tail should explain: {text}"
    );

    opts.startup_timeout = Duration::from_millis(500);
    let servers = vec![custom("slow", None, &["--hang-at-start"])];
    let err = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .err()
    .expect("must fail");
    assert!(
        err.to_string()
            .starts_with("MCP server 'slow' failed to start: no answer"),
        "{err}"
    );
    assert_eq!(
        metric_value(
            &registry,
            "botburrow_mcp_server_starts_total",
            "server=\"github\",outcome=\"failed\""
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_optional_server_may_fail_without_failing_the_activation() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["good:*", "flaky:*"]);
    let mut flaky = custom("flaky", None, &["--exit-at-start"]);
    if let McpServerEntry::Custom(c) = &mut flaky {
        c.optional = true;
    }
    let servers = vec![custom("good", None, &[]), flaky];
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
    .expect("optional failure tolerated");
    assert_eq!(mgr.servers(), vec!["good"]);
    assert_eq!(
        mgr.call("mcp_good_echo", json!({"text": "ok"})).await.text,
        "ok"
    );
    mgr.shutdown().await;
}

#[tokio::test]
async fn unknown_builtin_names_and_duplicates_are_config_errors() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["x:*"]);
    let servers = vec![McpServerEntry::Builtin("gitlab".into())];
    let err = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .err()
    .expect("unknown");
    assert!(
        err.to_string().starts_with("unknown MCP server 'gitlab'"),
        "{err}"
    );
    let servers = vec![custom("x", None, &[]), custom("x", None, &[])];
    let err = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &agent,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .err()
    .expect("duplicate");
    assert!(err.to_string().contains("listed twice"), "{err}");
}

#[tokio::test]
async fn a_cancelled_start_kills_the_whole_process_group() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let pid_file = ws.path().join("pids");
    let agent = AgentId::new("tester");
    let g = grants(&["stuck:*"]);
    let mut stuck = custom("stuck", None, &["--hang-at-start"]);
    if let McpServerEntry::Custom(c) = &mut stuck {
        c.env.insert(
            "TEST_MCP_PID_FILE".into(),
            pid_file.to_string_lossy().into_owned(),
        );
    }
    let servers = vec![stuck];
    let act = McpActivation {
        agent_id: &agent,
        workspace: ws.path(),
        grants: &g,
        servers: &servers,
    };
    // Race the start (which would wait for the 20 s startup timeout) against the pid file.
    let pids = tokio::select! {
        r = McpManager::start(&opts, act) => panic!("start must still be waiting, got {:?}", r.map(|m| m.servers())),
        ok = eventually(Duration::from_secs(20), || async { pid_file.is_file() }) => {
            assert!(ok, "the server never wrote its pid file");
            std::fs::read_to_string(&pid_file).expect("pids")
        }
    };
    // The start future is dropped here: the activation gave up.
    let pids: Vec<u32> = pids
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(10), || async { pid_gone(pid) }).await,
            "{pid} survived a cancelled start"
        );
    }
}

#[tokio::test]
async fn a_server_killed_between_calls_gives_error_results() {
    let (opts, _registry) = options();
    let ws = tempfile::tempdir().expect("workspace");
    let agent = AgentId::new("tester");
    let g = grants(&["victim:*"]);
    let servers = vec![custom("victim", None, &[])];
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
    assert_eq!(
        mgr.call("mcp_victim_echo", json!({"text": "alive"}))
            .await
            .text,
        "alive"
    );
    let pid = mgr.pid("victim").expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    for _ in 0..2 {
        let out = mgr
            .call("mcp_victim_echo", json!({"text": "anyone?"}))
            .await;
        assert!(out.is_error, "{out:?}");
        assert!(out.text.starts_with("MCP server 'victim' "), "{}", out.text);
    }
    mgr.shutdown().await;
}
