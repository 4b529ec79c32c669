//! The `botburrow-runner` binary as a real child process: invalid settings exit 64 naming every
//! problem, a running binary serves `/health`, `/ready` and `/metrics` on `METRICS_PORT`, SIGTERM
//! mid-activation and SIGKILL mid-activation lose nothing, and replies are posted exactly once.

mod runner_support;

use botburrow_shared::queue::WorkQueue;
use botburrow_shared::work::{Priority, WorkItem};
use botburrow_testkit::eventually;
use botburrow_testkit::mock_llm::{MockLlm, MockReply};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use runner_support::{Fleet, KEY_VAR};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WRITER: &str = "capabilities:\n  grants: [hub:read, hub:write]\n";

fn spawn_runner(f: &Fleet, overrides: &[(&str, &str)]) -> Child {
    spawn_runner_logging(f, overrides, Stdio::null())
}

fn spawn_runner_logging(f: &Fleet, overrides: &[(&str, &str)], stderr: Stdio) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_botburrow-runner"));
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in f.env(&f.defs_path()) {
        cmd.env(k, v);
    }
    cmd.env(KEY_VAR, MockLlm::TEST_KEY).env("LOG_LEVEL", "info");
    for (k, v) in overrides {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null()).stderr(stderr);
    cmd.spawn().expect("spawn botburrow-runner")
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runner did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET on the runner's health server: status and body, `None` if it did not answer (never panics,
/// so callers can stop the child before asserting).
async fn get(f: &Fleet, path: &str) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{}{path}", f.metrics_port);
    let response = f.http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Whether a `/metrics` body shows a heartbeat written (a non-zero timestamp).
fn heartbeat_written(metrics: &str) -> bool {
    metrics.lines().any(|l| {
        l.strip_prefix("botburrow_runner_heartbeat_timestamp_seconds ")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    })
}

#[tokio::test]
async fn invalid_settings_exit_64_naming_every_problem() {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_botburrow-runner"));
    // no HUB_URL (nor anything else) from the environment the tests run in
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("RUNNER_MODE", "turbo")
        .env("MAX_CONCURRENT_ACTIVATIONS", "lots")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the runner exits at once on invalid settings")
        .expect("run botburrow-runner");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{:?}\n{err}", out.status);
    for var in ["HUB_URL", "RUNNER_MODE", "MAX_CONCURRENT_ACTIVATIONS"] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(&format!("{var}: "))),
            "{var} not named in:\n{err}"
        );
    }
    assert!(err.contains("(3 problem(s))"), "exactly these three: {err}");
    assert!(err.contains("'turbo'") && err.contains("'lots'"), "{err}");
}

#[tokio::test]
async fn sigterm_mid_activation_hands_the_item_back_and_exits_zero() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    f.mock
        .push(MockReply::text("never delivered").delayed(Duration::from_secs(120)));
    let mut child = spawn_runner(&f, &[("SHUTDOWN_GRACE", "1")]);
    f.ron_posts("@simple-bot a slow question").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(20), || async {
            f.mock.request_count() == 1
        })
        .await,
        "never reached the LLM"
    );
    assert_eq!(f.queue.active().await.expect("active").len(), 1);

    // While it works, the binary serves health, readiness and metrics over HTTP on METRICS_PORT.
    // Gathered here, asserted after the SIGTERM, so a failing check cannot leave the child running.
    let health = get(&f, "/health").await;
    let ready = get(&f, "/ready").await;
    // the heartbeat task writes its first beat independently of the claim; wait for it
    let beat_seen = eventually(Duration::from_secs(10), || async {
        get(&f, "/metrics")
            .await
            .is_some_and(|(_, m)| heartbeat_written(&m))
    })
    .await;
    let metrics = get(&f, "/metrics").await;

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(health.map(|(code, _)| code), Some(200));
    let (code, body) = ready.expect("GET /ready answered");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("/ready is JSON");
    assert_eq!(
        ready["checks"],
        serde_json::json!(["valkey", "agent_definitions"]),
        "{ready}"
    );
    let (code, metrics) = metrics.expect("GET /metrics answered");
    assert_eq!(code, 200);
    assert!(beat_seen && heartbeat_written(&metrics), "{metrics}");
    // mid-activation: one claim observed, one activation in flight
    for line in [
        "botburrow_activations_in_flight 1",
        "botburrow_queue_wait_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }

    // Handed back, not lost: waiting again with the same attempt, no lease, nothing posted or read.
    let waiting = f.queue.peek(Priority::High, 10).await.expect("peek");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].agent_id.as_str(), "simple-bot");
    assert_eq!(waiting[0].attempt, 0);
    assert!(f.queue.active().await.expect("active").is_empty());
    let state = f.state().await;
    assert!(Fleet::comments_by(&state, "simple-bot").is_empty());
    assert_eq!(
        Fleet::notifications_of(&state, "simple-bot")[0]["read"],
        false
    );

    // The next runner picks it up and answers.
    f.mock.push(MockReply::text("Here is the answer."));
    f.start_runner(&[], |_| {}).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn sigint_exits_zero_and_removes_the_heartbeat() {
    let f = Fleet::start().await;
    let mut child = spawn_runner(&f, &[]);
    let beat = || {
        f.valkey
            .command(&["EXISTS", "runner:heartbeat:runner-test-1"])
    };
    // Gathered before the SIGINT, asserted after, so a failing check cannot leave the child running.
    let beat_seen = eventually(Duration::from_secs(20), || async {
        beat().is_ok_and(|r| r.trim() == ":1")
    })
    .await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let status = wait_exit(&mut child, Duration::from_secs(10)).await;
    assert!(beat_seen, "the runner wrote its heartbeat");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(beat().expect("EXISTS").trim(), ":0", "heartbeat removed");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_activation_finish_within_the_grace() {
    let f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    f.mock
        .push(MockReply::text("Finished before exiting.").delayed(Duration::from_millis(1_500)));
    let log_dir = tempfile::tempdir().expect("tmp");
    let log_path = log_dir.path().join("runner.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = spawn_runner_logging(
        &f,
        &[("SHUTDOWN_GRACE", "30"), ("LOG_FORMAT", "json")],
        Stdio::from(log_file),
    );
    f.ron_posts("@simple-bot quick one").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(20), || async {
            f.mock.request_count() == 1
        })
        .await
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait_exit(&mut child, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
    let state = f.state().await;
    let replies = Fleet::comments_by(&state, "simple-bot");
    assert_eq!(replies.len(), 1, "{state}");
    assert_eq!(replies[0]["content"], "Finished before exiting.");
    assert_eq!(
        Fleet::notifications_of(&state, "simple-bot")[0]["read"],
        true
    );
    let stats = f.queue.stats().await.expect("stats");
    assert_eq!((stats.active, stats.total_waiting()), (0, 0), "{stats:?}");

    // JSON log lines; every line of the activation carries its activation_id.
    let log = std::fs::read_to_string(&log_path).expect("read log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "no JSON log lines: {log}");
    let message = |v: &serde_json::Value| v["message"].as_str().unwrap_or_default().to_string();
    for event in [
        "work_claimed",
        "activation_started",
        "reply_posted",
        "activation_completed",
        "runner_draining",
        "runner_stopped",
    ] {
        assert!(
            lines.iter().any(|l| message(l) == event),
            "no {event} in {log}"
        );
    }
    let activation_id = lines
        .iter()
        .find(|l| message(l) == "work_claimed")
        .and_then(|l| l["span"]["activation_id"].as_str())
        .expect("work_claimed carries activation_id")
        .to_string();
    for l in &lines {
        if [
            "activation_started",
            "reply_posted",
            "activation_completed",
            "iteration",
        ]
        .contains(&message(l).as_str())
        {
            assert_eq!(l["span"]["activation_id"], activation_id.as_str(), "{l}");
        }
    }
    let completed = lines
        .iter()
        .find(|l| message(l) == "activation_completed")
        .expect("completed");
    assert!(
        completed["activation_duration"].as_f64().is_some(),
        "{completed}"
    );
}

#[tokio::test]
async fn sigkill_mid_activation_loses_nothing_and_replies_exactly_once() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    // Two notifications: the first is answered, the second hangs in the LLM when the runner dies.
    f.ron_posts("@simple-bot first").await;
    f.ron_posts("@simple-bot second").await;
    f.mock.push(MockReply::text("Answer one."));
    f.mock
        .push(MockReply::text("lost with the process").delayed(Duration::from_secs(120)));
    let mut child = spawn_runner(&f, &[]);
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 2))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(20), || async {
            f.mock.request_count() == 2
        })
        .await
    );
    assert_eq!(Fleet::comments_by(&f.state().await, "simple-bot").len(), 1);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    let _ = wait_exit(&mut child, Duration::from_secs(10)).await;

    // The lease is still there; once it is past its deadline the reaper requeues the item.
    let active = f.queue.active().await.expect("active");
    assert_eq!(active.len(), 1);
    let report = f.queue.reap(active[0].deadline_ms + 1).await.expect("reap");
    assert_eq!(report.requeued, 1, "{report:?}");

    // A new runner retries: the answered notification is not answered again, the other one is.
    f.mock.push(MockReply::text("Answer two."));
    f.start_runner(&[], |_| {}).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() >= 2
        })
        .await
    );
    let stats_ok = eventually(Duration::from_secs(20), || async {
        f.queue
            .stats()
            .await
            .map(|s| s.active == 0 && s.total_waiting() == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(stats_ok);
    let state = f.state().await;
    let mut replies: Vec<String> = Fleet::comments_by(&state, "simple-bot")
        .iter()
        .map(|c| c["content"].as_str().unwrap_or_default().to_string())
        .collect();
    replies.sort();
    assert_eq!(replies, vec!["Answer one.", "Answer two."], "{state}");
    assert!(
        Fleet::notifications_of(&state, "simple-bot")
            .iter()
            .all(|n| n["read"] == true)
    );
    assert_eq!(
        f.mock.request_count(),
        3,
        "the answered notification did not reach the LLM again"
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn sigkill_after_hub_post_then_retry_posts_exactly_once_through_idempotency_keys() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    let post = f.ron_posts("@simple-bot what is a lifetime?").await;
    let call = serde_json::json!({"content": "A lifetime names how long a borrow is valid.", "reply_to": post});
    // Attempt 1: the agent posts with hub_post, then its next model call hangs until the kill.
    f.mock
        .push(MockReply::tool_calls(vec![("hub_post", call.clone())]));
    f.mock
        .push(MockReply::text("done").delayed(Duration::from_secs(120)));
    let mut child = spawn_runner(&f, &[]);
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(20), || async {
            f.mock.request_count() == 2
        })
        .await
    );
    assert_eq!(
        Fleet::comments_by(&f.state().await, "simple-bot").len(),
        1,
        "posted before the crash"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    let _ = wait_exit(&mut child, Duration::from_secs(10)).await;
    let active = f.queue.active().await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(
        f.queue
            .reap(active[0].deadline_ms + 1)
            .await
            .expect("reap")
            .requeued,
        1
    );

    // Attempt 2: the model makes the same hub_post; the same idempotency key returns the first
    // comment instead of creating a second one, and the final text is not posted on top.
    f.mock.push(MockReply::tool_calls(vec![("hub_post", call)]));
    f.mock.push(MockReply::text("I answered in the thread."));
    f.start_runner(&[], |_| {}).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            Fleet::notifications_of(&f.state().await, "simple-bot")
                .iter()
                .all(|n| n["read"] == true)
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            f.queue
                .stats()
                .await
                .map(|s| s.active == 0 && s.total_waiting() == 0)
                .unwrap_or(false)
        })
        .await
    );
    assert_eq!(f.mock.request_count(), 4);
    let state = f.state().await;
    let replies = Fleet::comments_by(&state, "simple-bot");
    assert_eq!(replies.len(), 1, "exactly one reply: {state}");
    assert_eq!(replies[0]["post_id"], post.as_str());
    f.stop_runner().await;
}

/// A runner binary started while Valkey is down, logging JSON to a file, and whether it logged
/// `startup_dependency_unavailable` within 20 s (gathered, not asserted, so a failing check
/// cannot leave the child running).
struct WaitingRunner {
    child: Child,
    _dir: tempfile::TempDir,
    log_path: std::path::PathBuf,
    waited: bool,
}

impl WaitingRunner {
    async fn start(f: &mut Fleet) -> Self {
        f.valkey.kill();
        let dir = tempfile::tempdir().expect("tmp");
        let log_path = dir.path().join("runner.log");
        let log_file = std::fs::File::create(&log_path).expect("log file");
        let child = spawn_runner_logging(f, &[("LOG_FORMAT", "json")], Stdio::from(log_file));
        let mut r = Self {
            child,
            _dir: dir,
            log_path,
            waited: false,
        };
        r.waited = eventually(Duration::from_secs(20), || async {
            r.log().contains("startup_dependency_unavailable")
        })
        .await;
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_runner_started_before_valkey_waits_for_it_then_runs() {
    let mut f = Fleet::start().await;
    let mut r = WaitingRunner::start(&mut f).await;
    let still_running = r.child.try_wait().expect("try_wait").is_none();
    f.valkey.restart();
    let beat_seen = eventually(Duration::from_secs(60), || async {
        f.valkey
            .command(&["EXISTS", "runner:heartbeat:runner-test-1"])
            .is_ok_and(|r| r.trim() == ":1")
    })
    .await;
    kill(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait_exit(&mut r.child, Duration::from_secs(10)).await;
    let text = r.log();
    assert!(r.waited, "no startup_dependency_unavailable line: {text}");
    assert!(
        still_running,
        "the runner exited instead of waiting: {text}"
    );
    assert!(
        beat_seen,
        "the runner never started after Valkey came up: {text}"
    );
    assert!(text.contains("startup_dependencies_ready"), "{text}");
    assert_eq!(status.code(), Some(0), "{status:?}: {text}");
}

#[tokio::test]
async fn a_runner_waiting_for_valkey_stops_cleanly_on_sigterm() {
    let mut f = Fleet::start().await;
    let mut r = WaitingRunner::start(&mut f).await;
    kill(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait_exit(&mut r.child, Duration::from_secs(5)).await;
    let text = r.log();
    assert!(r.waited, "no startup_dependency_unavailable line: {text}");
    assert_eq!(status.code(), Some(0), "{status:?}: {text}");
    assert!(text.contains("runner_shutdown_requested"), "{text}");
}
