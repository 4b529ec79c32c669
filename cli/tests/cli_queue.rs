//! Every `botburrow queue` and `botburrow activation` subcommand against a real Valkey, through the
//! real binary, with state prepared by the same queue library the fleet uses.

use botburrow_shared::ids::RunnerId;
use botburrow_shared::queue::{QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::work::{RunnerMode, WorkItem};
use botburrow_testkit::Valkey;
use std::process::{Command, Output};
use std::time::Duration;

fn cli(valkey: &Valkey, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_botburrow"))
        .args(args)
        .arg("--valkey-url")
        .arg(valkey.url())
        .env_remove("VALKEY_URL")
        .env_remove("REDIS_URL")
        .output()
        .expect("run botburrow")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_and_activation_commands_work_against_valkey() {
    let valkey = Valkey::start();
    let config = QueueConfig { failure_threshold: 1, ..QueueConfig::default() };
    let q = ValkeyQueue::connect(&valkey.url(), config).await.expect("connect");
    q.enqueue(WorkItem::inbox("alice", "alice", 2)).await.expect("enqueue");
    q.enqueue(WorkItem::discovery("bob", "bob")).await.expect("enqueue");
    q.enqueue(WorkItem::discovery("carol", "carol")).await.expect("enqueue");

    // stats (table and JSON)
    let out = cli(&valkey, &["queue", "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("work:queue:high") && text.contains("work:queue:normal"), "{text}");
    let v = json(&cli(&valkey, &["queue", "stats", "--json"]));
    assert_eq!(v["high"], 1);
    assert_eq!(v["normal"], 2);
    assert_eq!(v["active"], 0);

    // peek
    let v = json(&cli(&valkey, &["queue", "peek", "--priority", "normal", "--json"]));
    let agents: Vec<&str> = v.as_array().expect("array").iter().filter_map(|e| e["item"]["agent_id"].as_str()).collect();
    assert_eq!(agents.len(), 2);
    assert!(agents.contains(&"bob") && agents.contains(&"carol"));

    // activation list / stop
    let claim = q
        .claim(RunnerMode::Hybrid, &RunnerId::new("r1"), Duration::from_secs(60), Duration::from_secs(1))
        .await
        .expect("claim")
        .expect("an item");
    assert_eq!(claim.item.agent_id.as_str(), "alice");
    let v = json(&cli(&valkey, &["activation", "list", "--json"]));
    assert_eq!(v[0]["agent"], "alice");
    assert_eq!(v[0]["runner"], "r1");
    let out = cli(&valkey, &["activation", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(claim.activation_id.as_str()));
    let out = cli(&valkey, &["activation", "stop", claim.activation_id.as_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        q.renew(&claim.activation_id, Duration::from_secs(60)).await.expect("renew"),
        botburrow_shared::queue::RenewOutcome::Lost
    );
    let out = cli(&valkey, &["activation", "stop", "no-such-activation"]);
    assert_eq!(out.status.code(), Some(1));

    // backoff list / clear: one failure opens the breaker with threshold 1
    let claim = q
        .claim(RunnerMode::Hybrid, &RunnerId::new("r1"), Duration::from_secs(60), Duration::from_secs(1))
        .await
        .expect("claim")
        .expect("an item");
    let failed_agent = claim.item.agent_id.to_string();
    q.fail(&claim.activation_id, "boom", true).await.expect("fail");
    let v = json(&cli(&valkey, &["queue", "backoff", "--json"]));
    assert!(v.as_array().expect("array").iter().any(|b| b["agent"] == failed_agent.as_str()), "{v}");
    let v = json(&cli(&valkey, &["queue", "backoff", "clear", &failed_agent, "--json"]));
    assert_eq!(v["cleared"], true);
    let v = json(&cli(&valkey, &["queue", "backoff", "--json"]));
    assert!(v.as_array().expect("array").is_empty(), "{v}");

    // dlq list / retry / purge
    let claim = q
        .claim(RunnerMode::Hybrid, &RunnerId::new("r1"), Duration::from_secs(60), Duration::from_secs(1))
        .await
        .expect("claim")
        .expect("an item");
    let dead_id = claim.item.id.to_string();
    q.fail(&claim.activation_id, "fatal: bad config", false).await.expect("fail");
    let v = json(&cli(&valkey, &["queue", "dlq", "--json"]));
    assert!(v.as_array().expect("array").iter().any(|d| d["error"].as_str().unwrap_or("").contains("bad config")), "{v}");
    let v = json(&cli(&valkey, &["queue", "dlq", "retry", &dead_id, "--json"]));
    assert_eq!(v["requeued"], true);
    assert_eq!(q.stats().await.expect("stats").dead, 0);
    let out = cli(&valkey, &["queue", "dlq", "retry", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    valkey.command(&["LPUSH", "work:dead", "{\"raw\":1}"]).expect("lpush");
    let v = json(&cli(&valkey, &["queue", "dlq", "purge", "--json"]));
    assert!(v["purged"].as_u64().expect("count") >= 1);
    assert_eq!(q.stats().await.expect("stats").dead, 0);
}

#[test]
fn unreachable_valkey_is_a_clear_error() {
    let port = botburrow_testkit::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_botburrow"))
        .args(["queue", "stats", "--valkey-url", &format!("redis://:hunter2@127.0.0.1:{port}")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Valkey"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}
