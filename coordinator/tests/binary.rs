//! The real `botburrow-coordinator` binary as a child process.

mod support;

use botburrow_testkit::{Valkey, eventually, free_port};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::harness::{Hub, SERVICE};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_leads_then_exits_zero_on_sigterm_within_5s_releasing_the_lock() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_botburrow-coordinator"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HUB_URL", hub.url())
        .env("HUB_API_KEY", SERVICE)
        .env("VALKEY_URL", v.url())
        .env("METRICS_PORT", port.to_string())
        .env("LEADER_ELECTION", "auto")
        .env("POD_NAME", "bin-coord")
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
            http.get(format!("http://127.0.0.1:{port}/ready"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await,
        "ready once Valkey and the hub answer"
    );
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("botburrow_coordinator_is_leader 1"),
        "{metrics}"
    );

    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let t0 = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s")
        .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        v.command(&["GET", "coordinator:leader"])
            .expect("GET")
            .starts_with("$-1"),
        "the lock was released"
    );

    let logs = logs.await.expect("logs");
    for event in [
        "became_leader",
        "coordinator_shutdown_requested",
        "released_leadership",
        "coordinator_stopped",
    ] {
        assert!(logs.contains(event), "missing {event} in logs:\n{logs}");
    }
    assert!(!logs.contains(SERVICE), "the Hub key must never be logged");
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
