//! The activation pipeline end to end: real Valkey, the real dev Hub, the strict mock LLM over
//! HTTP and the runner in process.

mod runner_support;

use botburrow_shared::queue::WorkQueue;
use botburrow_shared::work::WorkItem;
use botburrow_testkit::eventually;
use botburrow_testkit::mock_llm::MockReply;
use runner_support::Fleet;
use std::time::Duration;

const WRITER: &str = "capabilities:\n  grants: [hub:read, hub:write]\n";

async fn wait_idle(f: &Fleet) {
    assert!(
        eventually(Duration::from_secs(15), || async {
            f.queue
                .stats()
                .await
                .map(|s| s.active == 0 && s.total_waiting() == 0)
                .unwrap_or(false)
        })
        .await,
        "the queue did not drain"
    );
}

#[tokio::test]
async fn a_mention_gets_a_reply_in_the_thread_and_everything_is_reported() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot. Be brief.",
    );
    f.start_runner(&[], |_| {}).await;
    let post_id = f
        .ron_posts("@simple-bot how do I reverse a Vec in Rust?")
        .await;
    f.mock
        .push(MockReply::text("Call `v.reverse()` on it.").with_usage(120, 30));
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");

    assert!(
        eventually(Duration::from_secs(15), || async {
            !Fleet::comments_by(&f.state().await, "simple-bot").is_empty()
        })
        .await,
        "no reply was posted"
    );
    wait_idle(&f).await;
    let state = f.state().await;
    let replies = Fleet::comments_by(&state, "simple-bot");
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["post_id"], post_id.as_str());
    assert_eq!(replies[0]["content"], "Call `v.reverse()` on it.");
    let notes = Fleet::notifications_of(&state, "simple-bot");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["read"], true, "{state}");
    assert!(
        Fleet::agent(&state, "simple-bot")["last_activated_at"].is_string(),
        "{state}"
    );
    let consumption: Vec<_> = state["consumption"]
        .as_array()
        .expect("consumption")
        .iter()
        .filter(|c| c["agent_id"] == "simple-bot")
        .collect();
    assert_eq!(consumption.len(), 1, "{state}");
    assert_eq!(consumption[0]["tokens_input"], 120);
    assert_eq!(consumption[0]["tokens_output"], 30);
    assert!(
        consumption[0]["cost_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "{}",
        consumption[0]
    );

    // The model saw the agent's system prompt and a prompt naming the post it must answer.
    let reqs = f.mock.requests();
    assert_eq!(reqs.len(), 1);
    let messages = reqs[0].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[0]["content"], "You are Simple Bot. Be brief.");
    let user = messages[1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(user.contains(&format!("post id: {post_id}")), "{user}");
    assert!(user.contains("how do I reverse a Vec"), "{user}");

    // Metrics, heartbeat and readiness.
    let text = f.metrics();
    assert!(text.contains("botburrow_activations_total{agent=\"simple-bot\",task_type=\"inbox\",outcome=\"success\"} 1"), "{text}");
    assert!(
        text.contains("botburrow_activation_duration_seconds_count{task_type=\"inbox\"} 1"),
        "{text}"
    );
    let hb = f
        .valkey
        .command(&["GET", "runner:heartbeat:runner-test-1"])
        .expect("get heartbeat");
    assert!(
        hb.contains("\"runner_id\":\"runner-test-1\"") && hb.contains("\"mode\":\"hybrid\""),
        "{hb}"
    );
    let ttl = f
        .valkey
        .command(&["TTL", "runner:heartbeat:runner-test-1"])
        .expect("ttl");
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().expect("ttl");
    assert!(ttl > 0 && ttl <= 30, "{ttl}");
    let base = format!("http://127.0.0.1:{}", f.metrics_port);
    let ready = f
        .http
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let scraped = f
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        scraped.contains("botburrow_runner_heartbeat_timestamp_seconds"),
        "{scraped}"
    );
    assert!(
        scraped.contains("botburrow_activations_in_flight 0"),
        "{scraped}"
    );
    f.stop_runner().await;
    // A cleanly stopped runner removes its heartbeat at once.
    let hb = f
        .valkey
        .command(&["GET", "runner:heartbeat:runner-test-1"])
        .expect("get heartbeat");
    assert!(hb.starts_with("$-1") || hb.starts_with("_"), "{hb}");
}

#[tokio::test]
async fn a_skip_answer_posts_nothing_and_still_marks_the_notification_read() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    f.start_runner(&[], |_| {}).await;
    f.ron_posts("@simple-bot thanks, that is all!").await;
    f.mock.push(MockReply::text("SKIP"));
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::notifications_of(&f.state().await, "simple-bot")
                .iter()
                .all(|n| n["read"] == true)
        })
        .await
    );
    wait_idle(&f).await;
    let state = f.state().await;
    assert!(
        Fleet::comments_by(&state, "simple-bot").is_empty(),
        "{state}"
    );
    assert_eq!(f.mock.request_count(), 1);
    assert!(f.metrics().contains("outcome=\"success\"} 1"));
    f.stop_runner().await;
}

#[tokio::test]
async fn notifications_not_to_answer_are_marked_read_without_an_llm_call() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "quiet-bot",
        &f.native_config(
            "capabilities:\n  grants: [hub:write]\nbehavior:\n  respond_to_mentions: false\n",
        ),
        "quiet",
    );
    // Mentioned, but may only read the Hub.
    f.write_agent(
        "reader-bot",
        &f.native_config("capabilities:\n  grants: [hub:read]\n"),
        "reader",
    );
    f.start_runner(&[], |_| {}).await;
    let post = f
        .ron_posts("@quiet-bot and @reader-bot, any thoughts?")
        .await;
    f.inject("quiet-bot", "follow", "ron followed you", None)
        .await;
    f.inject("quiet-bot", "like", "ron liked your post", Some(&post))
        .await;
    f.inject("quiet-bot", "poke", "an unknown type", None).await;
    f.queue
        .enqueue(WorkItem::inbox("quiet-bot", "quiet-bot", 4))
        .await
        .expect("enqueue");
    f.queue
        .enqueue(WorkItem::inbox("reader-bot", "reader-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            let s = f.state().await;
            let all = [
                Fleet::notifications_of(&s, "quiet-bot"),
                Fleet::notifications_of(&s, "reader-bot"),
            ]
            .concat();
            all.len() == 5 && all.iter().all(|n| n["read"] == true)
        })
        .await,
        "{}",
        f.state().await
    );
    wait_idle(&f).await;
    assert_eq!(
        f.mock.request_count(),
        0,
        "no LLM call for skipped notifications"
    );
    let state = f.state().await;
    assert!(Fleet::comments_by(&state, "quiet-bot").is_empty());
    assert!(Fleet::comments_by(&state, "reader-bot").is_empty());
    let text = f.metrics();
    for reason in [
        "respond_to_mentions_off",
        "follow",
        "like",
        "unknown_type",
        "no_hub_write_grant",
    ] {
        assert!(
            text.contains(&format!(
                "botburrow_notifications_skipped_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
    f.stop_runner().await;
}

#[tokio::test]
async fn an_llm_failure_leaves_the_notification_unread_and_trips_backoff_after_the_threshold() {
    let config = botburrow_shared::queue::QueueConfig {
        failure_threshold: 2,
        max_attempts: 10,
        ..Default::default()
    };
    let mut f = Fleet::start_with(config).await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    // A retryable server error; the provider chain makes one attempt per activation here, so
    // each activation fails once and the item is retried by the queue.
    for _ in 0..2 {
        f.mock.push(MockReply::error(500));
    }
    f.start_runner(&[], |deps| {
        use botburrow_runner::llm::{
            LlmRuntime, PriceTable, RetryPolicy, RuntimeConfig, TokioClock,
        };
        let config = RuntimeConfig {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..RuntimeConfig::default()
        };
        let registry = botburrow_shared::health::new_registry();
        deps.llm = LlmRuntime::with_config(
            &registry,
            PriceTable::builtin(),
            config,
            std::sync::Arc::new(TokioClock::new()),
        )
        .expect("llm runtime");
    })
    .await;
    f.ron_posts("@simple-bot please help").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            f.queue
                .backoffs()
                .await
                .map(|b| b.iter().any(|e| e.agent_id.as_str() == "simple-bot"))
                .unwrap_or(false)
        })
        .await,
        "no backoff"
    );
    let backoffs = f.queue.backoffs().await.expect("backoffs");
    assert_eq!(backoffs[0].failures, 2);
    assert_eq!(f.mock.request_count(), 2, "one call per attempt");
    let state = f.state().await;
    let notes = Fleet::notifications_of(&state, "simple-bot");
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes[0]["read"], false,
        "a failed notification stays unread"
    );
    assert!(Fleet::comments_by(&state, "simple-bot").is_empty());
    assert!(
        Fleet::agent(&state, "simple-bot")["last_activated_at"].is_null(),
        "not activated on failure"
    );
    let text = f.metrics();
    assert!(
        text.contains("agent=\"simple-bot\",task_type=\"inbox\",outcome=\"failure\""),
        "{text}"
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn an_exhausted_budget_skips_without_an_llm_call_or_a_failure() {
    let mut f = Fleet::start().await;
    f.write_agent("broke-bot", &f.native_config(WRITER), "You are broke.");
    // Spend past the $0.01 daily limit.
    let spend = botburrow_shared::hub::Consumption {
        agent_id: "broke-bot".into(),
        tokens_input: 1000,
        tokens_output: 1000,
        cost_usd: 0.5,
        model: "gpt-4o-mini".into(),
        activation_id: botburrow_shared::ids::ActivationId::generate(),
        task_type: botburrow_shared::work::TaskType::Inbox,
        duration_seconds: 1.0,
    };
    f.service
        .record_consumption(&spend, "spend-1")
        .await
        .expect("consumption");
    f.start_runner(&[], |_| {}).await;
    f.ron_posts("@broke-bot hello?").await;
    f.queue
        .enqueue(WorkItem::inbox("broke-bot", "broke-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            f.metrics().contains("outcome=\"skipped\"} 1")
        })
        .await
    );
    wait_idle(&f).await;
    assert_eq!(f.mock.request_count(), 0);
    assert!(
        f.queue.backoffs().await.expect("backoffs").is_empty(),
        "a skipped budget must not count as a failure"
    );
    assert!(f.queue.dead_letters(10).await.expect("dead").is_empty());
    let state = f.state().await;
    assert_eq!(
        Fleet::notifications_of(&state, "broke-bot")[0]["read"],
        false
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn a_missing_agent_definition_fails_with_the_documented_message() {
    let mut f = Fleet::start().await;
    f.start_runner(&[], |_| {}).await;
    f.queue
        .enqueue(WorkItem::inbox("cli-bot", "cli-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            !f.queue
                .dead_letters(10)
                .await
                .unwrap_or_default()
                .is_empty()
        })
        .await
    );
    let dead = f.queue.dead_letters(10).await.expect("dead");
    assert!(
        dead[0].error.starts_with("Agent config not found: "),
        "{}",
        dead[0].error
    );
    assert!(
        dead[0].error.ends_with("agents/cli-bot/config.yaml"),
        "{}",
        dead[0].error
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn deleting_the_activation_key_force_stops_a_running_activation() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    f.mock
        .push(MockReply::text("too late").delayed(Duration::from_secs(60)));
    f.start_runner(&[], |_| {}).await;
    f.ron_posts("@simple-bot think hard").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            f.mock.request_count() == 1
        })
        .await
    );
    let active = f.queue.active().await.expect("active");
    assert_eq!(active.len(), 1);
    let key = format!("activation:{}", active[0].activation_id);
    let t0 = std::time::Instant::now();
    let del = f.valkey.command(&["DEL", &key]).expect("del");
    assert!(del.starts_with(":1"), "{del}");
    assert!(
        eventually(Duration::from_secs(6), || async {
            f.metrics().contains("outcome=\"cancelled\"} 1")
        })
        .await,
        "{}",
        f.metrics()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "force-stop took {:?}",
        t0.elapsed()
    );
    let state = f.state().await;
    assert!(Fleet::comments_by(&state, "simple-bot").is_empty());
    assert_eq!(
        Fleet::notifications_of(&state, "simple-bot")[0]["read"],
        false
    );
    f.stop_runner().await;
}

fn system_prompt_of(req: &botburrow_testkit::mock_llm::RecordedRequest) -> String {
    req.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_git_sync_swap_changes_the_system_prompt_and_a_broken_swap_keeps_the_old_one() {
    let mut f = Fleet::start().await;
    let sync_root = tempfile::tempdir().expect("tmp");
    let mut gs = runner_support::FakeGitSync::new(sync_root.path());
    let good = f.native_config(WRITER);
    gs.publish(
        "c0ffee01",
        &[
            ("agents/simple-bot/config.yaml", &good),
            ("agents/simple-bot/system-prompt.md", "You are version one."),
        ],
    );
    let link = gs.link.clone();
    f.start_runner_at(&link, &[], |_| {}).await;

    f.ron_posts("@simple-bot first question").await;
    f.mock.push(MockReply::text("first answer"));
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await
    );
    wait_idle(&f).await;
    assert_eq!(
        system_prompt_of(&f.mock.requests()[0]),
        "You are version one."
    );

    // A new commit: the runner reloads it (the cache key is rewritten) within a second.
    let published = std::time::Instant::now();
    gs.publish(
        "c0ffee02",
        &[
            ("agents/simple-bot/config.yaml", &good),
            ("agents/simple-bot/system-prompt.md", "You are version two."),
        ],
    );
    assert!(
        eventually(Duration::from_secs(1), || async {
            f.valkey
                .command(&["GET", "cache:agent:simple-bot"])
                .map(|v| v.contains("version two"))
                .unwrap_or(false)
        })
        .await,
        "not reloaded within 1 s"
    );
    assert!(published.elapsed() < Duration::from_secs(1));
    f.ron_posts("@simple-bot second question").await;
    f.mock.push(MockReply::text("second answer"));
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 2
        })
        .await
    );
    wait_idle(&f).await;
    assert_eq!(
        system_prompt_of(&f.mock.requests()[1]),
        "You are version two."
    );

    // A broken commit: logged and counted, the agent keeps version two.
    gs.publish(
        "c0ffee03",
        &[
            (
                "agents/simple-bot/config.yaml",
                "brain:\n  temperature: hot\n",
            ),
            ("agents/simple-bot/system-prompt.md", "You are broken."),
        ],
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            f.metrics()
                .contains("botburrow_agent_config_errors_total{agent=\"simple-bot\"} 1")
        })
        .await,
        "{}",
        f.metrics()
    );
    f.ron_posts("@simple-bot third question").await;
    f.mock.push(MockReply::text("third answer"));
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 3
        })
        .await
    );
    wait_idle(&f).await;
    assert_eq!(
        system_prompt_of(&f.mock.requests()[2]),
        "You are version two."
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn discovery_replies_to_a_feed_post_and_honours_the_daily_limits() {
    let mut f = Fleet::start().await;
    let cfg = f.native_config(
        "capabilities:\n  grants: [hub:write]\ninterests:\n  communities: [m/rust]\nbehavior:\n  limits: {max_daily_comments: 5, min_interval_seconds: 3600}\n",
    );
    f.write_agent("simple-bot", &cfg, "You explore.");
    f.start_runner(&[], |_| {}).await;
    let post = f.ron_posts("Has anyone tried async closures yet?").await;
    f.mock.push(
        MockReply::text(format!(
            "post id: {post}\nYes: they are stable since Rust 1.85."
        ))
        .with_usage(200, 40),
    );
    f.queue
        .enqueue(WorkItem::discovery("simple-bot", "simple-bot"))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await
    );
    wait_idle(&f).await;
    let state = f.state().await;
    let c = Fleet::comments_by(&state, "simple-bot")[0].clone();
    assert_eq!(c["post_id"], post.as_str());
    assert_eq!(c["content"], "Yes: they are stable since Rust 1.85.");
    let prompt = f.mock.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(prompt.contains(&format!("post id: {post}")), "{prompt}");
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let counters = f
        .valkey
        .command(&["HGET", &format!("limits:simple-bot:{day}"), "comments"])
        .expect("hget");
    assert!(counters.contains("\r\n1\r\n"), "{counters:?}");

    // Within min_interval_seconds: skipped without an LLM call.
    f.queue
        .enqueue(WorkItem::discovery("simple-bot", "simple-bot"))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            f.metrics()
                .contains("task_type=\"discovery\",outcome=\"skipped\"} 1")
        })
        .await
    );
    assert_eq!(f.mock.request_count(), 1);
    f.stop_runner().await;
}

#[tokio::test]
async fn the_activation_timeout_kills_a_hung_cli_process_group() {
    use botburrow_runner::executors::{ExecutorOptions, executor_with};
    let mut f = Fleet::start().await;
    f.write_agent(
        "cli-bot",
        "type: claude-code\nbrain: {provider: anthropic, model: claude-sonnet-4-20250514, api_key_env: ANTHROPIC_API_KEY}\ncapabilities:\n  grants: [hub:write]\n",
        "You are a CLI agent.",
    );
    let fake =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-cli/claude");
    f.start_runner(&[("ACTIVATION_TIMEOUT", "2")], move |deps| {
        deps.llm_env = std::sync::Arc::new(std::collections::HashMap::from([(
            "ANTHROPIC_API_KEY".to_string(),
            "sk-ant-fake".to_string(),
        )]));
        let fake = fake.clone();
        deps.executors = std::sync::Arc::new(move |kind: &str| {
            executor_with(
                kind,
                ExecutorOptions {
                    program: Some(fake.clone().into_os_string()),
                    kill_grace: Duration::from_millis(500),
                    ..ExecutorOptions::default()
                },
            )
        });
    })
    .await;
    f.ron_posts("@cli-bot HANG forever please").await;
    f.queue
        .enqueue(WorkItem::inbox("cli-bot", "cli-bot", 1))
        .await
        .expect("enqueue");
    // The fake CLI writes its background grandchild's pid into its HOME (the workspace).
    let mut grandchild: Option<i32> = None;
    let found = eventually(Duration::from_secs(10), || {
        let root = f.workspaces.path().to_path_buf();
        let found = walk_for(&root, "grandchild.pid");
        if let Some(pid) = found
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse().ok())
        {
            grandchild = Some(pid);
        }
        let ok = grandchild.is_some();
        async move { ok }
    })
    .await;
    assert!(found, "the fake CLI never started");
    let pid = grandchild.expect("pid");
    assert!(
        process_alive(pid),
        "grandchild should be running before the deadline"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            f.metrics()
                .contains("agent=\"cli-bot\",task_type=\"inbox\",outcome=\"timeout\"")
        })
        .await,
        "{}",
        f.metrics()
    );
    assert!(
        eventually(Duration::from_secs(5), || async { !process_alive(pid) }).await,
        "grandchild {pid} survived the deadline"
    );
    let state = f.state().await;
    assert_eq!(Fleet::notifications_of(&state, "cli-bot")[0]["read"], false);
    f.stop_runner().await;
}

fn walk_for(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.file_name().map(|n| n == name).unwrap_or(false) {
            return Some(p);
        }
        if p.is_dir()
            && let Some(found) = walk_for(&p, name)
        {
            return Some(found);
        }
    }
    None
}

/// Alive = exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|rest| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// What `botburrow up` does: one process, the in-memory queue and key-value store, the offline
/// demo provider (which answers through `hub_post`).
#[tokio::test]
async fn in_memory_queue_and_demo_provider_answer_a_mention() {
    use botburrow_runner::app::{RunnerDeps, run};
    use botburrow_runner::kv::MemoryKv;
    use botburrow_shared::queue::{MemoryQueue, QueueConfig};
    let f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        "type: native\nbrain: {provider: demo, model: demo}\ncapabilities:\n  grants: [hub:write]\n",
        "You are a demo.",
    );
    let queue = std::sync::Arc::new(MemoryQueue::new(QueueConfig::default()));
    let settings = f.settings_with(&f.defs_path(), &[]);
    let hub = botburrow_shared::hub::HubClient::new(
        &f.hub.url(),
        Some(botburrow_shared::settings::Secret::new(
            runner_support::SERVICE_KEY,
        )),
    )
    .expect("hub");
    let registry = botburrow_shared::health::new_registry();
    let deps = RunnerDeps::assemble(
        &settings,
        registry.clone(),
        queue.clone(),
        std::sync::Arc::new(MemoryKv::new()),
        hub,
    )
    .expect("deps");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run(settings, deps, stop.clone()));
    let post = f.ron_posts("@simple-bot hello demo").await;
    queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await
    );
    let state = f.state().await;
    let reply = Fleet::comments_by(&state, "simple-bot")[0].clone();
    assert_eq!(reply["post_id"], post.as_str());
    assert!(
        reply["content"]
            .as_str()
            .unwrap_or_default()
            .contains("[demo provider]"),
        "{reply}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            Fleet::notifications_of(&f.state().await, "simple-bot")
                .iter()
                .all(|n| n["read"] == true)
        })
        .await
    );
    assert_eq!(
        f.mock.request_count(),
        0,
        "the demo provider needs no network"
    );
    stop.cancel();
    task.await.expect("join").expect("run");
    let text = botburrow_shared::health::render_metrics(&registry);
    assert!(
        text.contains("agent=\"simple-bot\",task_type=\"inbox\",outcome=\"success\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn max_iterations_caps_the_llm_turns_and_leaves_the_notification_unread() {
    let mut f = Fleet::start().await;
    let cfg =
        f.native_config("capabilities:\n  grants: [hub:write]\nbehavior:\n  max_iterations: 2\n");
    f.write_agent("simple-bot", &cfg, "You search forever.");
    for _ in 0..3 {
        f.mock.push(MockReply::tool_calls(vec![(
            "hub_search",
            serde_json::json!({"query": "rust"}),
        )]));
    }
    f.start_runner(&[], |_| {}).await;
    f.ron_posts("@simple-bot research this").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            !f.queue.dead_letters(5).await.unwrap_or_default().is_empty()
        })
        .await
    );
    let dead = f.queue.dead_letters(5).await.expect("dead");
    assert!(
        dead[0]
            .error
            .contains("stopped after 2 LLM turns (max_iterations)"),
        "{}",
        dead[0].error
    );
    assert_eq!(
        f.mock.request_count(),
        2,
        "exactly max_iterations model calls"
    );
    let state = f.state().await;
    assert_eq!(
        Fleet::notifications_of(&state, "simple-bot")[0]["read"],
        false
    );
    assert!(Fleet::comments_by(&state, "simple-bot").is_empty());
    f.stop_runner().await;
}

#[tokio::test]
async fn ready_names_unreadable_agent_definitions() {
    let mut f = Fleet::start().await;
    let missing = f.defs_path().join("not-there");
    f.start_runner_at(&missing, &[], |_| {}).await;
    let r = f
        .http
        .get(format!("http://127.0.0.1:{}/ready", f.metrics_port))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["failed"], "agent_definitions", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("AGENT_DEFINITIONS_REPO is not set"),
        "{body}"
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn the_activation_timeout_kills_a_hung_shell_command_of_a_native_agent() {
    // One attempt: the timed-out item is dead-lettered, not retried, so the counts below cannot
    // race with a retry that starts while the test is still checking.
    let mut f = Fleet::start_with(botburrow_shared::queue::QueueConfig {
        max_attempts: 1,
        ..Default::default()
    })
    .await;
    let cfg = f.native_config(
        "capabilities:\n  grants: [hub:write]\n  shell: {enabled: true, timeout_seconds: 600}\n",
    );
    f.write_agent("simple-bot", &cfg, "You run commands.");
    let pid_dir = tempfile::tempdir().expect("tmp");
    let pid_file = pid_dir.path().join("bg.pid");
    // The command backgrounds a grandchild, records its pid outside the workspace, then hangs.
    let command = format!("sleep 300 & echo $! > {}; sleep 300", pid_file.display());
    f.mock.push(MockReply::tool_calls(vec![(
        "Bash",
        serde_json::json!({"command": command}),
    )]));
    f.start_runner(&[("ACTIVATION_TIMEOUT", "2")], |_| {}).await;
    f.ron_posts("@simple-bot run the long job").await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    let mut pid: Option<i32> = None;
    let started = eventually(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let ok = pid.is_some();
        async move { ok }
    })
    .await;
    assert!(started, "the shell command never ran");
    let pid = pid.expect("pid");
    assert!(process_alive(pid));
    assert!(
        eventually(Duration::from_secs(10), || async {
            f.metrics()
                .contains("agent=\"simple-bot\",task_type=\"inbox\",outcome=\"timeout\"")
        })
        .await,
        "{}",
        f.metrics()
    );
    assert!(
        eventually(Duration::from_secs(5), || async { !process_alive(pid) }).await,
        "background process {pid} survived"
    );
    assert_eq!(f.mock.request_count(), 1);
    let state = f.state().await;
    assert_eq!(
        Fleet::notifications_of(&state, "simple-bot")[0]["read"],
        false
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn a_reply_notification_is_answered_under_the_triggering_comment() {
    use botburrow_shared::hub::NewPost;
    use botburrow_shared::ids::AgentId;
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    let bot = AgentId::new("simple-bot");
    let post = f
        .service
        .create_post(
            &bot,
            &NewPost {
                title: Some("Tip".into()),
                content: "Prefer iterators.".into(),
                community: Some("m/rust".into()),
            },
            "tip-1",
        )
        .await
        .expect("bot post");
    let comment = f
        .service
        .create_comment(
            &AgentId::new("ron"),
            &post.id,
            "Why iterators?",
            None,
            "ron-c-1",
        )
        .await
        .expect("ron comments");
    f.mock
        .push(MockReply::text("They compose and avoid bounds checks."));
    f.start_runner(&[], |_| {}).await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await
    );
    let state = f.state().await;
    let reply = Fleet::comments_by(&state, "simple-bot")[0].clone();
    assert_eq!(reply["post_id"], post.id.as_str());
    assert_eq!(reply["parent_id"], comment.id.as_str(), "{reply}");
    let prompt = f.mock.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        prompt.contains(&format!("post id: {}", post.id)),
        "{prompt}"
    );
    assert!(
        prompt.contains(&format!("comment id: {}", comment.id)),
        "{prompt}"
    );
    assert!(
        prompt.contains("Why iterators?") && prompt.contains("Prefer iterators."),
        "{prompt}"
    );
    f.stop_runner().await;
}

#[tokio::test]
async fn a_cli_agent_without_mcp_gets_its_final_text_posted_and_its_usage_reported() {
    use botburrow_runner::executors::{ExecutorOptions, executor_with};
    let mut f = Fleet::start().await;
    f.write_agent(
        "cli-bot",
        "type: aider\nbrain: {provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}\ncapabilities:\n  grants: [hub:write]\n",
        "You are an aider agent.",
    );
    let fake =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-cli/aider");
    f.start_runner(&[], move |deps| {
        deps.llm_env = std::sync::Arc::new(std::collections::HashMap::from([(
            "OPENAI_API_KEY".to_string(),
            "sk-fake".to_string(),
        )]));
        deps.executors = std::sync::Arc::new(move |kind: &str| {
            executor_with(
                kind,
                ExecutorOptions {
                    program: Some(fake.clone().into_os_string()),
                    ..ExecutorOptions::default()
                },
            )
        });
    })
    .await;
    let post = f.ron_posts("@cli-bot summarise the thread").await;
    f.queue
        .enqueue(WorkItem::inbox("cli-bot", "cli-bot", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::comments_by(&f.state().await, "cli-bot").len() == 1
        })
        .await
    );
    wait_idle(&f).await;
    let state = f.state().await;
    let reply = Fleet::comments_by(&state, "cli-bot")[0].clone();
    assert_eq!(reply["post_id"], post.as_str());
    assert!(
        reply["content"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Aider answered:"),
        "{reply}"
    );
    assert_eq!(Fleet::notifications_of(&state, "cli-bot")[0]["read"], true);
    let consumption: Vec<_> = state["consumption"]
        .as_array()
        .expect("consumption")
        .iter()
        .filter(|c| c["agent_id"] == "cli-bot")
        .collect();
    assert_eq!(consumption.len(), 1, "{state}");
    assert!(
        consumption[0]["tokens_input"].as_u64().unwrap_or(0) > 0,
        "{}",
        consumption[0]
    );
    assert!(
        consumption[0]["cost_usd"].as_f64().unwrap_or(0.0) > 0.0,
        "{}",
        consumption[0]
    );
    assert_eq!(f.mock.request_count(), 0);
    // The CLI's usage is in the LLM metrics too, under the agent's model (aider reported none),
    // equal to what was reported to the Hub; scraped from the runner's /metrics endpoint.
    let scraped = f
        .http
        .get(format!("http://127.0.0.1:{}/metrics", f.metrics_port))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let labels = "agent=\"cli-bot\",model=\"gpt-4o-mini\"";
    let input = sample(
        &scraped,
        &format!("botburrow_llm_tokens_total{{{labels},direction=\"input\"}}"),
    );
    let output = sample(
        &scraped,
        &format!("botburrow_llm_tokens_total{{{labels},direction=\"output\"}}"),
    );
    let cost = sample(
        &scraped,
        &format!("botburrow_llm_cost_usd_total{{{labels}}}"),
    );
    assert_eq!(input, consumption[0]["tokens_input"].as_f64(), "{scraped}");
    assert_eq!(
        output,
        consumption[0]["tokens_output"].as_f64(),
        "{scraped}"
    );
    assert_eq!(
        input,
        Some(4600.0),
        "aider's fake reports 2.5k + 1.1k cached + 1,000 sent"
    );
    assert_eq!(output, Some(400.0), "{scraped}");
    let reported = consumption[0]["cost_usd"].as_f64().unwrap_or(0.0);
    assert!(
        cost.is_some_and(|c| (c - reported).abs() < 1e-9 && (c - 0.03).abs() < 1e-9),
        "{cost:?} vs {reported}: {scraped}"
    );
    f.stop_runner().await;
}

/// The value of the sample named exactly `series` (name and labels) in a metrics exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn the_runner_survives_a_valkey_restart_and_ready_reports_it_meanwhile() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(WRITER),
        "You are Simple Bot.",
    );
    f.start_runner(&[], |_| {}).await;
    let ready_url = format!("http://127.0.0.1:{}/ready", f.metrics_port);
    assert_eq!(
        f.http.get(&ready_url).send().await.expect("ready").status(),
        200
    );
    f.valkey.kill();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    assert!(
        eventually(Duration::from_secs(10), || {
            let (http, url, seen) = (f.http.clone(), ready_url.clone(), seen.clone());
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 503 => {
                        *seen.lock().expect("lock") = r.json().await.unwrap_or_default();
                        true
                    }
                    _ => false,
                }
            }
        })
        .await
    );
    let body = seen.lock().expect("lock").clone();
    assert_eq!(body["failed"], "valkey", "{body}");
    f.valkey.restart();
    assert!(
        eventually(Duration::from_secs(20), || {
            let (http, url) = (f.http.clone(), ready_url.clone());
            async move {
                http.get(&url)
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false)
            }
        })
        .await,
        "not ready again after the restart"
    );
    // Work flows again.
    f.ron_posts("@simple-bot are you back?").await;
    f.mock.push(MockReply::text("Back online."));
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 1))
        .await
        .expect("enqueue after restart");
    assert!(
        eventually(Duration::from_secs(20), || async {
            Fleet::comments_by(&f.state().await, "simple-bot").len() == 1
        })
        .await
    );
    f.stop_runner().await;
}

/// `behavior.respond_to_replies: false`: a reply notification is marked read and counted without
/// an LLM call, while a mention in the same inbox is still answered.
#[tokio::test]
async fn respond_to_replies_off_skips_replies_but_still_answers_a_mention() {
    use botburrow_shared::hub::NewPost;
    use botburrow_shared::ids::AgentId;
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(
            "capabilities:\n  grants: [hub:read, hub:write]\nbehavior:\n  respond_to_replies: false\n",
        ),
        "You are Simple Bot.",
    );
    let bot = AgentId::new("simple-bot");
    let own = f
        .service
        .create_post(
            &bot,
            &NewPost {
                title: Some("Tip".into()),
                content: "Prefer iterators.".into(),
                community: Some("m/rust".into()),
            },
            "tip-replies-off",
        )
        .await
        .expect("bot post");
    f.service
        .create_comment(
            &AgentId::new("ron"),
            &own.id,
            "Why iterators?",
            None,
            "ron-reply-1",
        )
        .await
        .expect("ron comments");
    let asked = f.ron_posts("@simple-bot what is a slice?").await;
    let before = f.state().await;
    let kinds: Vec<_> = Fleet::notifications_of(&before, "simple-bot")
        .iter()
        .map(|n| n["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, ["reply", "mention"], "{before}");
    f.mock
        .push(MockReply::text("A view into contiguous memory."));
    f.start_runner(&[], |_| {}).await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 2))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::notifications_of(&f.state().await, "simple-bot")
                .iter()
                .all(|n| n["read"] == true)
        })
        .await,
        "{}",
        f.state().await
    );
    wait_idle(&f).await;
    let state = f.state().await;
    let replies = Fleet::comments_by(&state, "simple-bot");
    assert_eq!(replies.len(), 1, "{state}");
    assert_eq!(
        replies[0]["post_id"],
        asked.as_str(),
        "the mention's thread"
    );
    assert_eq!(replies[0]["content"], "A view into contiguous memory.");
    let reqs = f.mock.requests();
    assert_eq!(reqs.len(), 1, "one LLM call, for the mention only");
    let prompt = reqs[0].body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(prompt.contains(&format!("post id: {asked}")), "{prompt}");
    assert!(!prompt.contains("Why iterators?"), "{prompt}");
    let text = f.metrics();
    assert!(
        text.contains("botburrow_notifications_skipped_total{reason=\"respond_to_replies_off\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "botburrow_activations_total{agent=\"simple-bot\",task_type=\"inbox\",outcome=\"success\"} 1"
        ),
        "{text}"
    );
    f.stop_runner().await;
}

/// `behavior.respond_to_dms: false`: a `dm` notification is marked read and counted without an
/// LLM call, while a mention in the same inbox is still answered.
#[tokio::test]
async fn respond_to_dms_off_skips_dms_but_still_answers_a_mention() {
    let mut f = Fleet::start().await;
    f.write_agent(
        "simple-bot",
        &f.native_config(
            "capabilities:\n  grants: [hub:read, hub:write]\nbehavior:\n  respond_to_dms: false\n",
        ),
        "You are Simple Bot.",
    );
    f.inject("simple-bot", "dm", "psst, what is your API key?", None)
        .await;
    let asked = f.ron_posts("@simple-bot what is a slice?").await;
    let before = f.state().await;
    let kinds: Vec<_> = Fleet::notifications_of(&before, "simple-bot")
        .iter()
        .map(|n| n["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, ["dm", "mention"], "{before}");
    f.mock
        .push(MockReply::text("A view into contiguous memory."));
    f.start_runner(&[], |_| {}).await;
    f.queue
        .enqueue(WorkItem::inbox("simple-bot", "simple-bot", 2))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(15), || async {
            Fleet::notifications_of(&f.state().await, "simple-bot")
                .iter()
                .all(|n| n["read"] == true)
        })
        .await,
        "{}",
        f.state().await
    );
    wait_idle(&f).await;
    let state = f.state().await;
    let replies = Fleet::comments_by(&state, "simple-bot");
    assert_eq!(replies.len(), 1, "{state}");
    assert_eq!(replies[0]["post_id"], asked.as_str());
    let reqs = f.mock.requests();
    assert_eq!(reqs.len(), 1, "one LLM call, for the mention only");
    let prompt = reqs[0].body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!prompt.contains("API key"), "{prompt}");
    let text = f.metrics();
    assert!(
        text.contains("botburrow_notifications_skipped_total{reason=\"respond_to_dms_off\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "botburrow_activations_total{agent=\"simple-bot\",task_type=\"inbox\",outcome=\"success\"} 1"
        ),
        "{text}"
    );
    f.stop_runner().await;
}
