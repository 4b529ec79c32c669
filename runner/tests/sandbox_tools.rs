//! Sandbox tools against a real temporary workspace and real child processes: path escapes
//! refused (absolute, `..`, symlinks), file tools, shell policy (disabled, blocked, allowed),
//! process-group kill on timeout, output truncation and the scrubbed environment.

use botburrow_runner::tools::sandbox::{OUTPUT_LIMIT, Sandbox};
use botburrow_runner::tools::{ToolOutput, ToolSet};
use botburrow_shared::agent::Shell;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn shell(enabled: bool) -> Shell {
    Shell {
        enabled,
        allowed_commands: vec![],
        blocked_patterns: vec![],
        timeout_seconds: 20,
    }
}

fn setup(policy: Shell) -> (tempfile::TempDir, tempfile::TempDir, Arc<Sandbox>, ToolSet) {
    let ws = tempfile::tempdir().expect("workspace");
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret.txt"), "TOP SECRET").expect("write");
    let sb = Sandbox::new(ws.path(), &policy).expect("sandbox");
    let mut set = ToolSet::new();
    sb.add_to(&mut set);
    (ws, outside, sb, set)
}

fn assert_escape(out: &ToolOutput) {
    assert!(out.is_error, "expected a refusal, got {out:?}");
    assert!(out.text.starts_with("Path escapes workspace"), "{out:?}");
}

#[tokio::test]
async fn file_tools_work_inside_the_workspace() {
    let (ws, _o, sb, set) = setup(shell(false));
    let out = set
        .call(
            "Write",
            json!({"file_path": "src/a.txt", "content": "alpha beta\nbeta gamma\n"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("src/a.txt")).expect("read"),
        "alpha beta\nbeta gamma\n"
    );
    let abs_inside = sb.root().join("src/a.txt");
    let out = set
        .call(
            "Read",
            json!({"file_path": abs_inside.to_str().expect("utf8")}),
        )
        .await;
    assert_eq!(out, ToolOutput::ok("alpha beta\nbeta gamma\n"));
    let as_named = ws.path().join("src/a.txt");
    let out = set
        .call(
            "Read",
            json!({"file_path": as_named.to_str().expect("utf8")}),
        )
        .await;
    assert!(
        !out.is_error,
        "the workspace path as the runner named it works too: {out:?}"
    );
    let out = set
        .call(
            "Edit",
            json!({"file_path": "src/a.txt", "old_text": "beta", "new_text": "BETA"}),
        )
        .await;
    assert!(
        out.is_error && out.text.contains("occurs 2 times"),
        "{out:?}"
    );
    let out = set
        .call(
            "Edit",
            json!({"file_path": "src/a.txt", "old_text": "alpha beta", "new_text": "ALPHA"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let out = set
        .call(
            "Edit",
            json!({"file_path": "src/a.txt", "old_text": "nope", "new_text": "x"}),
        )
        .await;
    assert!(
        out.is_error && out.text.starts_with("Text not found"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("src/a.txt")).expect("read"),
        "ALPHA\nbeta gamma\n"
    );
    set.call(
        "Write",
        json!({"file_path": "src/deep/b.rs", "content": "fn gamma() {}\n"}),
    )
    .await;
    let out = set.call("Glob", json!({"pattern": "src/**/*.rs"})).await;
    assert_eq!(out, ToolOutput::ok("src/deep/b.rs"));
    let out = set.call("Grep", json!({"pattern": "gam+a"})).await;
    assert_eq!(
        out.text,
        "src/a.txt:2:beta gamma\nsrc/deep/b.rs:1:fn gamma() {}\n"
    );
    let out = set.call("Read", json!({"file_path": "missing.txt"})).await;
    assert!(
        out.is_error && out.text.starts_with("File not found"),
        "{out:?}"
    );
    let out = set.call("Read", json!({"path": "x"})).await;
    assert!(
        out.is_error && out.text.starts_with("Invalid arguments"),
        "{out:?}"
    );
    assert!(!set.contains("Bash"), "shell disabled: Bash is not offered");
}

#[tokio::test]
async fn absolute_paths_outside_are_refused() {
    let (_ws, outside, _sb, set) = setup(shell(false));
    let secret = outside.path().join("secret.txt");
    assert_escape(
        &set.call("Read", json!({"file_path": secret.to_str().expect("utf8")}))
            .await,
    );
    assert_escape(&set.call("Read", json!({"file_path": "/etc/passwd"})).await);
    let target = outside.path().join("new.txt");
    assert_escape(
        &set.call(
            "Write",
            json!({"file_path": target.to_str().expect("utf8"), "content": "x"}),
        )
        .await,
    );
    assert!(!target.exists());
    assert_escape(&set.call("Glob", json!({"pattern": "/etc/*"})).await);
}

#[tokio::test]
async fn dot_dot_cannot_climb_out() {
    let (ws, outside, _sb, set) = setup(shell(false));
    let name = outside
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    let rel = format!("../{name}/secret.txt");
    assert_escape(&set.call("Read", json!({"file_path": rel})).await);
    assert_escape(
        &set.call(
            "Read",
            json!({"file_path": format!("a/../../{name}/secret.txt")}),
        )
        .await,
    );
    assert_escape(
        &set.call(
            "Write",
            json!({"file_path": format!("../{name}/evil.txt"), "content": "x"}),
        )
        .await,
    );
    assert!(!outside.path().join("evil.txt").exists());
    assert_escape(
        &set.call("Grep", json!({"pattern": "SECRET", "path": ".."}))
            .await,
    );
    assert_escape(&set.call("Glob", json!({"pattern": "../**"})).await);
    // `..` that stays inside is fine.
    std::fs::create_dir(ws.path().join("d")).expect("mkdir");
    std::fs::write(ws.path().join("f.txt"), "inside").expect("write");
    assert_eq!(
        set.call("Read", json!({"file_path": "d/../f.txt"})).await,
        ToolOutput::ok("inside")
    );
}

#[tokio::test]
async fn symlinks_cannot_escape() {
    let (ws, outside, _sb, set) = setup(shell(false));
    std::os::unix::fs::symlink(outside.path(), ws.path().join("dirlink")).expect("symlink dir");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        ws.path().join("filelink"),
    )
    .expect("symlink file");
    std::os::unix::fs::symlink(
        outside.path().join("not-yet.txt"),
        ws.path().join("dangling"),
    )
    .expect("symlink dangling");
    assert_escape(
        &set.call("Read", json!({"file_path": "dirlink/secret.txt"}))
            .await,
    );
    assert_escape(&set.call("Read", json!({"file_path": "filelink"})).await);
    assert_escape(
        &set.call(
            "Write",
            json!({"file_path": "dirlink/evil.txt", "content": "x"}),
        )
        .await,
    );
    assert_escape(
        &set.call("Write", json!({"file_path": "dangling", "content": "x"}))
            .await,
    );
    assert_escape(
        &set.call(
            "Edit",
            json!({"file_path": "filelink", "old_text": "TOP", "new_text": "NOT"}),
        )
        .await,
    );
    assert!(!outside.path().join("evil.txt").exists());
    assert!(!outside.path().join("not-yet.txt").exists());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).expect("read"),
        "TOP SECRET"
    );
    // Grep and Glob do not follow links out either.
    assert_eq!(
        set.call("Grep", json!({"pattern": "SECRET"})).await,
        ToolOutput::ok("No matches found.")
    );
    // A link that stays inside is allowed.
    std::fs::write(ws.path().join("real.txt"), "ok").expect("write");
    std::os::unix::fs::symlink(ws.path().join("real.txt"), ws.path().join("inner"))
        .expect("symlink inner");
    assert_eq!(
        set.call("Read", json!({"file_path": "inner"})).await,
        ToolOutput::ok("ok")
    );
}

#[tokio::test]
async fn shell_disabled_refuses_commands() {
    let (ws, _o, sb, set) = setup(shell(false));
    assert!(
        set.call("Bash", json!({"command": "touch x"}))
            .await
            .is_error
    );
    let out = sb.run_command("touch x").await;
    assert!(out.is_error && out.text.contains("disabled"), "{out:?}");
    assert!(!ws.path().join("x").exists());
}

#[tokio::test]
async fn blocked_and_allowed_commands_are_enforced() {
    let policy = Shell {
        enabled: true,
        allowed_commands: vec!["echo".into(), "ls".into(), "touch".into()],
        blocked_patterns: vec!["touch forbidden".into(), "[".into()],
        timeout_seconds: 20,
    };
    let (ws, _o, _sb, set) = setup(policy);
    let out = set
        .call("Bash", json!({"command": "echo hello && ls"}))
        .await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.text.starts_with("hello\n"), "{out:?}");
    for (cmd, why) in [
        ("cat /etc/passwd", "not in allowed_commands"),
        ("echo hi; rm -r .", "not in allowed_commands"),
        ("echo hi | sh", "not in allowed_commands"),
        ("echo $(id)", "Command substitution"),
        ("echo `id`", "Command substitution"),
        ("sudo ls", "blocked by policy"),
        ("touch forbidden", "blocked by policy"),
        ("echo [x", "blocked by policy"),
    ] {
        let out = set.call("Bash", json!({"command": cmd})).await;
        assert!(out.is_error && out.text.contains(why), "{cmd}: {out:?}");
    }
    assert!(!ws.path().join("forbidden").exists());
    let out = set
        .call("Bash", json!({"command": "ls does-not-exist"}))
        .await;
    assert!(
        out.is_error && out.text.contains("[exit code 2]"),
        "{out:?}"
    );
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead; only its parent's reaping is pending.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let policy = Shell {
        timeout_seconds: 1,
        ..shell(true)
    };
    let (ws, _o, _sb, set) = setup(policy);
    let started = std::time::Instant::now();
    let out = set
        .call(
            "Bash",
            json!({"command": "sleep 300 & echo $! > bg.pid; echo started; sleep 300"}),
        )
        .await;
    assert!(
        out.is_error && out.text.contains("timed out after 1 seconds"),
        "{out:?}"
    );
    assert!(
        out.text.contains("started"),
        "partial output is kept: {out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let pid: i32 = std::fs::read_to_string(ws.path().join("bg.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(5), || async move { process_gone(pid) })
            .await,
        "grandchild {pid} survived"
    );
}

#[tokio::test]
async fn an_abandoned_command_has_its_process_group_killed() {
    let (ws, _o, _sb, set) = setup(shell(true));
    // The activation gives up (deadline or cancellation) and drops the tool call mid-command.
    let call = set.call(
        "Bash",
        json!({"command": "sleep 300 & echo $! > bg.pid; sleep 300"}),
    );
    let pid_file = ws.path().join("bg.pid");
    let dropped = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            _ = call => panic!("the command cannot finish"),
            _ = botburrow_testkit::eventually(Duration::from_secs(20), || {
                let f = pid_file.clone();
                async move { std::fs::read_to_string(f).map(|s| s.ends_with('\n')).unwrap_or(false) }
            }) => {}
        }
    })
    .await;
    assert!(dropped.is_ok());
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(5), || async move { process_gone(pid) })
            .await,
        "{pid} survived the drop"
    );
}

#[tokio::test]
async fn background_leftovers_are_killed_when_the_command_ends() {
    let (ws, _o, _sb, set) = setup(shell(true));
    let started = std::time::Instant::now();
    let out = set
        .call(
            "Bash",
            json!({"command": "sleep 300 & echo $! > bg.pid; echo done"}),
        )
        .await;
    assert_eq!(out, ToolOutput::ok("done\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(ws.path().join("bg.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(5), || async move { process_gone(pid) })
            .await
    );
}

#[tokio::test]
async fn output_is_truncated_at_the_documented_limit() {
    let (ws, _o, _sb, set) = setup(shell(true));
    let out = set
        .call(
            "Bash",
            json!({"command": "head -c 300000 /dev/zero | tr '\\0' a"}),
        )
        .await;
    assert!(
        !out.is_error,
        "{}",
        &out.text[out.text.len().saturating_sub(200)..]
    );
    assert!(out.text.len() <= OUTPUT_LIMIT + 100, "{}", out.text.len());
    assert!(out.text.starts_with("aaaa"));
    assert!(
        out.text
            .ends_with(&format!("[output truncated at {OUTPUT_LIMIT} bytes]")),
        "{}",
        &out.text[OUTPUT_LIMIT - 10..]
    );
    std::fs::write(ws.path().join("big.txt"), "b".repeat(OUTPUT_LIMIT * 2)).expect("write");
    let out = set.call("Read", json!({"file_path": "big.txt"})).await;
    assert!(out.text.len() <= OUTPUT_LIMIT + 100);
    assert!(
        out.text
            .contains("[file truncated at 65536 bytes of 131072]")
    );
}

/// Runs `env` in the sandbox and checks that none of this process's secrets are visible.
/// Run directly it checks whatever secrets the test process has; the parent test below re-runs
/// it with provider and Hub keys set, so the check is never vacuous.
#[tokio::test]
async fn sandbox_env_probe() {
    let (ws, _o, _sb, set) = setup(shell(true));
    let out = set.call("Bash", json!({"command": "env"})).await;
    assert!(!out.is_error, "{out:?}");
    let names: Vec<&str> = out
        .text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for n in &names {
        assert!(
            ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(n),
            "unexpected variable {n} in {names:?}"
        );
    }
    let home = format!(
        "HOME={}",
        std::fs::canonicalize(ws.path()).expect("canon").display()
    );
    assert!(out.text.lines().any(|l| l == home), "{}", out.text);
    let mut secrets: Vec<&str> = botburrow_shared::settings::PROVIDER_KEY_VARS.to_vec();
    secrets.extend(["HUB_API_KEY", "GITHUB_TOKEN"]);
    let mut checked = 0;
    for var in secrets {
        if let Ok(value) = std::env::var(var) {
            assert!(!out.text.contains(&value), "{var} leaked into the sandbox");
            checked += 1;
        }
    }
    if std::env::var("BOTBURROW_SANDBOX_PROBE").is_ok() {
        assert!(
            checked >= 2,
            "the parent set the keys, they must be visible to the runner"
        );
        println!("PROBE-OK checked={checked}");
    }
}

#[test]
fn env_is_scrubbed_of_keys_present_in_the_runner_env() {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "sandbox_env_probe",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OPENAI_API_KEY", "sk-probe-openai-4242")
        .env("ANTHROPIC_API_KEY", "sk-ant-probe-4242")
        .env("HUB_API_KEY", "botburrow_agent_probe_4242")
        .env("BOTBURROW_SANDBOX_PROBE", "1")
        .output()
        .expect("re-run the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PROBE-OK checked=3"), "{stdout}");
}

#[test]
fn sandbox_requires_an_existing_workspace() {
    let err = Sandbox::new(Path::new("/nonexistent/ws"), &shell(true)).expect_err("must fail");
    assert!(
        err.to_string().starts_with("workspace /nonexistent/ws"),
        "{err}"
    );
}
