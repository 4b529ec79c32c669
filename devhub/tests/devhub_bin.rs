//! The `botburrow-devhub` binary as operators run it: flags and env twins, the `listening on`
//! line, serving, SIGTERM exiting 0, seed files that are missing or malformed, and strict
//! community mode.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_botburrow-devhub");

/// Spawns the binary and returns it with the URL from its first stdout line.
fn spawn(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn devhub");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line was {line:?}"))
        .to_owned();
    (child, url)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for the process to exit, failing the test after 10 s (a blocked wait on a thread, no
/// polling).
fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("devhub did not exit within 10 s")
        }
    }
}

#[tokio::test]
async fn it_listens_on_a_free_port_serves_and_exits_0_on_sigterm() {
    let (child, url) =
        spawn(Command::new(BIN).args(["--listen", "127.0.0.1:0", "--dev", "--admin-key", "adm"]));
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
    // The development seed is loaded and /_dev is on.
    let r = http
        .get(format!("{url}/api/v1/agents/me"))
        .bearer_auth("botburrow_agent_dev_simple-bot")
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{url}/_dev/state"))
        .header("X-Admin-Key", "adm")
        .send()
        .await
        .expect("state");
    assert_eq!(r.status(), 200);
    sigterm(&child);
    let status = wait_exit(child);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn env_twins_configure_it_and_a_seed_file_is_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "agents:\n  - {name: file-bot, api_key: k-file, daily_limit: 10.0, monthly_limit: 100.0}\n  - {name: ron, type: human, api_key: k-ron}\ncommunities: [m/general, m/rust]\n",
    )
    .expect("write seed");
    let (child, url) = spawn(
        Command::new(BIN)
            .env("DEVHUB_LISTEN", "127.0.0.1:0")
            .env("DEVHUB_SERVICE_KEY", "svc")
            .env("DEVHUB_SEED", &seed)
            .env_remove("DEVHUB_DEV"),
    );
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{url}/api/v1/agents/me"))
        .bearer_auth("k-file")
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{url}/api/v1/agents?stale=true&min_staleness=1"))
        .bearer_auth("svc")
        .send()
        .await
        .expect("stale");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        v["agents"].as_array().map(Vec::len),
        Some(1),
        "only file-bot (ron is human, no dev seed): {v}"
    );
    let r = http
        .get(format!("{url}/_dev/state"))
        .send()
        .await
        .expect("state");
    assert_eq!(r.status(), 404, "no --dev, no control plane");
    sigterm(&child);
    assert_eq!(wait_exit(child).code(), Some(0));
}

fn run_failing(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let status = wait_exit(child);
    (status.code().unwrap_or(-1), err)
}

#[test]
fn a_missing_or_malformed_seed_file_exits_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let (code, err) = run_failing(&[
        "--listen",
        "127.0.0.1:0",
        "--seed",
        missing.to_str().expect("utf8"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("nope.yaml"), "{err}");

    let bad = dir.path().join("bad-seed.yaml");
    std::fs::write(&bad, "agents:\n  - {name: x, dialy_limit: 3}\n").expect("write");
    let (code, err) = run_failing(&[
        "--listen",
        "127.0.0.1:0",
        "--seed",
        bad.to_str().expect("utf8"),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad-seed.yaml") && err.contains("dialy_limit"),
        "{err}"
    );

    let invalid = dir.path().join("invalid-name.yaml");
    std::fs::write(&invalid, "agents:\n  - {name: Not Valid}\n").expect("write");
    let (code, err) = run_failing(&[
        "--listen",
        "127.0.0.1:0",
        "--seed",
        invalid.to_str().expect("utf8"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid-name.yaml"), "{err}");
}

#[test]
fn help_documents_every_flag_and_its_env_twin() {
    let out = Command::new(BIN).arg("--help").output().expect("help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "DEVHUB_LISTEN",
        "127.0.0.1:8000",
        "--admin-key",
        "DEVHUB_ADMIN_KEY",
        "--service-key",
        "DEVHUB_SERVICE_KEY",
        "--seed",
        "DEVHUB_SEED",
        "--dev",
        "--strict-communities",
        "DEVHUB_STRICT_COMMUNITIES",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

/// Posts as ron (service key) to `community` (or none); returns the status and body.
async fn post_to(
    http: &reqwest::Client,
    url: &str,
    community: Option<&str>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut body = serde_json::json!({"agent_id": "ron", "content": "hello"});
    if let Some(c) = community {
        body["community"] = c.into();
    }
    let r = http
        .post(format!("{url}/api/v1/posts"))
        .bearer_auth("svc")
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn strict_communities_refuses_unknown_communities_by_flag_or_env() {
    let http = reqwest::Client::new();
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--service-key",
        "svc",
        "--dev",
        "--admin-key",
        "adm",
    ];
    let (flagged, url) = spawn(
        Command::new(BIN)
            .args(base)
            .arg("--strict-communities")
            .env_remove("DEVHUB_STRICT_COMMUNITIES"),
    );
    let (status, body) = post_to(&http, &url, Some("m/brand-new")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["detail"], "Community 'm/brand-new' not found");
    // Seeded communities (in either spelling) and posts without one still work.
    for community in [Some("m/general"), Some("rust"), None] {
        let (status, body) = post_to(&http, &url, community).await;
        assert_eq!(status, 201, "{community:?}: {body}");
    }
    let state: serde_json::Value = http
        .get(format!("{url}/_dev/state"))
        .bearer_auth("adm")
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["strict_communities"], true, "{state}");
    assert_eq!(
        state["posts"].as_array().map(Vec::len),
        Some(3),
        "nothing created by the 404"
    );
    let communities = state["communities"].as_array().cloned().unwrap_or_default();
    assert!(!communities.iter().any(|c| c == "m/brand-new"), "{state}");
    sigterm(&flagged);
    assert_eq!(wait_exit(flagged).code(), Some(0));

    let (env_twin, url) = spawn(
        Command::new(BIN)
            .args(base)
            .env("DEVHUB_STRICT_COMMUNITIES", "true"),
    );
    assert_eq!(post_to(&http, &url, Some("m/brand-new")).await.0, 404);
    sigterm(&env_twin);
    assert_eq!(wait_exit(env_twin).code(), Some(0));

    // Off by default: an unknown community is created.
    let (lenient, url) = spawn(
        Command::new(BIN)
            .args(base)
            .env_remove("DEVHUB_STRICT_COMMUNITIES"),
    );
    let (status, body) = post_to(&http, &url, Some("m/brand-new")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["community"], "m/brand-new");
    sigterm(&lenient);
    assert_eq!(wait_exit(lenient).code(), Some(0));
}
