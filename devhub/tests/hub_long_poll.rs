//! Long-poll timing bounds (hub-api.md §5.4, §11.3): an empty poll waits its full timeout, a new
//! mention wakes it within milliseconds, unread work returns at once, many pollers all wake, and
//! a client that goes away leaves no waiter behind.

mod common;

use common::{ADMIN, SERVICE, TestHub};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn poll(hub: &TestHub, query: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (s, v) = hub
        .get(
            Some(SERVICE),
            &format!("/api/v1/notifications/poll?{query}"),
        )
        .await;
    (s, v, started.elapsed())
}

async fn wait_for_pollers(hub: &TestHub, n: u64) {
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(5), || async {
            hub.active_pollers().await == n
        })
        .await,
        "{n} pollers never became active"
    );
}

#[tokio::test]
async fn an_empty_poll_returns_after_its_timeout_and_not_before() {
    let hub = TestHub::start().await;
    let (s, v, took) = poll(&hub, "timeout=2&batch_size=100").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["agents"], json!([]));
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_millis(2500),
        "took {took:?}"
    );
    let (_, v, took) = poll(&hub, "timeout=0").await;
    assert_eq!(v["agents"], json!([]));
    assert!(took < Duration::from_millis(200), "timeout=0 took {took:?}");
    let (s, v, _) = poll(&hub, "timeout=-1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn a_new_mention_wakes_a_waiting_poll_within_200ms() {
    let hub = TestHub::start().await;
    let waiter = {
        let url = hub.url("/api/v1/notifications/poll?timeout=10");
        let http = hub.http.clone();
        tokio::spawn(async move {
            let r = http
                .get(url)
                .bearer_auth(SERVICE)
                .send()
                .await
                .expect("poll");
            let at = Instant::now();
            (r.json::<Value>().await.expect("json"), at)
        })
    };
    wait_for_pollers(&hub, 1).await;
    let inserted = Instant::now();
    hub.post_as("ron", "m/general", "q", "@simple-bot are you there?")
        .await;
    let (v, returned) = waiter.await.expect("join");
    let latency = returned.saturating_duration_since(inserted);
    assert!(
        latency < Duration::from_millis(200),
        "woke after {latency:?}"
    );
    assert_eq!(
        v["agents"],
        json!([{"id": "simple-bot", "name": "simple-bot", "notification_count": 1}])
    );
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(2), || async {
            hub.active_pollers().await == 0
        })
        .await
    );
}

#[tokio::test]
async fn unread_work_returns_at_once_sorted_batched_and_clamped() {
    let hub = TestHub::start().await;
    hub.post_as("ron", "m/general", "a", "@simple-bot one")
        .await;
    hub.post_as("ron", "m/general", "b", "@claude-coder-1 one")
        .await;
    hub.post_as("ron", "m/general", "c", "@claude-coder-1 two")
        .await;
    let (s, v, took) = poll(&hub, "timeout=30").await;
    assert_eq!(s, StatusCode::OK);
    assert!(took < Duration::from_millis(100), "took {took:?}");
    let ids: Vec<&str> = v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["claude-coder-1", "simple-bot"],
        "most unread first"
    );
    let (_, v, _) = poll(&hub, "timeout=30&batch_size=1").await;
    assert_eq!(
        v["agents"],
        json!([{"id": "claude-coder-1", "name": "claude-coder-1", "notification_count": 2}])
    );
    let (_, v, took) = poll(&hub, "timeout=99999").await;
    assert_eq!(v["timeout"], 60, "timeout is clamped to the cap");
    assert!(took < Duration::from_millis(100));
}

#[tokio::test]
async fn many_concurrent_pollers_all_wake_on_one_insert() {
    let hub = TestHub::start().await;
    const N: usize = 50;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let url = hub.url("/api/v1/notifications/poll?timeout=20");
        let http = hub.http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .get(url)
                .bearer_auth(SERVICE)
                .send()
                .await
                .expect("poll");
            let at = Instant::now();
            (r.json::<Value>().await.expect("json"), at)
        }));
    }
    wait_for_pollers(&hub, N as u64).await;
    let inserted = Instant::now();
    let (s, _) = hub
        .post(
            Some(ADMIN),
            "/_dev/notifications",
            json!({"agent_id": "devops-agent", "type": "mention", "content": "hey"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for t in tasks {
        let (v, at) = t.await.expect("join");
        assert_eq!(v["agents"][0]["id"], "devops-agent");
        let latency = at.saturating_duration_since(inserted);
        assert!(
            latency < Duration::from_millis(200),
            "a poller woke after {latency:?}"
        );
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_poll_leaves_no_waiter() {
    let hub = TestHub::start().await;
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let mut errs = 0;
    for _ in 0..5 {
        let r = short
            .get(hub.url("/api/v1/notifications/poll?timeout=30"))
            .bearer_auth(SERVICE)
            .send()
            .await;
        if r.is_err() {
            errs += 1;
        }
    }
    assert_eq!(errs, 5, "each poll was abandoned by its client");
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(3), || async {
            hub.active_pollers().await == 0
        })
        .await,
        "waiters leaked: {}",
        hub.active_pollers().await
    );
}

#[tokio::test]
async fn shutdown_ends_pending_polls_promptly() {
    let hub = TestHub::start().await;
    let url = hub.url("/api/v1/notifications/poll?timeout=30");
    let http = hub.http.clone();
    let waiter = tokio::spawn(async move {
        http.get(url)
            .bearer_auth(SERVICE)
            .send()
            .await
            .map(|r| r.status())
    });
    wait_for_pollers(&hub, 1).await;
    let started = Instant::now();
    hub.token.cancel();
    let status = waiter.await.expect("join").expect("answered");
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "poll held shutdown for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn once_everything_is_read_the_poll_blocks_again() {
    let hub = TestHub::start().await;
    hub.post_as("ron", "m/general", "q", "@simple-bot ping")
        .await;
    let (_, v, took) = poll(&hub, "timeout=5").await;
    assert_eq!(v["agents"][0]["id"], "simple-bot");
    assert!(took < Duration::from_millis(100));
    let ids: Vec<Value> = hub
        .notifications_of("simple-bot")
        .await
        .into_iter()
        .map(|n| n["id"].clone())
        .collect();
    let (s, r) = hub
        .post(
            Some(SERVICE),
            "/api/v1/notifications/read",
            json!({"notification_ids": ids}),
        )
        .await;
    assert_eq!((s, r["marked"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, v, took) = poll(&hub, "timeout=1").await;
    assert_eq!(v["agents"], json!([]));
    assert!(
        took >= Duration::from_millis(950),
        "returned after {took:?} with nothing unread"
    );
}
