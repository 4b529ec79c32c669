//! `botburrow doctor` against a healthy setup (real Valkey, real dev Hub, the example agents) and
//! against broken ones, each check's failure asserted; no secret is ever printed.

use botburrow_devhub::{DevHubConfig, Seed};
use botburrow_testkit::Valkey;
use std::path::PathBuf;
use std::process::{Command, Output};
use tokio_util::sync::CancellationToken;

const SERVICE_KEY: &str = "botburrow_service_doctor_secret";

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent-definitions-schema/examples")
}

fn doctor(envs: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_botburrow"));
    cmd.env_clear().env("PATH", "/usr/bin:/bin").arg("doctor").args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run doctor")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn hub() -> (botburrow_devhub::RunningHub, CancellationToken) {
    let token = CancellationToken::new();
    let hub = botburrow_devhub::start(
        DevHubConfig { service_key: Some(SERVICE_KEY.into()), seed: Some(Seed::default_dev()), ..DevHubConfig::default() },
        token.clone(),
    )
    .await
    .expect("devhub");
    (hub, token)
}

fn healthy_env(valkey: &Valkey, hub_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HUB_URL", hub_url.to_string()),
        ("HUB_API_KEY", SERVICE_KEY.to_string()),
        ("VALKEY_URL", valkey.url()),
        ("AGENT_DEFINITIONS_PATH", examples().display().to_string()),
        ("OPENAI_API_KEY", "sk-doctor-secret-openai".to_string()),
        ("ANTHROPIC_API_KEY", "sk-doctor-secret-anthropic".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_setup_passes_every_selected_check_without_printing_secrets() {
    let valkey = Valkey::start();
    let (hub, token) = hub().await;
    let env = healthy_env(&valkey, &hub.url());
    let out = doctor(&env, &["--check-config", "--check-valkey", "--check-hub", "--check-agents", "--check-providers"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for check in ["✅ config:", "✅ valkey:", "✅ hub: ", "key accepted", "✅ agents: simple-bot (native): effective grants [hub:read, hub:write]", "✅ providers: OPENAI_API_KEY is set"] {
        assert!(t.contains(check), "missing {check:?} in\n{t}");
    }
    assert!(!t.contains("❌"), "{t}");
    for secret in [SERVICE_KEY, "sk-doctor-secret-openai", "sk-doctor-secret-anthropic"] {
        assert!(!t.contains(secret), "secret printed:\n{t}");
    }
    token.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_part_is_named() {
    let valkey = Valkey::start();
    let (hub, token) = hub().await;
    let base = healthy_env(&valkey, &hub.url());
    let with = |k: &'static str, v: String| {
        let mut e: Vec<(&'static str, String)> = base.iter().filter(|(n, _)| *n != k).cloned().collect();
        e.push((k, v));
        e
    };

    // config
    let out = doctor(&with("RUNNER_MODE", "turbo".into()), &["--check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ config: RUNNER_MODE: 'turbo'"), "{}", text(&out));

    // valkey (with a password in the URL that must not be printed)
    let port = botburrow_testkit::free_port();
    let out = doctor(&with("VALKEY_URL", format!("redis://:pw-doctor-secret@127.0.0.1:{port}")), &["--check-valkey"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("❌ valkey:"), "{t}");
    assert!(!t.contains("pw-doctor-secret"), "{t}");

    // hub unreachable, then a key the Hub rejects
    let out = doctor(&with("HUB_URL", format!("http://127.0.0.1:{port}")), &["--check-hub"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ hub:"), "{}", text(&out));
    let out = doctor(&with("HUB_API_KEY", "botburrow_agent_not_a_real_key".into()), &["--check-hub"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ hub: authenticated call failed"), "{}", text(&out));

    // providers: simple-bot needs OPENAI_API_KEY
    let env: Vec<_> = base.iter().filter(|(n, _)| *n != "OPENAI_API_KEY").cloned().collect();
    let out = doctor(&env, &["--check-providers"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ providers: simple-bot: openai needs OPENAI_API_KEY"), "{}", text(&out));

    // agents: a directory that does not exist, then one with a bad definition
    let out = doctor(&with("AGENT_DEFINITIONS_PATH", "/nonexistent/defs".into()), &["--check-agents"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ agents: /nonexistent/defs does not exist"), "{}", text(&out));
    let bad = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let out = doctor(&with("AGENT_DEFINITIONS_PATH", bad.display().to_string()), &["--check-agents"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ agents: agents/wrongtypes/config.yaml: brain.temperature"), "{}", text(&out));

    // mcp: claude-coder-1 is a claude-code agent and `claude` is not on this PATH
    let out = doctor(&base, &["--check-mcp"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("❌ mcp: Executor 'claude-code' not available: 'claude' not found on PATH"), "{}", text(&out));
    token.cancel();
}

#[test]
fn check_agents_shows_grants_after_the_permission_policy() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("permissions.yaml");
    std::fs::write(
        &policy,
        "default:\n  denied: [brave:search]\nagents:\n  claude-coder-1:\n    denied: [\"github:*\"]\n",
    )
    .expect("write policy");
    let env = vec![
        ("HUB_URL", "http://127.0.0.1:9".to_string()),
        ("AGENT_DEFINITIONS_PATH", examples().display().to_string()),
        ("AGENT_PERMISSIONS_PATH", policy.display().to_string()),
    ];
    let out = doctor(&env, &["--check-agents"]);
    let t = text(&out);
    // Removed grants are warnings, not failures.
    assert!(out.status.success(), "{t}");
    for line in [
        "✅ agents: claude-coder-1 (claude-code): effective grants [hub:read, hub:write]",
        "✅ agents: research-agent (native): effective grants [hub:read, hub:write, notes:*]",
        "✅ agents: simple-bot (native): effective grants [hub:read, hub:write]",
        "⚠️  agents: agents/claude-coder-1/config.yaml: capabilities.grants: grant 'github:read' is removed (or narrowed) by the permission policy",
        "⚠️  agents: agents/research-agent/config.yaml: capabilities.grants: grant 'brave:search' is removed (or narrowed) by the permission policy",
    ] {
        assert!(t.lines().any(|l| l.starts_with(line)), "missing {line:?} in\n{t}");
    }
    // A denied grant is never shown as effective.
    for l in t.lines().filter(|l| l.contains("effective grants")) {
        assert!(!l.contains("github") && !l.contains("brave"), "denied grant shown as effective: {l}");
    }

    // Without the policy the same agents keep every declared grant (the policy made the difference).
    let open: Vec<_> = env.iter().filter(|(k, _)| *k != "AGENT_PERMISSIONS_PATH").cloned().collect();
    let t = text(&doctor(&open, &["--check-agents"]));
    assert!(
        t.contains("✅ agents: claude-coder-1 (claude-code): effective grants [github:read, hub:read, hub:write]"),
        "{t}"
    );
    assert!(!t.contains("removed (or narrowed)"), "{t}");
}
