//! End to end: a real devhub, a real Valkey, coordinators wired as the binary wires them.

mod support;

use botburrow_shared::ids::RunnerId;
use botburrow_shared::queue::{QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::work::RunnerMode;
use botburrow_testkit::{Valkey, eventually};
use serde_json::json;
use std::time::{Duration, Instant};
use support::harness::{Coord, Election, Hub, list, llen, metric, settings};

async fn wait_for_poller(hub: &Hub) {
    assert!(
        eventually(Duration::from_secs(5), || async {
            hub.state().await["active_pollers"].as_u64().unwrap_or(0) >= 1
        })
        .await,
        "the coordinator's long-poll is waiting on the hub"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_becomes_a_high_priority_item_within_100ms() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s = settings(&hub, &v, &[]);
    let coord = Coord::start(&s, &v, Election::None).await;
    wait_for_poller(&hub).await;

    hub.mention("simple-bot").await;
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || async {
            llen(&v, "work:queue:high") == 1
        })
        .await
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "mention to queue took {took:?}"
    );

    let items = list(&v, "work:queue:high").await;
    assert_eq!(items[0]["agent_id"], "simple-bot");
    assert_eq!(items[0]["task_type"], "inbox");
    assert_eq!(items[0]["priority"], "high");
    assert_eq!(items[0]["inbox_count"], 1);
    assert_eq!(llen(&v, "work:queue:normal"), 0, "no discovery yet");

    // The level-triggered poll keeps returning simple-bot; the queue dedups, nothing is added.
    hub.mention("simple-bot").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            metric(
                &coord.metrics().await,
                "botburrow_coordinator_poll_duration_seconds_count",
            )
            .unwrap_or(0.0)
                >= 3.0
        })
        .await
    );
    assert_eq!(llen(&v, "work:queue:high"), 1);
    let m = coord.metrics().await;
    assert_eq!(
        metric(
            &m,
            "botburrow_coordinator_enqueued_total{task_type=\"inbox\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "botburrow_coordinator_is_leader"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_long_poll_falls_back_to_the_agent_list() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    hub.dev("/_dev/poll", json!({"enabled": false})).await;
    hub.mention("devops-agent").await;
    let s = settings(&hub, &v, &[("POLL_INTERVAL", "1")]);
    let coord = Coord::start(&s, &v, Election::None).await;
    // The long-poll answers 404, so only the fallback can have found it.
    assert!(
        eventually(Duration::from_secs(3), || async {
            llen(&v, "work:queue:high") == 1
        })
        .await
    );
    assert_eq!(
        list(&v, "work:queue:high").await[0]["agent_id"],
        "devops-agent"
    );
    // A second agent is found by the next fallback poll, one POLL_INTERVAL later.
    hub.mention("example-agent").await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            llen(&v, "work:queue:high") == 2
        })
        .await
    );
    assert_eq!(
        hub.state().await["active_pollers"],
        0,
        "no long-poll is held open"
    );
    let m = coord.metrics().await;
    assert_eq!(
        metric(&m, "botburrow_coordinator_hub_errors_total"),
        Some(0.0),
        "a 404 poll is not an error: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_agents_become_discovery_items() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s = settings(
        &hub,
        &v,
        &[
            ("DISCOVERY_INTERVAL", "1"),
            ("MIN_STALENESS_SECONDS", "600"),
        ],
    );
    let coord = Coord::start(&s, &v, Election::None).await;
    // The dev seed has four never-activated agents (and a human, who is never scheduled).
    assert!(
        eventually(Duration::from_secs(4), || async {
            llen(&v, "work:queue:normal") == 4
        })
        .await
    );
    let items = list(&v, "work:queue:normal").await;
    let mut agents: Vec<String> = items
        .iter()
        .map(|i| i["agent_id"].as_str().expect("id").to_owned())
        .collect();
    agents.sort();
    assert_eq!(
        agents,
        [
            "claude-coder-1",
            "devops-agent",
            "example-agent",
            "simple-bot"
        ]
    );
    assert!(
        items
            .iter()
            .all(|i| i["task_type"] == "discovery" && i["priority"] == "normal")
    );
    let m = coord.metrics().await;
    assert_eq!(
        metric(
            &m,
            "botburrow_coordinator_enqueued_total{task_type=\"discovery\"}"
        ),
        Some(4.0),
        "{m}"
    );
    // The stats loop reports the depth from Valkey.
    assert!(
        eventually(Duration::from_secs(2), || async {
            metric(
                &coord.metrics().await,
                "botburrow_queue_depth{priority=\"normal\"}",
            ) == Some(4.0)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_coordinators_each_mention_is_enqueued_once_and_failover_works() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s1 = settings(&hub, &v, &[]);
    let s2 = settings(&hub, &v, &[]);
    let mut a = Coord::start(&s1, &v, Election::Valkey("coord-a")).await;
    let mut b = Coord::start(&s2, &v, Election::Valkey("coord-b")).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.is_leader() || b.is_leader()
        })
        .await
    );
    assert!(!(a.is_leader() && b.is_leader()));
    wait_for_poller(&hub).await;

    for agent in ["simple-bot", "devops-agent", "claude-coder-1"] {
        hub.mention(agent).await;
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            llen(&v, "work:queue:high") == 3
        })
        .await
    );
    // Let both run a few more polls' worth: still exactly three items, counted once in total.
    assert!(
        eventually(Duration::from_secs(3), || async {
            let (ma, mb) = (a.metrics().await, b.metrics().await);
            let polls = metric(&ma, "botburrow_coordinator_poll_duration_seconds_count")
                .unwrap_or(0.0)
                + metric(&mb, "botburrow_coordinator_poll_duration_seconds_count").unwrap_or(0.0);
            polls >= 4.0
        })
        .await
    );
    assert_eq!(llen(&v, "work:queue:high"), 3);
    let enq = |m: &str| {
        metric(
            m,
            "botburrow_coordinator_enqueued_total{task_type=\"inbox\"}",
        )
        .unwrap_or(0.0)
    };
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(enq(&ma) + enq(&mb), 3.0);
    let (leader, follower) = if a.is_leader() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let fm = follower.metrics().await;
    assert_eq!(
        metric(&fm, "botburrow_coordinator_poll_duration_seconds_count"),
        Some(0.0),
        "the follower never polls"
    );
    assert_eq!(metric(&fm, "botburrow_coordinator_is_leader"), Some(0.0));

    // The leader shuts down (releasing the lock): the follower takes over and picks up new mentions.
    leader.shutdown().await;
    assert!(eventually(Duration::from_secs(3), || async { follower.is_leader() }).await);
    hub.mention("example-agent").await;
    assert!(
        eventually(Duration::from_secs(8), || async {
            llen(&v, "work:queue:high") == 4
        })
        .await
    );
    assert_eq!(enq(&follower.metrics().await), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_webhook_requires_the_bearer_token_and_deletes_keys() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s = settings(&hub, &v, &[("CACHE_WEBHOOK_TOKEN", "hook-token")]);
    let coord = Coord::start(&s, &v, Election::None).await;
    for a in ["simple-bot", "devops-agent", "example-agent"] {
        v.command(&["SET", &format!("cache:agent:{a}"), "{}", "EX", "300"])
            .expect("SET");
    }
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/cache/invalidate", coord.base);

    let r = http.post(&url).send().await.expect("post");
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    assert!(
        v.command(&["EXISTS", "cache:agent:simple-bot"])
            .expect("EXISTS")
            .starts_with(":1")
    );

    let r = http
        .post(format!("{url}?agent=simple-bot"))
        .bearer_auth("hook-token")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json"),
        json!({"status": "ok", "invalidated": "simple-bot"})
    );
    assert!(
        v.command(&["EXISTS", "cache:agent:simple-bot"])
            .expect("EXISTS")
            .starts_with(":0")
    );
    assert!(
        v.command(&["EXISTS", "cache:agent:devops-agent"])
            .expect("EXISTS")
            .starts_with(":1")
    );

    let r = http
        .post(&url)
        .bearer_auth("hook-token")
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json"),
        json!({"status": "ok", "invalidated": "all"})
    );
    assert!(
        v.command(&["EXISTS", "cache:agent:devops-agent"])
            .expect("EXISTS")
            .starts_with(":0")
    );
    assert!(
        v.command(&["EXISTS", "cache:agent:example-agent"])
            .expect("EXISTS")
            .starts_with(":0")
    );

    // Health, readiness and metrics on the same server.
    assert_eq!(
        http.get(format!("{}/health", coord.base))
            .send()
            .await
            .expect("health")
            .status(),
        200
    );
    let ready = http
        .get(format!("{}/ready", coord.base))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["checks"], json!(["valkey", "hub", "election"]));

    // Without a token the route does not exist.
    let s2 = settings(&hub, &v, &[]);
    let open = Coord::start(&s2, &v, botburrow_coordinator_election_none()).await;
    let r = http
        .post(format!("{}/api/v1/cache/invalidate", open.base))
        .bearer_auth("hook-token")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
}

fn botburrow_coordinator_election_none() -> Election {
    Election::None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_hub_when_it_is_down_and_stats_count_runners() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s = settings(&hub, &v, &[]);
    let coord = Coord::start(&s, &v, Election::None).await;
    v.command(&["SET", "runner:heartbeat:r1", "{}", "EX", "60"])
        .expect("SET");
    v.command(&["SET", "runner:heartbeat:r2", "{}", "EX", "60"])
        .expect("SET");
    assert!(
        eventually(Duration::from_secs(2), || async {
            metric(&coord.metrics().await, "botburrow_runners_alive") == Some(2.0)
        })
        .await
    );
    drop(hub);
    let http = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let r = http
                .get(format!("{}/ready", coord.base))
                .send()
                .await
                .expect("ready");
            r.status() == 503
                && r.json::<serde_json::Value>()
                    .await
                    .map(|b| b["failed"] == "hub")
                    .unwrap_or(false)
        })
        .await
    );
    // Hub errors are counted (and backed off), the process keeps serving.
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(
                &coord.metrics().await,
                "botburrow_coordinator_hub_errors_total",
            )
            .unwrap_or(0.0)
                >= 1.0
        })
        .await
    );
    assert_eq!(
        http.get(format!("{}/health", coord.base))
            .send()
            .await
            .expect("health")
            .status(),
        200
    );
}

/// The `election` check reports the elector's last error: a `coordinator:leader` key of the
/// wrong type makes every compare-and-renew fail (WRONGTYPE) while Valkey and the hub answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_election_when_the_lock_cannot_be_taken() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    v.command(&["RPUSH", "coordinator:leader", "not-a-lock"])
        .expect("RPUSH");
    let s = settings(&hub, &v, &[]);
    let coord = Coord::start(&s, &v, Election::Valkey("coord-a")).await;
    let http = reqwest::Client::new();
    let ready = || async {
        let r = http
            .get(format!("{}/ready", coord.base))
            .send()
            .await
            .expect("ready");
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.expect("json"),
        )
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (status, body) = ready().await;
            status == 503 && body["failed"] == "election"
        })
        .await,
        "{:?}",
        ready().await
    );
    let (_, body) = ready().await;
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("valkey leader lock")),
        "{body}"
    );
    assert!(!coord.is_leader());
    assert_eq!(
        metric(&coord.metrics().await, "botburrow_coordinator_is_leader"),
        Some(0.0)
    );

    // Once the key is gone the lock is taken and readiness recovers.
    v.command(&["DEL", "coordinator:leader"]).expect("DEL");
    assert!(eventually(Duration::from_secs(3), || async { coord.is_leader() }).await);
    assert!(
        eventually(Duration::from_secs(3), || async { ready().await.0 == 200 }).await,
        "{:?}",
        ready().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_requeues_an_item_whose_runner_died() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s = settings(&hub, &v, &[]);
    let coord = Coord::start(&s, &v, Election::None).await;
    wait_for_poller(&hub).await;
    hub.mention("simple-bot").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            llen(&v, "work:queue:high") == 1
        })
        .await
    );
    // A runner claims it with a short lease and dies without renewing.
    let q = ValkeyQueue::connect(&v.url(), QueueConfig::default())
        .await
        .expect("queue");
    let claim = q
        .claim(
            RunnerMode::Hybrid,
            &RunnerId::new("doomed"),
            Duration::from_millis(300),
            Duration::from_millis(100),
        )
        .await
        .expect("claim")
        .expect("an item");
    assert_eq!(claim.item.agent_id.as_str(), "simple-bot");
    assert_eq!(llen(&v, "work:queue:high"), 0);
    assert!(
        eventually(Duration::from_secs(3), || async {
            metric(
                &coord.metrics().await,
                "botburrow_coordinator_reaped_total{outcome=\"requeued\"}",
            ) == Some(1.0)
        })
        .await
    );
    let total =
        llen(&v, "work:queue:high") + llen(&v, "work:queue:normal") + llen(&v, "work:queue:low");
    assert_eq!(total, 1, "the item is back in a queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lock_stops_polling_at_once_and_regaining_it_resumes() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    let s = settings(&hub, &v, &[]);
    let coord = Coord::start(&s, &v, Election::Valkey("coord-a")).await;
    assert!(eventually(Duration::from_secs(5), || async { coord.is_leader() }).await);
    wait_for_poller(&hub).await;

    // Another process holds the lock now: the next renewal fails, the in-flight long-poll is
    // abandoned and nothing polls the Hub any more.
    v.command(&["SET", "coordinator:leader", "intruder", "PX", "60000"])
        .expect("SET");
    assert!(eventually(Duration::from_secs(2), || async { !coord.is_leader() }).await);
    assert!(
        eventually(Duration::from_secs(2), || async {
            hub.state().await["active_pollers"] == 0
        })
        .await,
        "the long-poll is abandoned on step-down"
    );
    assert_eq!(
        metric(&coord.metrics().await, "botburrow_coordinator_is_leader"),
        Some(0.0)
    );
    let polls_before = metric(
        &coord.metrics().await,
        "botburrow_coordinator_poll_duration_seconds_count",
    );
    hub.mention("simple-bot").await;

    // The intruder goes away: leadership comes back and the pending mention is picked up.
    v.command(&["DEL", "coordinator:leader"]).expect("DEL");
    assert!(eventually(Duration::from_secs(3), || async { coord.is_leader() }).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            llen(&v, "work:queue:high") == 1
        })
        .await
    );
    assert_eq!(
        list(&v, "work:queue:high").await[0]["agent_id"],
        "simple-bot"
    );
    let polls_after = metric(
        &coord.metrics().await,
        "botburrow_coordinator_poll_duration_seconds_count",
    );
    assert!(
        polls_after > polls_before,
        "{polls_before:?} -> {polls_after:?}"
    );
}

/// The embedding `botburrow up` uses: a MemoryQueue, no election, no Valkey at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_process_with_a_memory_queue_and_no_valkey() {
    use botburrow_coordinator::election::NoElection;
    use botburrow_coordinator::{CoordinatorDeps, Tuning};
    use botburrow_shared::hub::HubClient;
    use botburrow_shared::queue::MemoryQueue;
    use botburrow_shared::settings::{CoordinatorSettings, Secret};
    use std::collections::HashMap;
    use std::sync::Arc;

    let hub = Hub::start().await;
    let env: HashMap<String, String> = [
        ("HUB_URL", hub.url()),
        ("METRICS_PORT", "0".to_owned()),
        ("LEADER_ELECTION", "none".to_owned()),
        ("CACHE_WEBHOOK_TOKEN", "t".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let s = CoordinatorSettings::from_env(&env).expect("settings");
    let queue = Arc::new(MemoryQueue::new(QueueConfig::default()));
    let mut tuning = Tuning::from_settings(&s);
    tuning.http_ip = [127, 0, 0, 1].into();
    let deps = CoordinatorDeps {
        queue: queue.clone(),
        hub: HubClient::new(&hub.url(), Some(Secret::new(support::harness::SERVICE))).expect("hub"),
        elector: Box::new(NoElection::new("up")),
        registry: botburrow_shared::health::new_registry(),
        store: None,
        tuning,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = botburrow_coordinator::start(&s, deps, stop.clone())
        .await
        .expect("start");
    let base = format!("http://{}", running.addr);
    wait_for_poller(&hub).await;
    hub.mention("claude-coder-1").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            queue
                .stats()
                .await
                .map(|st| st.depth_of(botburrow_shared::work::Priority::High) == 1)
                .unwrap_or(false)
        })
        .await
    );
    let claim = queue
        .claim(
            RunnerMode::Notification,
            &RunnerId::new("r"),
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .await
        .expect("claim")
        .expect("item");
    assert_eq!(claim.item.agent_id.as_str(), "claude-coder-1");
    // No shared cache without Valkey: the webhook says so instead of pretending.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/cache/invalidate"))
        .bearer_auth("t")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 503);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running.wait())
        .await
        .expect("stops within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_mode_reprobes_the_long_poll_and_returns_to_it() {
    let v = Valkey::start();
    let hub = Hub::start().await;
    hub.dev("/_dev/poll", json!({"enabled": false})).await;
    let s = settings(&hub, &v, &[]);
    let coord = Coord::start_with(&s, &v, Election::None, |t| {
        t.scheduler.poll_interval = Duration::from_millis(100);
        t.scheduler.reprobe_every = 3;
    })
    .await;
    // Falling back: several short polls, no long-poll held open.
    assert!(
        eventually(Duration::from_secs(3), || async {
            metric(
                &coord.metrics().await,
                "botburrow_coordinator_poll_duration_seconds_count",
            )
            .unwrap_or(0.0)
                >= 4.0
        })
        .await
    );
    assert_eq!(hub.state().await["active_pollers"], 0);
    // The Hub gains the endpoint: a re-probe finds it and the coordinator long-polls again.
    hub.dev("/_dev/poll", json!({"enabled": true})).await;
    wait_for_poller(&hub).await;
    hub.mention("simple-bot").await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            llen(&v, "work:queue:high") == 1
        })
        .await
    );
}
