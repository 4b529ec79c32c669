//! CLI executors end to end against fake CLIs (bash scripts in tests/fixtures/fake-cli that check
//! the documented headless flags and print each CLI's documented output format): parsed text,
//! tokens and cost; the exact missing-binary message; deadline and cancellation killing the whole
//! process group; the CLI's environment holding nothing it was not granted.
//!
//! The fakes are found through `ExecutorOptions::search_path` (the child's PATH), never by
//! changing this process's environment.

use botburrow_runner::executors::{
    CLI_KINDS, ExecOutcome, ExecRequest, Executor, ExecutorError, ExecutorOptions, HubMcpSpec,
    executor_with,
};
use botburrow_shared::agent::AgentConfig;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::Secret;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PROVIDER_KEY: &str = "sk-ant-granted-provider-key-0001";
const GITHUB_PAT: &str = "ghp_granted_but_not_for_the_cli_0002";
const HUB_KEY: &str = "botburrow_agent_hub_key_0003";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-cli")
}

fn search_path() -> OsString {
    format!("{}:/usr/local/bin:/usr/bin:/bin", fixtures().display()).into()
}

fn executor(kind: &str) -> Box<dyn Executor> {
    let options = ExecutorOptions {
        search_path: Some(search_path()),
        kill_grace: Duration::from_millis(300),
        ..ExecutorOptions::default()
    };
    executor_with(kind, options).expect("known kind")
}

fn request(kind: &str, workspace: &Path, prompt: &str, within: Duration) -> ExecRequest {
    let yaml = format!(
        "type: {kind}\nbrain: {{provider: anthropic, model: claude-fake-1}}\ncapabilities: {{grants: [hub:write]}}"
    );
    let agent = AgentConfig::parse("agents/tester/config.yaml", &yaml, "tester", String::new())
        .expect("agent");
    let mut credentials = BTreeMap::new();
    credentials.insert("ANTHROPIC_API_KEY".to_string(), Secret::new(PROVIDER_KEY));
    credentials.insert("GITHUB_PAT".to_string(), Secret::new(GITHUB_PAT));
    ExecRequest {
        agent,
        system_prompt: "You are tester.".into(),
        prompt: prompt.into(),
        workspace: workspace.to_path_buf(),
        deadline: Instant::now() + within,
        cancel: CancellationToken::new(),
        hub: HubMcpSpec {
            binary: fixtures().join("botburrow-hub-mcp"),
            hub_url: "http://127.0.0.1:9".into(),
            hub_api_key: Some(Secret::new(HUB_KEY)),
            agent_id: AgentId::new("tester"),
        },
        credentials,
    }
}

async fn run_ok(kind: &str) -> (ExecOutcome, tempfile::TempDir) {
    let ws = tempfile::tempdir().expect("ws");
    let outcome = executor(kind)
        .run(request(
            kind,
            ws.path(),
            "say hello",
            Duration::from_secs(60),
        ))
        .await
        .unwrap_or_else(|e| panic!("{kind} failed: {e}"));
    (outcome, ws)
}

/// The CLI saw PATH, HOME (= workspace), LANG, the provider key, its own switches, and nothing
/// else: in particular no other granted credential and not the Hub key.
fn assert_minimal_env(ws: &Path, cli_switches: &[&str]) {
    let text = std::fs::read_to_string(ws.join("cli-env.txt")).expect("fake CLI recorded its env");
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    // PWD, SHLVL and _ are set by bash itself.
    let mut allowed: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "LANG",
        "ANTHROPIC_API_KEY",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ]
    .into();
    allowed.extend(cli_switches);
    for k in vars.keys() {
        assert!(
            allowed.contains(k.as_str()),
            "unexpected variable {k} in the CLI's environment"
        );
    }
    assert_eq!(
        vars.get("HOME").map(String::as_str),
        Some(ws.to_string_lossy().as_ref())
    );
    assert_eq!(
        vars.get("ANTHROPIC_API_KEY").map(String::as_str),
        Some(PROVIDER_KEY)
    );
    assert_eq!(
        vars.get("PWD").map(String::as_str),
        Some(ws.to_string_lossy().as_ref()),
        "cwd is the workspace"
    );
    assert!(
        !text.contains(GITHUB_PAT),
        "a credential the CLI does not need leaked into its env"
    );
    assert!(
        !text.contains(HUB_KEY),
        "the Hub key belongs to the Hub MCP server only"
    );
    let args =
        std::fs::read_to_string(ws.join("cli-args.txt")).expect("fake CLI recorded its args");
    for s in [PROVIDER_KEY, GITHUB_PAT, HUB_KEY] {
        assert!(!args.contains(s), "secret on argv");
    }
}

#[tokio::test]
async fn claude_code_end_to_end() {
    let (out, ws) = run_ok("claude-code").await;
    assert_eq!(out.final_text, "Answered: say hello");
    assert_eq!(out.input_tokens, 1200 + 100 + 300);
    assert_eq!(out.output_tokens, 256);
    assert_eq!(out.cost_usd, Some(0.0425));
    assert_eq!(out.model.as_deref(), Some("claude-fake-1"));
    assert!(
        out.posted_via_mcp,
        "the stream shows a successful mcp__hub__hub_post"
    );
    assert_minimal_env(
        ws.path(),
        &[
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_AUTOUPDATER",
        ],
    );
    // The MCP config (it holds the Hub key) lived in a scratch dir that is gone after the run.
    let args = std::fs::read_to_string(ws.path().join("cli-args.txt")).expect("args");
    let mcp = args
        .lines()
        .skip_while(|l| *l != "--mcp-config")
        .nth(1)
        .expect("--mcp-config value");
    assert!(
        !Path::new(mcp).starts_with(ws.path()),
        "config must not sit in the agent's workspace"
    );
    assert!(!Path::new(mcp).exists(), "scratch config {mcp} left behind");
}

#[tokio::test]
async fn goose_end_to_end_and_its_hub_extension_gets_the_hub_env() {
    let (out, ws) = run_ok("goose").await;
    assert_eq!(out.final_text, "Goose answered: say hello");
    assert_eq!((out.input_tokens, out.output_tokens), (700, 200));
    assert_eq!(out.cost_usd, Some(0.0031));
    assert!(out.posted_via_mcp);
    assert_minimal_env(ws.path(), &["GOOSE_MODE", "GOOSE_DISABLE_KEYRING"]);
    // The fake goose started the extension; the (fake) Hub MCP server recorded its environment.
    let hub_env =
        std::fs::read_to_string(ws.path().join("hub-env.txt")).expect("hub server started");
    assert!(
        hub_env
            .lines()
            .any(|l| l == format!("HUB_API_KEY={HUB_KEY}")),
        "{hub_env}"
    );
    assert!(
        hub_env.lines().any(|l| l == "HUB_AGENT_ID=tester"),
        "{hub_env}"
    );
    assert!(
        hub_env.lines().any(|l| l == "HUB_GRANTS=hub:write"),
        "{hub_env}"
    );
    assert!(
        hub_env.lines().any(|l| l == "HUB_URL=http://127.0.0.1:9"),
        "{hub_env}"
    );
}

#[tokio::test]
async fn aider_end_to_end_returns_text_for_the_runner_to_post() {
    let (out, ws) = run_ok("aider").await;
    assert_eq!(
        out.final_text,
        "Aider answered: say hello\nSecond paragraph."
    );
    assert_eq!(out.input_tokens, 2500 + 1100 + 1000);
    assert_eq!(out.output_tokens, 345 + 55);
    assert!((out.cost_usd.expect("cost") - 0.03).abs() < 1e-9);
    assert!(
        !out.posted_via_mcp,
        "aider cannot post; the runner posts its text"
    );
    assert_eq!(
        out.model.as_deref(),
        Some("claude-fake-1"),
        "falls back to the configured model"
    );
    assert_minimal_env(ws.path(), &[]);
}

#[tokio::test]
async fn opencode_end_to_end() {
    let (out, ws) = run_ok("opencode").await;
    assert_eq!(out.final_text, "OpenCode answered: say hello");
    assert_eq!(out.input_tokens, 400 + 100 + 500);
    assert_eq!(out.output_tokens, 40 + 10 + 60);
    assert!((out.cost_usd.expect("cost") - 0.01).abs() < 1e-9);
    assert!(out.posted_via_mcp);
    assert_minimal_env(ws.path(), &["OPENCODE_CONFIG"]);
}

#[tokio::test]
async fn a_missing_binary_gives_the_exact_message_at_startup_and_per_activation() {
    let empty = tempfile::tempdir().expect("empty dir");
    let ws = tempfile::tempdir().expect("ws");
    for (kind, program) in [
        ("claude-code", "claude"),
        ("goose", "goose"),
        ("aider", "aider"),
        ("opencode", "opencode"),
    ] {
        let options = ExecutorOptions {
            search_path: Some(empty.path().into()),
            ..ExecutorOptions::default()
        };
        let exec = executor_with(kind, options).expect("kind");
        let expected = format!("Executor '{kind}' not available: '{program}' not found on PATH");
        let err = exec.check_available().expect_err("not installed");
        assert_eq!(err.to_string(), expected);
        let err = exec
            .run(request(kind, ws.path(), "hi", Duration::from_secs(30)))
            .await
            .expect_err("not installed");
        assert!(matches!(err, ExecutorError::NotAvailable { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected);
    }
    assert_eq!(CLI_KINDS.len(), 4);
}

#[tokio::test]
async fn the_program_can_be_overridden_by_path() {
    let empty = tempfile::tempdir().expect("empty dir");
    let options = ExecutorOptions {
        program: Some(fixtures().join("claude").into_os_string()),
        search_path: Some(empty.path().into()),
        ..ExecutorOptions::default()
    };
    assert!(
        executor_with("claude-code", options)
            .expect("kind")
            .check_available()
            .is_ok()
    );
    let missing = ExecutorOptions {
        program: Some("/nonexistent/claude".into()),
        ..ExecutorOptions::default()
    };
    let err = executor_with("claude-code", missing)
        .expect("kind")
        .check_available()
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "Executor 'claude-code' not available: '/nonexistent/claude' not found on PATH"
    );
}

fn grandchild_pid(ws: &Path) -> Option<i32> {
    std::fs::read_to_string(ws.join("grandchild.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// True when the process is gone or only a zombie waiting for init to reap it.
fn not_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn assert_group_killed_at_deadline(kind: &str, prompt: &str) {
    let ws = tempfile::tempdir().expect("ws");
    let started = Instant::now();
    let err = executor(kind)
        .run(request(
            kind,
            ws.path(),
            prompt,
            Duration::from_millis(1500),
        ))
        .await
        .expect_err("a hung CLI must not succeed");
    assert!(matches!(err, ExecutorError::Timeout), "{kind}: {err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "{kind}: returned before the deadline ({took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "{kind}: kill took too long ({took:?})"
    );
    let pid = grandchild_pid(ws.path()).expect("the fake started its grandchild before hanging");
    let gone =
        botburrow_testkit::eventually(Duration::from_secs(10), || async move { not_running(pid) })
            .await;
    assert!(gone, "{kind}: grandchild {pid} outlived the activation");
}

#[tokio::test]
async fn a_hung_cli_that_ignores_sigterm_is_killed_with_its_group() {
    assert_group_killed_at_deadline("claude-code", "HANG STUBBORN").await;
}

#[tokio::test]
async fn a_hung_cli_is_terminated_with_its_group() {
    assert_group_killed_at_deadline("aider", "HANG").await;
}

#[tokio::test]
async fn cancellation_stops_a_running_cli_and_its_group() {
    let ws = tempfile::tempdir().expect("ws");
    let req = request("opencode", ws.path(), "HANG", Duration::from_secs(120));
    let cancel = req.cancel.clone();
    let exec = executor("opencode");
    let run = tokio::spawn(async move { exec.run(req).await });
    let wsp = ws.path().to_path_buf();
    let started = botburrow_testkit::eventually(Duration::from_secs(20), || {
        let wsp = wsp.clone();
        async move { grandchild_pid(&wsp).is_some() }
    })
    .await;
    assert!(started, "fake opencode never reached its hang");
    cancel.cancel();
    let err = run.await.expect("join").expect_err("cancelled");
    assert!(matches!(err, ExecutorError::Cancelled), "{err:?}");
    let pid = grandchild_pid(ws.path()).expect("pid");
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(10), || async move { not_running(pid) })
            .await
    );
}

#[tokio::test]
async fn a_failing_cli_reports_exit_code_and_redacted_stderr() {
    let ws = tempfile::tempdir().expect("ws");
    let err = executor("claude-code")
        .run(request(
            "claude-code",
            ws.path(),
            "FAIL",
            Duration::from_secs(60),
        ))
        .await
        .expect_err("fails");
    match &err {
        ExecutorError::Failed {
            exit_code,
            stderr_tail,
        } => {
            assert_eq!(*exit_code, Some(3));
            assert_eq!(stderr_tail, "fatal: provider rejected key <redacted>");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(!err.to_string().contains(PROVIDER_KEY));
}

#[tokio::test]
async fn a_fake_cli_rejects_a_missing_flag_so_the_fakes_really_check() {
    // Point the claude-code executor at the aider fake: the argv lacks --message-file, and the
    // fake refuses with exit 64 naming it. This guards the guards.
    let ws = tempfile::tempdir().expect("ws");
    let options = ExecutorOptions {
        program: Some(fixtures().join("aider").into_os_string()),
        search_path: Some(search_path()),
        ..ExecutorOptions::default()
    };
    let err = executor_with("claude-code", options)
        .expect("kind")
        .run(request(
            "claude-code",
            ws.path(),
            "hi",
            Duration::from_secs(60),
        ))
        .await
        .expect_err("wrong flags");
    match err {
        ExecutorError::Failed {
            exit_code: Some(64),
            stderr_tail,
        } => {
            assert!(
                stderr_tail.contains("missing --message-file"),
                "{stderr_tail}"
            )
        }
        other => panic!("expected Failed(64), got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_workspace_or_interpreter_is_an_io_error_not_a_missing_binary() {
    let ws = tempfile::tempdir().expect("ws");
    let gone = ws.path().join("not-created");
    let err = executor("aider")
        .run(request("aider", &gone, "hi", Duration::from_secs(30)))
        .await
        .expect_err("no workspace");
    assert!(
        matches!(&err, ExecutorError::Io(m) if m.contains("is not a directory")),
        "{err:?}"
    );

    let bin = tempfile::tempdir().expect("bin");
    let script = bin.path().join("aider");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let options = ExecutorOptions {
        search_path: Some(bin.path().into()),
        ..ExecutorOptions::default()
    };
    let err = executor_with("aider", options)
        .expect("kind")
        .run(request("aider", ws.path(), "hi", Duration::from_secs(30)))
        .await
        .expect_err("bad interpreter");
    assert!(
        matches!(&err, ExecutorError::Io(m) if m.contains("interpreter")),
        "{err:?}"
    );
}
