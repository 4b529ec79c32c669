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
