//! The real `botburrow-coordinator` binary as a child process.

mod support;

use botburrow_testkit::{Valkey, eventually, free_port};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::harness::{Hub, SERVICE};
use tokio::io::AsyncReadExt;

/// The binary with JSON logs on stderr, collected until it exits.
struct Bin {
    child: tokio::process::Child,
    logs: tokio::task::JoinHandle<String>,
    port: u16,
}

fn spawn_coordinator(hub: &Hub, v: &Valkey, election: &str, pod: &str) -> Bin {
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_botburrow-coordinator"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HUB_URL", hub.url())
        .env("HUB_API_KEY", SERVICE)
        .env("VALKEY_URL", v.url())
        .env("METRICS_PORT", port.to_string())
        .env("LEADER_ELECTION", election)
        .env("POD_NAME", pod)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn coordinator");
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    Bin { child, logs, port }
}

impl Bin {
    /// `/metrics`, or empty while the server does not answer.
    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sends `kill -<signal>`, asserts exit 0 within 5 s, and returns the raw log and its JSON
    /// lines.
    async fn stop_with(mut self, signal: &str) -> (String, Vec<Value>) {
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let t0 = Instant::now();
        let exit = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .expect("exits within 5 s")
            .expect("wait");
        assert!(exit.success(), "exit status {exit:?} after SIG{signal}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let raw = self.logs.await.expect("logs");
        let lines = raw
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (raw, lines)
    }
}

/// The first JSON log line whose message is `event`.
fn logged<'a>(lines: &'a [Value], event: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["message"] == event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_leads_then_exits_zero_on_sigterm_within_5s_releasing_the_lock() {
    leads_then_exits_zero_within_5s_releasing_the_lock("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_leads_then_exits_zero_on_sigint_within_5s_releasing_the_lock() {
    leads_then_exits_zero_within_5s_releasing_the_lock("INT").await;
}

async fn leads_then_exits_zero_within_5s_releasing_the_lock(signal: &str) {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let bin = spawn_coordinator(&hub, &v, "auto", "bin-coord");

    // auto outside a cluster = the Valkey lock.
    assert!(
        eventually(Duration::from_secs(10), || async {
            v.command(&["GET", "coordinator:leader"])
                .map(|r| r.contains("bin-coord"))
                .unwrap_or(false)
        })
        .await,
        "the binary takes the Valkey leader lock"
    );
    let http = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(5), || async {
            http.get(format!("http://127.0.0.1:{}/ready", bin.port))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await,
        "ready once Valkey and the hub answer"
    );
    let metrics = bin.metrics().await;
    assert!(
        metrics.contains("botburrow_coordinator_is_leader 1"),
        "{metrics}"
    );

    let (logs, lines) = bin.stop_with(signal).await;
    assert!(
        v.command(&["GET", "coordinator:leader"])
            .expect("GET")
            .starts_with("$-1"),
        "the lock was released"
    );
    for event in [
        "became_leader",
        "coordinator_shutdown_requested",
        "released_leadership",
        "coordinator_stopped",
    ] {
        assert!(
            logged(&lines, event).is_some(),
            "missing {event} in logs:\n{logs}"
        );
    }
    let became = logged(&lines, "became_leader").expect("became_leader");
    assert_eq!(became["identity"], "bin-coord", "{became}");
    assert_eq!(became["backend"], "valkey", "{became}");
    assert_eq!(
        logged(&lines, "released_leadership").expect("released")["identity"],
        "bin-coord"
    );
    assert_eq!(
        logged(&lines, "coordinator_shutdown_requested").expect("requested")["signal"],
        format!("SIG{signal}").as_str(),
        "{logs}"
    );
    assert!(!logs.contains(SERVICE), "the Hub key must never be logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_lost_leadership_with_its_identity_when_its_lock_is_overwritten() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let bin = spawn_coordinator(&hub, &v, "valkey", "lock-coord");
    assert!(
        eventually(Duration::from_secs(10), || async {
            bin.metrics()
                .await
                .contains("botburrow_coordinator_is_leader 1")
        })
        .await,
        "the binary leads"
    );

    // Another candidate holds the lock now: the next compare-and-renew fails and it steps down.
    v.command(&["SET", "coordinator:leader", "intruder", "PX", "60000"])
        .expect("SET");
    assert!(
        eventually(Duration::from_secs(5), || async {
            bin.metrics()
                .await
                .contains("botburrow_coordinator_is_leader 0")
        })
        .await,
        "the gauge drops to 0 once the lock is taken away"
    );

    let (logs, lines) = bin.stop_with("TERM").await;
    let lost = logged(&lines, "lost_leadership").expect("a lost_leadership line");
    assert_eq!(lost["identity"], "lock-coord", "{lost}");
    assert_eq!(lost["reason"], "lock held by another candidate", "{lost}");
    assert!(
        logged(&lines, "released_leadership").is_none(),
        "nothing to release after losing the lock:\n{logs}"
    );
    assert!(
        v.command(&["GET", "coordinator:leader"])
            .expect("GET")
            .contains("intruder"),
        "shutdown leaves the other candidate's lock alone"
    );
}

#[tokio::test]
async fn invalid_settings_exit_64_naming_every_problem() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_botburrow-coordinator"))
        .env_remove("HUB_URL")
        .env_remove("BOTBURROW_HUB_URL")
        .env("LEADER_ELECTION", "paxos")
        .env("POLL_INTERVAL", "soon")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for var in ["HUB_URL", "LEADER_ELECTION", "POLL_INTERVAL"] {
        assert!(err.contains(var), "{var} not named in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_started_before_valkey_waits_for_it_instead_of_crashing() {
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncBufReadExt;

    let mut v = Valkey::start();
    v.kill();
    let hub = Hub::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_botburrow-coordinator"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HUB_URL", hub.url())
        .env("HUB_API_KEY", SERVICE)
        .env("VALKEY_URL", v.url())
        .env("METRICS_PORT", free_port().to_string())
        .env("LEADER_ELECTION", "valkey")
        .env("POD_NAME", "late-coord")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn coordinator");
    let logs = Arc::new(Mutex::new(String::new()));
    let sink = logs.clone();
    let stderr = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = sink.lock().expect("lock");
            l.push_str(&line);
            l.push('\n');
        }
    });
    let has = |what: &'static str| {
        let logs = logs.clone();
        move || {
            let logs = logs.clone();
            async move { logs.lock().expect("lock").contains(what) }
        }
    };
    assert!(
        eventually(
            Duration::from_secs(5),
            has("startup_dependency_unavailable")
        )
        .await
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running while Valkey is down"
    );

    v.restart();
    assert!(
        eventually(Duration::from_secs(15), || async {
            v.command(&["GET", "coordinator:leader"])
                .map(|r| r.contains("late-coord"))
                .unwrap_or(false)
        })
        .await,
        "leads once Valkey is up; logs:\n{}",
        logs.lock().expect("lock")
    );
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}
