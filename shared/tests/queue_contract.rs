//! The work queue contract (issue 5), run against both backends: every test below runs once on
//! `MemoryQueue` and once on `ValkeyQueue` talking to a real redis/valkey server started by the
//! testkit. Time-dependent rules (backoff, decay, lease expiry) use a `ManualClock`.

use botburrow_shared::ids::{ActivationId, AgentId, RunnerId};
use botburrow_shared::queue::{
    Clock, EnqueueOutcome, FailOutcome, ManualClock, MemoryQueue, QueueConfig, QueueError,
    RenewOutcome, ValkeyQueue, WorkQueue,
};
use botburrow_shared::valkey as keys;
use botburrow_shared::work::{Priority, RunnerMode, TaskType, WorkItem};
use botburrow_testkit::{Valkey, eventually};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(60);
const NO_WAIT: Duration = Duration::ZERO;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Valkey,
}

struct Harness {
    queue: Arc<dyn WorkQueue>,
    clock: Arc<ManualClock>,
    memory: Option<Arc<MemoryQueue>>,
    valkey: Option<Valkey>,
}

impl Backend {
    async fn start(self, config: QueueConfig) -> Harness {
        let clock = ManualClock::starting_now();
        match self {
            Backend::Memory => {
                let q = Arc::new(MemoryQueue::new(config).with_clock(clock.clone()));
                Harness {
                    queue: q.clone(),
                    clock,
                    memory: Some(q),
                    valkey: None,
                }
            }
            Backend::Valkey => {
                let v = Valkey::start();
                let q = ValkeyQueue::connect(&v.url(), config)
                    .await
                    .expect("connect to test valkey");
                Harness {
                    queue: Arc::new(q.with_clock(clock.clone())),
                    clock,
                    memory: None,
                    valkey: Some(v),
                }
            }
        }
    }
}

impl Harness {
    /// What an operator's `LPUSH` by hand does: no dedup, no wake-up token.
    fn push_raw(&self, priority: Priority, raw: &str) {
        if let Some(m) = &self.memory {
            m.push_raw(priority, raw);
        }
        if let Some(v) = &self.valkey {
            let reply = v
                .command(&["LPUSH", &keys::queue(priority), raw])
                .expect("LPUSH");
            assert!(reply.starts_with(':'), "LPUSH failed: {reply}");
        }
    }

    /// Whether some claim is blocked waiting for work.
    fn claimer_waiting(&self) -> bool {
        self.claimers_waiting() > 0
    }

    /// How many claims are blocked waiting for work.
    fn claimers_waiting(&self) -> usize {
        if let Some(m) = &self.memory {
            return m.waiters();
        }
        match &self.valkey {
            Some(v) => v
                .command(&["CLIENT", "LIST"])
                .map(|l| l.matches("cmd=blpop").count())
                .unwrap_or(0),
            None => 0,
        }
    }

    async fn claim(&self, mode: RunnerMode) -> Option<botburrow_shared::queue::Claim> {
        self.queue
            .claim(mode, &RunnerId::new("r1"), LEASE, NO_WAIT)
            .await
            .expect("claim")
    }

    async fn enqueue(&self, item: WorkItem) -> EnqueueOutcome {
        self.queue.enqueue(item).await.expect("enqueue")
    }
}

fn with_priority(mut item: WorkItem, p: Priority) -> WorkItem {
    item.priority = p;
    item
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod valkey {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Valkey).await;
                }
            )*
        }
    };
}

contract_tests!(
    strict_priority_order,
    fifo_within_a_priority,
    dedup_one_waiting_item_and_none_while_active,
    runner_modes_only_claim_their_task_types,
    concurrent_claimers_never_share_an_agent_and_claim_each_item_once,
    dead_claimer_is_requeued_by_the_reaper,
    reaper_dead_letters_an_item_whose_claimers_keep_dying,
    lease_operations_are_fenced_by_activation_id,
    deleting_the_activation_makes_renew_lost,
    release_puts_the_item_back_first_in_line,
    backoff_doubles_from_base_and_is_capped,
    failures_decay_after_an_hour_without_failure,
    dead_letter_after_max_attempts_and_retry,
    malformed_entries_go_to_dead_and_the_next_item_is_claimed,
    blocking_claim_wakes_promptly_on_enqueue,
    empty_claim_returns_none_after_its_wait,
    stats_peek_and_active_describe_the_queue,
    items_of_the_original_fleet_get_a_stable_id,
    a_wake_up_a_hybrid_claimer_cannot_use_reaches_another_claimer,
);

async fn strict_priority_order(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    // enqueue lowest first so that insertion order cannot explain the result
    h.enqueue(with_priority(WorkItem::discovery("c", "C"), Priority::Low))
        .await;
    h.enqueue(WorkItem::discovery("b", "B")).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    let order: Vec<String> = [
        h.claim(RunnerMode::Hybrid).await,
        h.claim(RunnerMode::Hybrid).await,
        h.claim(RunnerMode::Hybrid).await,
    ]
    .into_iter()
    .map(|c| c.expect("an item").item.agent_id.to_string())
    .collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert!(h.claim(RunnerMode::Hybrid).await.is_none());
}

async fn fifo_within_a_priority(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    for i in 0..5 {
        assert_eq!(
            h.enqueue(WorkItem::inbox(format!("agent-{i}"), "", 1))
                .await,
            EnqueueOutcome::Enqueued
        );
    }
    for i in 0..5 {
        let c = h.claim(RunnerMode::Notification).await.expect("item");
        assert_eq!(c.item.agent_id.as_str(), format!("agent-{i}"));
    }
}

async fn dedup_one_waiting_item_and_none_while_active(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    assert_eq!(
        h.enqueue(WorkItem::inbox("a", "A", 1)).await,
        EnqueueOutcome::Enqueued
    );
    assert_eq!(
        h.enqueue(WorkItem::inbox("a", "A", 2)).await,
        EnqueueOutcome::AlreadyQueued
    );
    assert_eq!(
        h.enqueue(WorkItem::discovery("a", "A")).await,
        EnqueueOutcome::AlreadyQueued
    );
    assert_eq!(h.queue.stats().await.expect("stats").total_waiting(), 1);
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(
        c.item.inbox_count, 1,
        "the first item is kept, the duplicate dropped"
    );
    assert_eq!(
        h.enqueue(WorkItem::inbox("a", "A", 3)).await,
        EnqueueOutcome::AgentActive
    );
    assert!(h.claim(RunnerMode::Hybrid).await.is_none());
    // an item of an active agent that got in anyway (pushed by hand) is left waiting, not run
    let sneaked = WorkItem::inbox("a", "A", 9);
    h.push_raw(Priority::High, &sneaked.to_json());
    assert!(
        h.claim(RunnerMode::Hybrid).await.is_none(),
        "agent a is active"
    );
    assert_eq!(
        h.queue
            .stats()
            .await
            .expect("stats")
            .depth_of(Priority::High),
        1
    );
    assert!(h.queue.complete(&c.activation_id).await.expect("complete"));
    let c = h
        .claim(RunnerMode::Hybrid)
        .await
        .expect("runs once a is free");
    assert_eq!(c.item.id, sneaked.id);
    assert!(h.queue.complete(&c.activation_id).await.expect("complete"));
    assert_eq!(
        h.enqueue(WorkItem::inbox("a", "A", 4)).await,
        EnqueueOutcome::Enqueued
    );
}

async fn runner_modes_only_claim_their_task_types(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.enqueue(WorkItem::inbox("inbox-high", "", 1)).await;
    h.enqueue(WorkItem::discovery("disc-normal", "")).await;
    // `low` mixes both types; the inbox item is next in line there
    h.enqueue(with_priority(
        WorkItem::inbox("inbox-low", "", 1),
        Priority::Low,
    ))
    .await;
    h.enqueue(with_priority(
        WorkItem::discovery("disc-low", ""),
        Priority::Low,
    ))
    .await;

    let e1 = h
        .claim(RunnerMode::Exploration)
        .await
        .expect("discovery item");
    let e2 = h
        .claim(RunnerMode::Exploration)
        .await
        .expect("discovery item in low");
    assert_eq!(
        (e1.item.agent_id.as_str(), e2.item.agent_id.as_str()),
        ("disc-normal", "disc-low")
    );
    assert!(
        h.claim(RunnerMode::Exploration).await.is_none(),
        "exploration never gets inbox work"
    );

    let n1 = h.claim(RunnerMode::Notification).await.expect("inbox item");
    let n2 = h
        .claim(RunnerMode::Notification)
        .await
        .expect("inbox item in low");
    assert_eq!(
        (n1.item.agent_id.as_str(), n2.item.agent_id.as_str()),
        ("inbox-high", "inbox-low")
    );
    assert_eq!(n2.item.task_type, TaskType::Inbox);

    h.enqueue(WorkItem::discovery("disc-2", "")).await;
    assert!(
        h.claim(RunnerMode::Notification).await.is_none(),
        "notification never gets discovery work"
    );
    assert_eq!(
        h.claim(RunnerMode::Hybrid)
            .await
            .expect("hybrid takes both")
            .item
            .agent_id
            .as_str(),
        "disc-2"
    );
}

async fn concurrent_claimers_never_share_an_agent_and_claim_each_item_once(b: Backend) {
    const ITEMS: usize = 1_000;
    const AGENTS: usize = 20;
    let h = b.start(QueueConfig::default()).await;
    // Pushed by hand so that many items of one agent wait at once (enqueue would dedup them).
    let mut expected = HashSet::new();
    for i in 0..ITEMS {
        let item = WorkItem::inbox(format!("agent-{}", i % AGENTS), "", 1);
        expected.insert(item.id.clone());
        h.push_raw(Priority::High, &item.to_json());
    }
    let holding: Arc<Mutex<HashSet<AgentId>>> = Arc::default();
    let claimed: Arc<Mutex<Vec<botburrow_shared::ids::WorkItemId>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let q = h.queue.clone();
        let holding = holding.clone();
        let claimed = claimed.clone();
        tasks.push(tokio::spawn(async move {
            let runner = RunnerId::new(format!("runner-{t}"));
            loop {
                if claimed.lock().expect("lock").len() >= ITEMS {
                    return;
                }
                let Some(c) = q
                    .claim(
                        RunnerMode::Hybrid,
                        &runner,
                        LEASE,
                        Duration::from_millis(50),
                    )
                    .await
                    .expect("claim")
                else {
                    continue;
                };
                assert!(
                    holding
                        .lock()
                        .expect("lock")
                        .insert(c.item.agent_id.clone()),
                    "agent {} held twice at once",
                    c.item.agent_id
                );
                claimed.lock().expect("lock").push(c.item.id.clone());
                // "work" while holding the agent: a real round trip, during which other
                // claimers run and must not get this agent
                // (tasks hold for different times, so claims do not proceed in lockstep rounds)
                for _ in 0..=(t % 4) {
                    let renewed = q.renew(&c.activation_id, LEASE).await.expect("renew");
                    assert_eq!(renewed, RenewOutcome::Renewed);
                }
                tokio::task::yield_now().await;
                // released from the test's view before the queue frees it, so no false alarm
                holding.lock().expect("lock").remove(&c.item.agent_id);
                assert!(q.complete(&c.activation_id).await.expect("complete"));
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("claimers finish")
            .expect("no panic");
    }
    let claimed = claimed.lock().expect("lock").clone();
    assert_eq!(claimed.len(), ITEMS);
    let unique: HashSet<_> = claimed.into_iter().collect();
    assert_eq!(unique, expected, "every item claimed exactly once");
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!((stats.total_waiting(), stats.active), (0, 0));
}

async fn dead_claimer_is_requeued_by_the_reaper(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(c.deadline_ms, h.clock.now_ms() + 60_000);
    // the runner dies: nothing renews. Before the deadline the reaper leaves it alone.
    let report = h.queue.reap(h.clock.now_ms() + 59_000).await.expect("reap");
    assert!(report.is_empty(), "{report:?}");
    h.clock.advance(Duration::from_secs(61));
    let report = h.queue.reap(h.clock.now_ms()).await.expect("reap");
    assert_eq!((report.requeued, report.dead), (1, 0));
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!((stats.depth_of(Priority::Low), stats.active), (1, 0));
    let again = h
        .claim(RunnerMode::Notification)
        .await
        .expect("requeued item");
    assert_eq!(
        again.item.id, c.item.id,
        "same item, same id for idempotency"
    );
    assert_eq!(again.item.attempt, 1);
    assert_eq!(again.item.priority, Priority::Low);
    assert_eq!(again.item.last_error.as_deref(), Some("lease expired"));
    assert_eq!(
        h.queue.renew(&c.activation_id, LEASE).await.expect("renew"),
        RenewOutcome::Lost
    );
}

async fn reaper_dead_letters_an_item_whose_claimers_keep_dying(b: Backend) {
    let config = QueueConfig {
        max_attempts: 3,
        ..Default::default()
    };
    let h = b.start(config).await;
    let item = WorkItem::inbox("a", "A", 1);
    let id = item.id.clone();
    h.enqueue(item).await;
    // attempts 0 and 1: the claimer dies, nothing renews, the lease runs out
    for attempt in 0..2 {
        let c = h.claim(RunnerMode::Hybrid).await.expect("requeued item");
        assert_eq!((c.item.id.clone(), c.item.attempt), (id.clone(), attempt));
        h.clock.advance(LEASE + Duration::from_secs(1));
        let report = h.queue.reap(h.clock.now_ms()).await.expect("reap");
        assert_eq!(
            (report.requeued, report.dead),
            (1, 0),
            "attempt {attempt}: {report:?}"
        );
    }
    // attempt 2, the last one: this claimer dies too, and its activation key vanishes before the
    // deadline (its TTL ran out; deleted here because the TTL is real time)
    let last = h.claim(RunnerMode::Hybrid).await.expect("requeued item");
    assert_eq!((last.item.id.clone(), last.item.attempt), (id.clone(), 2));
    assert_eq!(last.item.last_error.as_deref(), Some("lease expired"));
    assert!(
        h.queue
            .stop_activation(&last.activation_id)
            .await
            .expect("stop")
    );
    let report = h.queue.reap(h.clock.now_ms()).await.expect("reap");
    assert_eq!(
        (report.requeued, report.dead, report.orphaned),
        (0, 1, 0),
        "{report:?}"
    );

    // dead-lettered with the reason of the last death, not an earlier one
    let dead = h.queue.dead_letters(10).await.expect("dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].error, "activation stopped");
    let dead_item = dead[0].item.as_ref().expect("parses");
    assert_eq!((dead_item.id.clone(), dead_item.attempt), (id, 3));
    assert_eq!(dead_item.last_error.as_deref(), Some("activation stopped"));
    assert!((dead[0].failed_at.timestamp_millis() - h.clock.now_ms()).abs() < 2);

    // not requeued: nothing waits, nothing is leased, nothing to claim
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!(
        (stats.total_waiting(), stats.active, stats.dead),
        (0, 0, 1),
        "{stats:?}"
    );
    assert!(h.claim(RunnerMode::Hybrid).await.is_none(), "not requeued");
    assert!(h.queue.active().await.expect("active").is_empty());
    assert_eq!(
        h.queue
            .renew(&last.activation_id, LEASE)
            .await
            .expect("renew"),
        RenewOutcome::Lost
    );
    // dying runners are not the agent's fault: its breaker stays closed
    assert!(h.queue.backoffs().await.expect("backoffs").is_empty());
    // the bookkeeping is clean: a later pass has nothing to repair
    h.clock.advance(LEASE * 2);
    let report = h.queue.reap(h.clock.now_ms()).await.expect("reap");
    assert!(report.is_empty(), "{report:?}");
    if let Some(v) = &h.valkey {
        let act = keys::activation(&last.activation_id);
        for (cmd, key) in [
            ("ZCARD", keys::LEASES),
            ("HLEN", keys::INFLIGHT),
            ("HLEN", keys::ACTIVE),
            ("SCARD", keys::QUEUED),
            ("EXISTS", act.as_str()),
        ] {
            let reply = v.command(&[cmd, key]).expect(cmd);
            assert!(reply.starts_with(":0"), "{cmd} {key}: {reply}");
        }
    }
    // and no stale work:active entry refuses the agent's next item
    assert_eq!(
        h.enqueue(WorkItem::inbox("a", "A", 2)).await,
        EnqueueOutcome::Enqueued
    );
}

async fn lease_operations_are_fenced_by_activation_id(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    let first = h.claim(RunnerMode::Hybrid).await.expect("item");
    let stranger = ActivationId::generate();
    assert!(!h.queue.complete(&stranger).await.expect("complete"));
    assert_eq!(
        h.queue.fail(&stranger, "x", true).await.expect("fail"),
        FailOutcome::NotOwner
    );
    assert!(!h.queue.release(&stranger).await.expect("release"));
    assert_eq!(
        h.queue.renew(&stranger, LEASE).await.expect("renew"),
        RenewOutcome::Lost
    );
    assert_eq!(
        h.queue
            .renew(&first.activation_id, LEASE)
            .await
            .expect("renew"),
        RenewOutcome::Renewed
    );

    // the first runner stalls past its deadline; the item is reaped and claimed by someone else
    h.clock.advance(Duration::from_secs(120));
    h.queue.reap(h.clock.now_ms()).await.expect("reap");
    let second = h.claim(RunnerMode::Hybrid).await.expect("requeued");
    assert!(
        !h.queue
            .complete(&first.activation_id)
            .await
            .expect("stale complete")
    );
    assert_eq!(
        h.queue
            .fail(&first.activation_id, "late", true)
            .await
            .expect("stale fail"),
        FailOutcome::NotOwner
    );
    assert!(
        !h.queue
            .release(&first.activation_id)
            .await
            .expect("stale release")
    );
    assert_eq!(
        h.queue.stats().await.expect("stats").active,
        1,
        "the stale runner changed nothing"
    );
    assert!(
        h.queue
            .complete(&second.activation_id)
            .await
            .expect("complete")
    );
    assert!(
        !h.queue
            .complete(&second.activation_id)
            .await
            .expect("complete twice")
    );
}

async fn deleting_the_activation_makes_renew_lost(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert!(
        h.queue
            .stop_activation(&c.activation_id)
            .await
            .expect("stop")
    );
    assert!(
        !h.queue
            .stop_activation(&c.activation_id)
            .await
            .expect("stop twice")
    );
    assert_eq!(
        h.queue.renew(&c.activation_id, LEASE).await.expect("renew"),
        RenewOutcome::Lost
    );
    assert!(!h.queue.complete(&c.activation_id).await.expect("complete"));
    let active = h.queue.active().await.expect("active");
    assert_eq!(active.len(), 1);
    assert!(active[0].stopped);
    // the reaper notices the vanished key before the deadline and requeues the item
    let report = h.queue.reap(h.clock.now_ms()).await.expect("reap");
    assert_eq!(report.requeued, 1);
    let again = h.claim(RunnerMode::Hybrid).await.expect("requeued");
    assert_eq!(again.item.attempt, 1);
    assert_eq!(again.item.last_error.as_deref(), Some("activation stopped"));
}

async fn release_puts_the_item_back_first_in_line(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    h.enqueue(WorkItem::inbox("b", "B", 1)).await;
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(c.item.agent_id.as_str(), "a");
    assert!(h.queue.release(&c.activation_id).await.expect("release"));
    assert!(
        !h.queue
            .release(&c.activation_id)
            .await
            .expect("release twice")
    );
    let again = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(
        again.item.agent_id.as_str(),
        "a",
        "released item is next, before b"
    );
    assert_eq!(again.item.attempt, 0);
    assert_eq!(again.item.priority, Priority::High);
}

async fn backoff_doubles_from_base_and_is_capped(b: Backend) {
    let config = QueueConfig {
        max_attempts: 1_000,
        failure_decay: Duration::from_secs(100_000),
        ..Default::default()
    };
    let h = b.start(config).await;
    let agent = AgentId::new("flaky");
    h.enqueue(WorkItem::inbox("flaky", "", 1)).await;
    let mut backoffs = Vec::new();
    for failure in 1..=12u32 {
        let c = h.claim(RunnerMode::Hybrid).await.expect("item");
        match h
            .queue
            .fail(&c.activation_id, "hub 500", true)
            .await
            .expect("fail")
        {
            FailOutcome::Requeued { attempt } => {
                assert!(failure < 5, "requeued at failure {failure}");
                assert_eq!(attempt, failure);
            }
            FailOutcome::Backoff { until, failures } => {
                assert_eq!(failures, failure);
                let secs = (until.timestamp_millis() - h.clock.now_ms()) / 1000;
                backoffs.push(secs);
                match h.enqueue(WorkItem::inbox("flaky", "", 1)).await {
                    EnqueueOutcome::InBackoff { until: u } => {
                        assert_eq!(u.timestamp_millis(), until.timestamp_millis())
                    }
                    other => panic!("enqueue during backoff: {other:?}"),
                }
                let listed = h.queue.backoffs().await.expect("backoffs");
                assert_eq!(listed.len(), 1);
                assert_eq!(
                    (listed[0].agent_id.clone(), listed[0].failures),
                    (agent.clone(), failure)
                );
                assert_eq!(h.queue.stats().await.expect("stats").in_backoff, 1);
                // wait the backoff out (clock), then the coordinator enqueues again
                h.clock.set(until.timestamp_millis());
                assert_eq!(
                    h.enqueue(WorkItem::inbox("flaky", "", 1)).await,
                    EnqueueOutcome::Enqueued
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(backoffs, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
    // a success closes the breaker
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert!(h.queue.complete(&c.activation_id).await.expect("complete"));
    h.enqueue(WorkItem::inbox("flaky", "", 1)).await;
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert!(matches!(
        h.queue
            .fail(&c.activation_id, "x", true)
            .await
            .expect("fail"),
        FailOutcome::Requeued { .. }
    ));
    // and an operator can clear it
    assert!(h.queue.clear_backoff(&agent).await.expect("clear"));
    assert!(!h.queue.clear_backoff(&agent).await.expect("clear twice"));
}

async fn failures_decay_after_an_hour_without_failure(b: Backend) {
    let config = QueueConfig {
        failure_threshold: 2,
        max_attempts: 100,
        ..Default::default()
    };
    let h = b.start(config).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(
        h.queue
            .fail(&c.activation_id, "e1", true)
            .await
            .expect("fail"),
        FailOutcome::Requeued { attempt: 1 }
    );
    h.clock.advance(Duration::from_secs(3_601));
    // an hour later the count starts again: 1 failure, below the threshold of 2
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(
        h.queue
            .fail(&c.activation_id, "e2", true)
            .await
            .expect("fail"),
        FailOutcome::Requeued { attempt: 2 }
    );
    // without a pause the next failure reaches the threshold
    h.clock.advance(Duration::from_secs(60));
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    match h
        .queue
        .fail(&c.activation_id, "e3", true)
        .await
        .expect("fail")
    {
        FailOutcome::Backoff { failures, until } => {
            assert_eq!(failures, 2);
            assert_eq!(until.timestamp_millis(), h.clock.now_ms() + 60_000);
        }
        other => panic!("expected backoff, got {other:?}"),
    }
}

async fn dead_letter_after_max_attempts_and_retry(b: Backend) {
    let config = QueueConfig {
        max_attempts: 3,
        failure_threshold: 100,
        ..Default::default()
    };
    let h = b.start(config).await;
    let item = WorkItem::inbox("a", "A", 1);
    let id = item.id.clone();
    h.enqueue(item).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let c = h.claim(RunnerMode::Hybrid).await.expect("item");
        outcomes.push(
            h.queue
                .fail(&c.activation_id, "tool crashed", true)
                .await
                .expect("fail"),
        );
    }
    assert_eq!(
        outcomes,
        vec![
            FailOutcome::Requeued { attempt: 1 },
            FailOutcome::Requeued { attempt: 2 },
            FailOutcome::Dead
        ]
    );
    assert!(h.claim(RunnerMode::Hybrid).await.is_none());
    let dead = h.queue.dead_letters(10).await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "tool crashed");
    let dead_item = dead[0].item.as_ref().expect("parses");
    assert_eq!((dead_item.id.clone(), dead_item.attempt), (id.clone(), 3));
    assert!((dead[0].failed_at.timestamp_millis() - h.clock.now_ms()).abs() < 2);
    assert_eq!(h.queue.stats().await.expect("stats").dead, 1);

    // while the agent has other work waiting, the dead item stays dead
    h.enqueue(WorkItem::inbox("a", "A", 2)).await;
    assert!(!h.queue.retry_dead(&id).await.expect("retry while queued"));
    assert_eq!(h.queue.stats().await.expect("stats").dead, 1);
    let other = h.claim(RunnerMode::Hybrid).await.expect("the newer item");
    assert!(
        h.queue
            .complete(&other.activation_id)
            .await
            .expect("complete")
    );

    assert!(h.queue.retry_dead(&id).await.expect("retry"));
    assert!(!h.queue.retry_dead(&id).await.expect("retry twice"));
    let c = h.claim(RunnerMode::Hybrid).await.expect("retried item");
    assert_eq!((c.item.id.clone(), c.item.attempt), (id, 0));
    // not retryable: dead at once
    assert_eq!(
        h.queue
            .fail(&c.activation_id, "agent config invalid", false)
            .await
            .expect("fail"),
        FailOutcome::Dead
    );
    assert_eq!(h.queue.purge_dead().await.expect("purge"), 1);
    assert_eq!(h.queue.stats().await.expect("stats").dead, 0);
}

async fn malformed_entries_go_to_dead_and_the_next_item_is_claimed(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.push_raw(Priority::High, "this is not json {");
    h.push_raw(Priority::High, r#"{"agent_id":"x","task_type":"dance"}"#);
    h.push_raw(
        Priority::High,
        r#"{"agent_id":"y","task_type":"inbox","attempt":"three"}"#,
    );
    h.enqueue(WorkItem::inbox("good", "", 1)).await;
    let c = h
        .claim(RunnerMode::Notification)
        .await
        .expect("the valid item behind the malformed ones");
    assert_eq!(c.item.agent_id.as_str(), "good");
    let dead = h.queue.dead_letters(10).await.expect("dlq");
    assert_eq!(dead.len(), 3, "{dead:?}");
    let raws: HashSet<&str> = dead.iter().map(|d| d.raw_item.as_str()).collect();
    assert!(raws.contains("this is not json {"), "{raws:?}");
    for d in &dead {
        assert!(d.error.starts_with("malformed work item"), "{}", d.error);
        assert!(d.item.is_none());
    }
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!((stats.total_waiting(), stats.active, stats.dead), (0, 1, 3));
}

async fn blocking_claim_wakes_promptly_on_enqueue(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    let mut worst = Duration::ZERO;
    for round in 0..10 {
        let q = h.queue.clone();
        let mode = if round % 2 == 0 {
            RunnerMode::Notification
        } else {
            RunnerMode::Hybrid
        };
        let claimer = tokio::spawn(async move {
            let c = q
                .claim(mode, &RunnerId::new("idle"), LEASE, Duration::from_secs(10))
                .await;
            (c, Instant::now())
        });
        assert!(
            eventually(Duration::from_secs(5), || async { h.claimer_waiting() }).await,
            "claimer blocks"
        );
        let sent = Instant::now();
        h.enqueue(WorkItem::inbox(format!("agent-{round}"), "", 1))
            .await;
        let (claim, got) = claimer.await.expect("join");
        let claim = claim.expect("claim").expect("woken with the item");
        assert_eq!(claim.item.agent_id.as_str(), format!("agent-{round}"));
        worst = worst.max(got - sent);
        assert!(
            h.queue
                .complete(&claim.activation_id)
                .await
                .expect("complete")
        );
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest wake-up took {worst:?}"
    );
}

async fn empty_claim_returns_none_after_its_wait(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    // discovery work does not wake or satisfy a notification claimer
    h.enqueue(WorkItem::discovery("d", "")).await;
    let started = Instant::now();
    let got = h
        .queue
        .claim(
            RunnerMode::Notification,
            &RunnerId::new("r"),
            LEASE,
            Duration::from_millis(200),
        )
        .await
        .expect("an expired wait is not an error");
    let took = started.elapsed();
    assert!(got.is_none());
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(3),
        "waited {took:?}"
    );
    assert_eq!(
        h.queue
            .stats()
            .await
            .expect("stats")
            .depth_of(Priority::Normal),
        1
    );
}

async fn stats_peek_and_active_describe_the_queue(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    h.enqueue(WorkItem::inbox("a", "A", 1)).await;
    h.enqueue(WorkItem::inbox("b", "B", 1)).await;
    h.enqueue(WorkItem::discovery("c", "C")).await;
    h.clock.advance(Duration::from_secs(30));
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!(stats.depth, [2, 1, 0]);
    assert_eq!(stats.oldest_waiting_age, Some(Duration::from_secs(30)));
    let peeked: Vec<String> = h
        .queue
        .peek(Priority::High, 10)
        .await
        .expect("peek")
        .into_iter()
        .map(|i| i.agent_id.to_string())
        .collect();
    assert_eq!(peeked, ["a", "b"], "next to be claimed first");
    assert_eq!(
        h.queue.peek(Priority::High, 1).await.expect("peek").len(),
        1
    );
    let c = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!(c.queue_wait, Duration::from_secs(30));
    let active = h.queue.active().await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].activation_id, c.activation_id);
    assert_eq!(active[0].agent_id.as_str(), "a");
    assert_eq!(active[0].runner.as_ref().map(|r| r.as_str()), Some("r1"));
    assert_eq!(active[0].deadline_ms, c.deadline_ms);
    assert!(!active[0].stopped);
    assert_eq!(h.queue.stats().await.expect("stats").active, 1);
    h.queue.ping().await.expect("ping");
}

/// Valkey only: a restart mid-test surfaces typed, transient errors, then the client reconnects
/// (and reloads its scripts, which the restart flushed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_restart_surfaces_typed_errors_and_recovers() {
    let mut v = Valkey::start();
    let config = QueueConfig {
        command_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let q = ValkeyQueue::connect(&v.url(), config)
        .await
        .expect("connect");
    assert_eq!(
        q.enqueue(WorkItem::inbox("a", "A", 1))
            .await
            .expect("enqueue"),
        EnqueueOutcome::Enqueued
    );
    v.kill();
    let err = q.stats().await.expect_err("valkey is down");
    assert!(err.is_transient(), "typed transient error, got {err:?}");
    let err = q
        .claim(
            RunnerMode::Hybrid,
            &RunnerId::new("r"),
            LEASE,
            Duration::from_millis(100),
        )
        .await
        .expect_err("claim while down");
    assert!(
        matches!(err, QueueError::Connection(_) | QueueError::Timeout(_)),
        "{err:?}"
    );
    v.restart();
    assert!(
        eventually(Duration::from_secs(10), || async { q.ping().await.is_ok() }).await,
        "reconnects"
    );
    assert_eq!(
        q.enqueue(WorkItem::inbox("b", "B", 1))
            .await
            .expect("enqueue"),
        EnqueueOutcome::Enqueued
    );
    let c = q
        .claim(RunnerMode::Hybrid, &RunnerId::new("r"), LEASE, NO_WAIT)
        .await
        .expect("claim")
        .expect("item");
    assert_eq!(c.item.agent_id.as_str(), "b");
    assert!(q.complete(&c.activation_id).await.expect("complete"));
}

/// Valkey only: the layout operators inspect with redis-cli (design §4).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_keys_follow_the_design() {
    let v = Valkey::start();
    let q = ValkeyQueue::connect(&v.url(), QueueConfig::default())
        .await
        .expect("connect");
    q.enqueue(WorkItem::inbox("a", "A", 1))
        .await
        .expect("enqueue");
    q.enqueue(WorkItem::discovery("b", "B"))
        .await
        .expect("enqueue");
    assert!(
        v.command(&["LLEN", "work:queue:high"])
            .expect("llen")
            .starts_with(":1")
    );
    assert!(
        v.command(&["SISMEMBER", "work:queued", "a"])
            .expect("sismember")
            .starts_with(":1")
    );
    let c = q
        .claim(
            RunnerMode::Notification,
            &RunnerId::new("r9"),
            LEASE,
            NO_WAIT,
        )
        .await
        .expect("claim")
        .expect("item");
    let act = keys::activation(&c.activation_id);
    let runner = v.command(&["HGET", &act, "runner"]).expect("hget");
    assert!(runner.contains("r9"), "{runner}");
    let ttl = v.command(&["PTTL", &act]).expect("pttl");
    let ttl: i64 = ttl
        .trim_start_matches(':')
        .trim()
        .parse()
        .expect("ttl number");
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "activation TTL is the lease: {ttl}"
    );
    assert!(
        v.command(&["HGET", "work:active", "a"])
            .expect("hget")
            .contains(c.activation_id.as_str())
    );
    assert!(
        v.command(&["ZSCORE", "work:leases", c.activation_id.as_str()])
            .expect("zscore")
            .contains(&c.deadline_ms.to_string())
    );
    assert!(
        v.command(&["SISMEMBER", "work:queued", "a"])
            .expect("sismember")
            .starts_with(":0")
    );
    // the wake-up tokens track waiting items: one left, for b
    assert!(
        v.command(&["LLEN", "work:signal:discovery"])
            .expect("llen")
            .starts_with(":1")
    );
    assert!(
        v.command(&["LLEN", "work:signal:inbox"])
            .expect("llen")
            .starts_with(":0")
    );
    // `DEL work:backoff` is how an operator clears every breaker; it must not break anything
    v.command(&["DEL", "work:backoff"]).expect("del");
    assert!(q.complete(&c.activation_id).await.expect("complete"));
    assert!(
        v.command(&["EXISTS", &act])
            .expect("exists")
            .starts_with(":0")
    );
    assert!(
        v.command(&["HLEN", "work:inflight"])
            .expect("hlen")
            .starts_with(":0")
    );
}

/// Valkey only: the reaper repairs bookkeeping that hand edits (or the Python original, which kept
/// runner ids in `work:active` forever) left behind, so no agent is refused work for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_reaper_repairs_hand_edited_bookkeeping() {
    let v = Valkey::start();
    let q = ValkeyQueue::connect(&v.url(), QueueConfig::default())
        .await
        .expect("connect");
    q.enqueue(WorkItem::inbox("a", "A", 1))
        .await
        .expect("enqueue");
    v.command(&["DEL", "work:queue:high"]).expect("del");
    let again = q
        .enqueue(WorkItem::inbox("a", "A", 1))
        .await
        .expect("enqueue");
    assert_eq!(
        again,
        EnqueueOutcome::AlreadyQueued,
        "stale work:queued member"
    );
    v.command(&["HSET", "work:active", "b", "runner-from-the-old-fleet"])
        .expect("hset");
    let b = q
        .enqueue(WorkItem::inbox("b", "B", 1))
        .await
        .expect("enqueue");
    assert_eq!(b, EnqueueOutcome::AgentActive, "stale work:active entry");

    let report = q
        .reap(chrono::Utc::now().timestamp_millis())
        .await
        .expect("reap");
    assert_eq!((report.orphaned, report.requeued, report.dead), (2, 0, 0));
    for agent in ["a", "b"] {
        let outcome = q
            .enqueue(WorkItem::inbox(agent, "", 1))
            .await
            .expect("enqueue");
        assert_eq!(outcome, EnqueueOutcome::Enqueued, "{agent}");
    }
    let report = q
        .reap(chrono::Utc::now().timestamp_millis())
        .await
        .expect("reap");
    assert!(
        report.is_empty(),
        "consistent state is left alone: {report:?}"
    );
}

async fn items_of_the_original_fleet_get_a_stable_id(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    // the Python coordinator's shape: no id, no attempt, unknown fields
    h.push_raw(
        Priority::High,
        r#"{"agent_id":"old","agent_name":"Old","task_type":"inbox","priority":"high","inbox_count":2,"created_at":1738400000.5,"extra":1}"#,
    );
    let first = h.claim(RunnerMode::Hybrid).await.expect("item");
    assert_eq!((first.item.inbox_count, first.item.attempt), (2, 0));
    let failed = h
        .queue
        .fail(&first.activation_id, "hub 502", true)
        .await
        .expect("fail");
    assert_eq!(failed, FailOutcome::Requeued { attempt: 1 });
    let second = h.claim(RunnerMode::Hybrid).await.expect("requeued item");
    assert_eq!(
        second.item.id, first.item.id,
        "the id given at the first claim is kept"
    );
    assert_eq!(second.item.attempt, 1);
    assert!((second.item.created_at - 1_738_400_000.5).abs() < 0.001);
}

async fn a_wake_up_a_hybrid_claimer_cannot_use_reaches_another_claimer(b: Backend) {
    let h = b.start(QueueConfig::default()).await;
    let spawn_claimer = |mode: RunnerMode| {
        let q = h.queue.clone();
        tokio::spawn(async move {
            let c = q
                .claim(
                    mode,
                    &RunnerId::new(mode.as_str()),
                    LEASE,
                    Duration::from_secs(10),
                )
                .await;
            (c, Instant::now())
        })
    };
    // the hybrid claimer waits longest, so it is served the next inbox wake-up first
    let hybrid = spawn_claimer(RunnerMode::Hybrid);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.claimers_waiting() == 1
        })
        .await
    );
    let notification = spawn_claimer(RunnerMode::Notification);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.claimers_waiting() == 2
        })
        .await
    );
    // discovery work that came without a wake-up (pushed by hand), then inbox work in `low`
    h.push_raw(Priority::Normal, &WorkItem::discovery("d", "").to_json());
    let sent = Instant::now();
    h.enqueue(with_priority(WorkItem::inbox("i", "", 1), Priority::Low))
        .await;
    // the hybrid claimer takes the discovery item (normal before low) and passes the inbox
    // wake-up on, so the notification claimer gets the inbox item at once
    let (n, n_at) = notification.await.expect("join");
    let n = n.expect("claim").expect("notification claimer woken");
    assert_eq!(n.item.agent_id.as_str(), "i");
    assert!(
        n_at - sent < Duration::from_millis(100),
        "took {:?}",
        n_at - sent
    );
    let (hy, _) = hybrid.await.expect("join");
    assert_eq!(
        hy.expect("claim")
            .expect("hybrid claims")
            .item
            .agent_id
            .as_str(),
        "d"
    );
}
