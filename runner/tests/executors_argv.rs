//! The command lines, environments and config files the CLI executors build, checked against each
//! CLI's documented headless flags (reference/peers.md §4). Nothing is run here; see
//! `executors_e2e.rs` for runs against fake CLIs.

use botburrow_runner::executors::aider::Aider;
use botburrow_runner::executors::claude_code::ClaudeCode;
use botburrow_runner::executors::goose::Goose;
use botburrow_runner::executors::opencode::OpenCode;
use botburrow_runner::executors::{
    CliExecutor, CliFlavor, ExecRequest, ExecutorOptions, HubMcpSpec, Invocation,
};
use botburrow_shared::agent::AgentConfig;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::Secret;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PROVIDER_KEY: &str = "sk-ant-granted-provider-key-0001";
const GITHUB_PAT: &str = "ghp_granted_but_not_for_the_cli_0002";
const HUB_KEY: &str = "botburrow_agent_hub_key_0003";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-cli")
}

fn options() -> ExecutorOptions {
    ExecutorOptions {
        search_path: Some(fixtures().into_os_string()),
        ..ExecutorOptions::default()
    }
}

fn agent(yaml: &str) -> AgentConfig {
    AgentConfig::parse("agents/tester/config.yaml", yaml, "tester", String::new())
        .expect("valid agent")
}

fn request(agent: AgentConfig, workspace: &Path) -> ExecRequest {
    let mut credentials = BTreeMap::new();
    credentials.insert("ANTHROPIC_API_KEY".to_string(), Secret::new(PROVIDER_KEY));
    credentials.insert("GITHUB_PAT".to_string(), Secret::new(GITHUB_PAT));
    ExecRequest {
        agent,
        system_prompt: "You are tester. Be brief.".into(),
        prompt: "Reply to post 42.".into(),
        workspace: workspace.to_path_buf(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        cancel: CancellationToken::new(),
        hub: HubMcpSpec {
            binary: PathBuf::from("/opt/botburrow/bin/botburrow-hub-mcp"),
            hub_url: "http://127.0.0.1:8000".into(),
            hub_api_key: Some(Secret::new(HUB_KEY)),
            agent_id: AgentId::new("tester"),
        },
        credentials,
    }
}

fn prepare<F: CliFlavor>(req: &ExecRequest, scratch: &Path) -> Invocation {
    CliExecutor::<F>::with_options(options())
        .prepare(req, scratch)
        .expect("prepare")
}

fn env_keys(inv: &Invocation) -> BTreeSet<&str> {
    inv.env.keys().map(String::as_str).collect()
}

fn assert_no_secret_on_argv(inv: &Invocation) {
    for a in &inv.args {
        for s in [PROVIDER_KEY, GITHUB_PAT, HUB_KEY] {
            assert!(!a.contains(s), "secret on argv: {a}");
        }
    }
    let debug = format!("{inv:?}");
    assert!(
        !debug.contains(PROVIDER_KEY) && !debug.contains(HUB_KEY),
        "Debug leaks a secret: {debug}"
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("valid JSON")
}

#[test]
fn claude_code_uses_print_mode_with_the_hub_mcp_config() {
    let ws = tempfile::tempdir().expect("ws");
    let scratch = tempfile::tempdir().expect("scratch");
    let req = request(
        agent(
            "type: claude-code\nbrain: {provider: anthropic, model: claude-sonnet-4-5}\ncapabilities: {grants: [hub:write, github:read]}",
        ),
        ws.path(),
    );
    let inv = prepare::<ClaudeCode>(&req, scratch.path());

    assert_eq!(inv.program, fixtures().join("claude"));
    assert_eq!(inv.cwd, ws.path());
    assert_eq!(inv.args[0], "-p");
    assert_eq!(inv.value_of("--output-format"), Some("stream-json"));
    assert!(
        inv.has("--verbose"),
        "stream-json in print mode needs --verbose"
    );
    assert!(inv.has("--strict-mcp-config"));
    assert_eq!(inv.value_of("--model"), Some("claude-sonnet-4-5"));
    assert_eq!(inv.value_of("--max-turns"), Some("10"));
    assert_eq!(inv.value_of("--permission-mode"), Some("dontAsk"));
    let allowed: Vec<&str> = inv
        .value_of("--allowedTools")
        .expect("allowed tools")
        .split(' ')
        .collect();
    assert!(
        allowed.contains(&"mcp__hub") && allowed.contains(&"Read"),
        "{allowed:?}"
    );
    assert!(
        !allowed.contains(&"Bash"),
        "shell is not enabled: {allowed:?}"
    );
    assert_eq!(inv.value_of("--disallowedTools"), Some("Bash"));
    assert_eq!(&inv.args[inv.args.len() - 2..], ["--", "Reply to post 42."]);

    let mcp = PathBuf::from(inv.value_of("--mcp-config").expect("mcp config"));
    assert!(
        mcp.starts_with(scratch.path()),
        "config lives in the private scratch dir, not the workspace"
    );
    assert_eq!(mode(&mcp), 0o600);
    let cfg = read_json(&mcp);
    let hub = &cfg["mcpServers"]["hub"];
    assert_eq!(hub["command"], "/opt/botburrow/bin/botburrow-hub-mcp");
    assert_eq!(hub["env"]["HUB_URL"], "http://127.0.0.1:8000");
    assert_eq!(hub["env"]["HUB_API_KEY"], HUB_KEY);
    assert_eq!(hub["env"]["HUB_AGENT_ID"], "tester");
    assert_eq!(
        hub["env"]["HUB_GRANTS"], "hub:write",
        "the Hub server gets the agent's hub grants only"
    );
    let sp = inv
        .value_of("--append-system-prompt-file")
        .expect("system prompt file");
    assert_eq!(
        std::fs::read_to_string(sp).expect("read"),
        "You are tester. Be brief."
    );

    assert_eq!(
        env_keys(&inv),
        BTreeSet::from([
            "ANTHROPIC_API_KEY",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_AUTOUPDATER",
            "HOME",
            "LANG",
            "PATH"
        ])
    );
    assert_eq!(inv.env["ANTHROPIC_API_KEY"].expose(), PROVIDER_KEY);
    assert_eq!(inv.env["HOME"].expose(), ws.path().to_string_lossy());
    assert_no_secret_on_argv(&inv);
}

#[test]
fn claude_code_honours_shell_turn_cap_key_name_and_base_url() {
    let ws = tempfile::tempdir().expect("ws");
    let scratch = tempfile::tempdir().expect("scratch");
    let yaml = "type: claude-code\nbrain: {provider: anthropic, model: m, api_key_env: TEAM_ANTHROPIC_KEY, api_base: 'http://127.0.0.1:9999'}\ncapabilities: {shell: {enabled: true}}\nbehavior: {max_iterations: 3}";
    let mut req = request(agent(yaml), ws.path());
    req.credentials.clear();
    req.credentials
        .insert("TEAM_ANTHROPIC_KEY".into(), Secret::new(PROVIDER_KEY));
    req.system_prompt = String::new();
    req.prompt = "-starts with a dash".into();
    let inv = prepare::<ClaudeCode>(&req, scratch.path());
    assert_eq!(inv.value_of("--max-turns"), Some("3"));
    assert!(
        inv.value_of("--allowedTools")
            .expect("tools")
            .split(' ')
            .any(|t| t == "Bash")
    );
    assert!(!inv.has("--disallowedTools"));
    assert!(
        !inv.has("--append-system-prompt-file"),
        "no empty system prompt file"
    );
    assert_eq!(
        inv.env["ANTHROPIC_API_KEY"].expose(),
        PROVIDER_KEY,
        "key is passed under the name the CLI reads"
    );
    assert!(!inv.env.contains_key("TEAM_ANTHROPIC_KEY"));
    assert_eq!(
        inv.env["ANTHROPIC_BASE_URL"].expose(),
        "http://127.0.0.1:9999"
    );
    assert_eq!(
        &inv.args[inv.args.len() - 2..],
        ["--", "-starts with a dash"]
    );
}

#[test]
fn goose_runs_headless_with_a_hub_launcher_extension() {
    let ws = tempfile::tempdir().expect("ws");
    let scratch = tempfile::tempdir().expect("scratch");
    let req = request(
        agent("type: goose\nbrain: {provider: anthropic, model: claude-sonnet-4-5}"),
        ws.path(),
    );
    let inv = prepare::<Goose>(&req, scratch.path());

    assert_eq!(inv.args[0], "run");
    for flag in ["--no-session", "--no-profile", "-q"] {
        assert!(inv.has(flag), "missing {flag}");
    }
    assert_eq!(inv.value_of("--output-format"), Some("json"));
    assert_eq!(inv.value_of("--provider"), Some("anthropic"));
    assert_eq!(inv.value_of("--model"), Some("claude-sonnet-4-5"));
    assert_eq!(inv.value_of("--max-turns"), Some("10"));
    assert_eq!(inv.value_of("--system"), Some("You are tester. Be brief."));
    assert!(
        !inv.has("--with-builtin"),
        "no developer builtin without shell"
    );
    let input = inv.value_of("-i").expect("instructions file");
    assert_eq!(
        std::fs::read_to_string(input).expect("read"),
        "Reply to post 42."
    );

    let ext = PathBuf::from(inv.value_of("--with-extension").expect("extension"));
    assert_eq!(
        ext.file_name().and_then(|n| n.to_str()),
        Some("hub"),
        "goose names the extension after the command"
    );
    assert!(ext.starts_with(scratch.path()));
    assert_eq!(mode(&ext), 0o700);
    let script = std::fs::read_to_string(&ext).expect("launcher");
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(
        script.contains(&format!("export HUB_API_KEY='{HUB_KEY}'")),
        "{script}"
    );
    assert!(script.contains("export HUB_AGENT_ID='tester'"), "{script}");
    assert!(
        script.contains("exec '/opt/botburrow/bin/botburrow-hub-mcp' \"$@\""),
        "{script}"
    );

    assert_eq!(
        env_keys(&inv),
        BTreeSet::from([
            "ANTHROPIC_API_KEY",
            "GOOSE_DISABLE_KEYRING",
            "GOOSE_MODE",
            "HOME",
            "LANG",
            "PATH"
        ])
    );
    assert_no_secret_on_argv(&inv);
}

#[test]
fn goose_maps_openai_compatible_servers_and_shell() {
    let ws = tempfile::tempdir().expect("ws");
    let scratch = tempfile::tempdir().expect("scratch");
    let yaml = "type: goose\nbrain: {provider: vllm, model: qwen, api_base: 'http://127.0.0.1:8001/v1'}\ncapabilities: {shell: {enabled: true}}";
    let mut req = request(agent(yaml), ws.path());
    req.credentials.insert(
        "OPENAI_API_KEY".into(),
        Secret::new("sk-openai-compatible-key"),
    );
    let inv = prepare::<Goose>(&req, scratch.path());
    assert_eq!(inv.value_of("--provider"), Some("openai"));
    assert_eq!(inv.env["OPENAI_HOST"].expose(), "http://127.0.0.1:8001");
    assert_eq!(inv.env["OPENAI_BASE_PATH"].expose(), "v1/chat/completions");
    assert_eq!(
        inv.env["OPENAI_API_KEY"].expose(),
        "sk-openai-compatible-key"
    );
    assert!(
        !inv.env.contains_key("ANTHROPIC_API_KEY"),
        "only the key the brain needs"
    );
    assert_eq!(inv.value_of("--with-builtin"), Some("developer"));
}

#[test]
fn aider_is_scripted_with_a_message_and_no_mcp() {
    let ws = tempfile::tempdir().expect("ws");
    let scratch = tempfile::tempdir().expect("scratch");
    let req = request(
        agent("type: aider\nbrain: {provider: anthropic, model: claude-sonnet-4-5}"),
        ws.path(),
    );
    let inv = prepare::<Aider>(&req, scratch.path());

    for flag in [
        "--yes-always",
        "--no-git",
        "--no-auto-commits",
        "--no-stream",
        "--no-pretty",
        "--no-check-update",
        "--analytics-disable",
        "--no-suggest-shell-commands",
    ] {
        assert!(inv.has(flag), "missing {flag}");
    }
    assert_eq!(inv.value_of("--model"), Some("anthropic/claude-sonnet-4-5"));
    let msg = inv.value_of("--message-file").expect("message file");
    assert_eq!(
        std::fs::read_to_string(msg).expect("read"),
        "Reply to post 42."
    );
    let read = inv.value_of("--read").expect("conventions file");
    assert_eq!(
        std::fs::read_to_string(read).expect("read"),
        "You are tester. Be brief."
    );
    assert!(
        !inv.args.iter().any(|a| a.contains("mcp")),
        "aider has no MCP: {:?}",
        inv.args
    );
    assert_eq!(
        env_keys(&inv),
        BTreeSet::from(["ANTHROPIC_API_KEY", "HOME", "LANG", "PATH"])
    );
    assert_no_secret_on_argv(&inv);

    let vllm = request(
        agent(
            "type: aider\nbrain: {provider: vllm, model: qwen, api_base: 'http://127.0.0.1:8001/v1'}",
        ),
        ws.path(),
    );
    let inv = prepare::<Aider>(&vllm, scratch.path());
    assert_eq!(inv.value_of("--model"), Some("openai/qwen"));
    assert_eq!(
        inv.value_of("--openai-api-base"),
        Some("http://127.0.0.1:8001/v1")
    );
}

#[test]
fn opencode_runs_with_a_generated_config() {
    let ws = tempfile::tempdir().expect("ws");
    let scratch = tempfile::tempdir().expect("scratch");
    let req = request(
        agent("type: opencode\nbrain: {provider: anthropic, model: claude-sonnet-4-5}"),
        ws.path(),
    );
    let inv = prepare::<OpenCode>(&req, scratch.path());

    assert_eq!(inv.args[0], "run");
    assert_eq!(inv.value_of("--format"), Some("json"));
    assert_eq!(inv.value_of("-m"), Some("anthropic/claude-sonnet-4-5"));
    assert_eq!(inv.value_of("--agent"), Some("botburrow"));
    assert!(inv.has("--auto"));
    assert_eq!(&inv.args[inv.args.len() - 2..], ["--", "Reply to post 42."]);

    let cfg_path = PathBuf::from(inv.env["OPENCODE_CONFIG"].expose());
    assert!(cfg_path.starts_with(scratch.path()));
    assert_eq!(mode(&cfg_path), 0o600);
    let cfg = read_json(&cfg_path);
    let hub = &cfg["mcp"]["hub"];
    assert_eq!(hub["type"], "local");
    assert_eq!(
        hub["command"],
        serde_json::json!(["/opt/botburrow/bin/botburrow-hub-mcp"])
    );
    assert_eq!(hub["environment"]["HUB_API_KEY"], HUB_KEY);
    assert_eq!(hub["environment"]["HUB_AGENT_ID"], "tester");
    assert_eq!(
        hub["environment"]["HUB_GRANTS"], "",
        "no hub grant: the server offers no tool"
    );
    assert_eq!(hub["enabled"], true);
    assert_eq!(
        cfg["agent"]["botburrow"]["prompt"],
        "You are tester. Be brief."
    );
    assert_eq!(cfg["agent"]["botburrow"]["mode"], "primary");
    assert_eq!(
        cfg["permission"]["bash"], "deny",
        "shell not granted, so --auto cannot approve it"
    );
    assert_eq!(cfg["permission"]["edit"], "allow");
    assert_eq!(cfg["autoupdate"], false);
    assert_eq!(
        env_keys(&inv),
        BTreeSet::from([
            "ANTHROPIC_API_KEY",
            "HOME",
            "LANG",
            "OPENCODE_CONFIG",
            "PATH"
        ])
    );
    assert_no_secret_on_argv(&inv);

    let ollama = request(
        agent(
            "type: opencode\nbrain: {provider: ollama, model: llama3, api_base: 'http://127.0.0.1:11434/v1'}",
        ),
        ws.path(),
    );
    let inv = prepare::<OpenCode>(&ollama, scratch.path());
    let cfg = read_json(Path::new(inv.env["OPENCODE_CONFIG"].expose()));
    assert_eq!(
        cfg["provider"]["ollama"]["npm"],
        "@ai-sdk/openai-compatible"
    );
    assert_eq!(
        cfg["provider"]["ollama"]["options"]["baseURL"],
        "http://127.0.0.1:11434/v1"
    );
    assert!(cfg["provider"]["ollama"]["models"]["llama3"].is_object());
    assert!(!inv.env.contains_key("ANTHROPIC_API_KEY") && !inv.env.contains_key("OPENAI_API_KEY"));
}
