//! The `botburrow-runner` binary with JSON logs: the stderr lines of an activation's MCP servers
//! (`mcp_server_stderr`, drained by a task of their own) carry the activation's `activation_id`,
//! like every other line of the activation.

mod mcp_support;
mod runner_support;

use botburrow_shared::queue::WorkQueue;
use botburrow_shared::work::WorkItem;
use botburrow_testkit::eventually;
use botburrow_testkit::mock_llm::{MockLlm, MockReply};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use runner_support::{Fleet, KEY_VAR};
use std::process::Stdio;
use std::time::Duration;

fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn mcp_server_stderr_lines_carry_the_activation_id() {
    let f = Fleet::start().await;
    let server = mcp_support::test_server();
    let config = f.native_config(&format!(
        "capabilities:\n  grants: [hub:read, hub:write, probe:*]\n  mcp_servers:\n    - {{name: probe, command: \"{}\"}}\n",
        server.display()
    ));
    f.write_agent("simple-bot", &config, "You are Simple Bot.");
    f.mock.push(MockReply::text("Answered with tools at hand."));

    let logs = tempfile::tempdir().expect("tmp");
    let log_path = logs.path().join("runner.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_botburrow-runner"));
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(f.env(&f.defs_path()))
        .env(KEY_VAR, MockLlm::TEST_KEY)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info,botburrow_runner::mcp=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn botburrow-runner");

    f.ron_posts("@simple-bot hello").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(30), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await,
        "no reply; log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    // The server's startup line is logged before the activation completes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            json_lines(&log_path)
                .iter()
                .any(|l| message(l) == "activation_completed")
        })
        .await
    );
    let pid = child.id().expect("runner pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("runner exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));

    let lines = json_lines(&log_path);
    let activation_id = lines
        .iter()
        .find(|l| message(l) == "work_claimed")
        .and_then(|l| l["span"]["activation_id"].as_str())
        .expect("work_claimed carries activation_id")
        .to_string();
    let stderr_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| message(l) == "mcp_server_stderr")
        .collect();
    assert!(
        stderr_lines
            .iter()
            .any(|l| l["line"] == "test server: ready on stdio" && l["server"] == "probe"),
        "the server's stderr was not logged: {stderr_lines:?}"
    );
    for l in &stderr_lines {
        assert_eq!(
            l["span"]["activation_id"],
            activation_id.as_str(),
            "stderr line without the activation's span: {l}"
        );
    }
}
