//! `botburrow agents validate|list` on good and bad fixtures, through the real binary.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_botburrow"))
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn validate_accepts_the_bundled_examples() {
    let out = bin().args(["agents", "validate"]).arg(root().join("agent-definitions-schema/examples")).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0 error(s)"), "{stdout}");
}

#[test]
fn validate_reports_every_problem_with_file_and_field() {
    let out = bin().args(["agents", "validate"]).arg(root().join("cli/tests/fixtures/bad")).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("error: agents/broken/config.yaml: invalid YAML"), "{stdout}");
    assert!(stdout.contains("agents/wrongtypes/config.yaml: brain.temperature:"), "{stdout}");
    assert!(stdout.contains("agents/wrongtypes/config.yaml: brain.max_tokens:"), "{stdout}");
    assert!(stdout.contains("agents/wrongtypes/config.yaml: capabilities.grants[1]:"), "{stdout}");
    assert!(stdout.contains("warning: agents/fine/system-prompt.md"), "{stdout}");
    assert!(!stdout.contains("error: agents/fine/"), "{stdout}");
}

#[test]
fn list_prints_a_table_and_json() {
    let dir = root().join("agent-definitions-schema/examples");
    let out = bin().args(["agents", "list"]).arg(&dir).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.starts_with("AGENT"), "{stdout}");
    assert!(stdout.contains("simple-bot") && stdout.contains("openai/gpt-4o-mini"), "{stdout}");
    let out = bin().args(["agents", "list", "--json"]).arg(&dir).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v.as_array().expect("array").iter().any(|a| a["id"] == "claude-coder-1" && a["type"] == "claude-code"));
}

#[test]
fn validate_reports_grants_the_policy_removes_and_bad_grant_shapes() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "default:\n  denied: [github:*]\n").expect("write policy");
    let out = bin()
        .args(["agents", "validate"])
        .arg(root().join("agent-definitions-schema/examples"))
        .arg("--policy")
        .arg(&policy)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "policy removals are warnings: {stdout}");
    assert!(
        stdout.contains("warning: agents/claude-coder-1/config.yaml: capabilities.grants: grant 'github:read' is removed"),
        "{stdout}"
    );

    let defs = dir.path().join("defs/agents/odd");
    std::fs::create_dir_all(&defs).expect("mkdir");
    std::fs::write(defs.join("config.yaml"), "type: native\ncapabilities:\n  grants: [hub:delete]\n").expect("write");
    std::fs::write(defs.join("system-prompt.md"), "p").expect("write");
    let out = bin().args(["agents", "validate"]).arg(dir.path().join("defs")).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("agents/odd/config.yaml") && stdout.contains("hub:delete"), "{stdout}");
}

#[test]
fn validate_reports_bad_custom_mcp_server_grants_like_the_runner() {
    let dir = root().join("cli/tests/fixtures/bad-grants");
    let out = bin().args(["agents", "validate"]).arg(&dir).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // An explicit grant, reported on its `grant` field with the runner's message.
    assert!(
        stdout.contains(
            "error: agents/notes-bot/config.yaml: capabilities.mcp_servers[0].grant: invalid grant 'notes::read': scope part '' may only use"
        ),
        "{stdout}"
    );
    // No grant: the default `<name>:*` is checked and reported on the server's `name`.
    assert!(
        stdout.contains("error: agents/notes-bot/config.yaml: capabilities.mcp_servers[2].name: invalid grant 'my notes:*': service name 'my notes'"),
        "{stdout}"
    );
    // Valid custom grants (explicit and default) and built-in entries are not reported.
    assert!(!stdout.contains("mcp_servers[1]") && !stdout.contains("mcp_servers[3]"), "{stdout}");
    assert!(!stdout.contains("agents/ok-bot/"), "{stdout}");
    assert!(stdout.contains("2 agent(s) checked, 2 error(s), 0 warning(s)"), "{stdout}");

    // The same problems in --json, with file and field apart.
    let out = bin().args(["agents", "validate", "--json"]).arg(&dir).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["errors"], 2, "{v}");
    let fields: Vec<(&str, &str)> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| (p["file"].as_str().unwrap_or_default(), p["field"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("agents/notes-bot/config.yaml", "capabilities.mcp_servers[0].grant"),
            ("agents/notes-bot/config.yaml", "capabilities.mcp_servers[2].name"),
        ],
        "{v}"
    );
}
