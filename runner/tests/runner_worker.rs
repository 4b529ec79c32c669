//! The claim loop against the real Valkey queue, with a scripted activator standing in for the
//! pipeline (the pipeline itself is tested end to end in `runner_activation.rs`).

use async_trait::async_trait;
use botburrow_runner::metrics::RunnerMetrics;
use botburrow_runner::worker::{Activator, Outcome, Worker, WorkerConfig};
use botburrow_shared::health::{SharedRegistry, new_registry, render_metrics};
use botburrow_shared::ids::{ActivationId, RunnerId};
use botburrow_shared::queue::{Claim, QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::work::{Priority, RunnerMode, WorkItem};
use botburrow_testkit::{Valkey, eventually};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the scripted activator does for an agent.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Returns `Completed` at once.
    Complete,
    /// Waits for `release` (or cancellation) then completes.
    WaitForRelease,
    /// Waits until cancelled, then reports `Interrupted`.
    Hang,
    /// Fails retryably.
    Fail,
    /// Panics (a bug in the pipeline).
    Panic,
    /// Works for the given time (longer than several leases), ignoring nothing.
    WorkFor(Duration),
}

#[derive(Default)]
struct Log {
    started: Vec<(ActivationId, String)>,
    items: Vec<WorkItem>,
    cancelled: Vec<(ActivationId, Duration)>,
}

struct Scripted {
    behaviour: Mutex<std::collections::HashMap<String, Behaviour>>,
    release: tokio::sync::Notify,
    log: Mutex<Log>,
}

impl Scripted {
    fn new(pairs: &[(&str, Behaviour)]) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Mutex::new(pairs.iter().map(|(a, b)| (a.to_string(), *b)).collect()),
            release: tokio::sync::Notify::new(),
            log: Mutex::new(Log::default()),
        })
    }
    fn started(&self) -> Vec<(ActivationId, String)> {
        self.log.lock().expect("lock").started.clone()
    }
    fn items(&self) -> Vec<WorkItem> {
        self.log.lock().expect("lock").items.clone()
    }
    fn cancelled(&self) -> Vec<(ActivationId, Duration)> {
        self.log.lock().expect("lock").cancelled.clone()
    }
}

#[async_trait]
impl Activator for Scripted {
    async fn activate(
        &self,
        claim: &Claim,
        _deadline: Instant,
        cancel: CancellationToken,
    ) -> Outcome {
        let agent = claim.item.agent_id.to_string();
        {
            let mut log = self.log.lock().expect("lock");
            log.started
                .push((claim.activation_id.clone(), agent.clone()));
            log.items.push(claim.item.clone());
        }
        let b = self
            .behaviour
            .lock()
            .expect("lock")
            .get(&agent)
            .copied()
            .unwrap_or(Behaviour::Complete);
        let t0 = Instant::now();
        let interrupted = |this: &Self| {
            this.log
                .lock()
                .expect("lock")
                .cancelled
                .push((claim.activation_id.clone(), t0.elapsed()));
            Outcome::Interrupted
        };
        match b {
            Behaviour::Complete => Outcome::Completed {
                handled: 1,
                skipped: 0,
            },
            Behaviour::Fail => Outcome::Failed {
                error: "model said no".into(),
                retryable: true,
            },
            Behaviour::Panic => panic!("activator bug"),
            Behaviour::WaitForRelease => tokio::select! {
                _ = self.release.notified() => Outcome::Completed { handled: 1, skipped: 0 },
                _ = cancel.cancelled() => interrupted(self),
            },
            Behaviour::Hang => {
                cancel.cancelled().await;
                interrupted(self)
            }
            Behaviour::WorkFor(d) => tokio::select! {
                _ = tokio::time::sleep(d) => Outcome::Completed { handled: 1, skipped: 0 },
                _ = cancel.cancelled() => interrupted(self),
            },
        }
    }
}

struct Harness {
    _valkey: Valkey,
    queue: Arc<ValkeyQueue>,
    registry: SharedRegistry,
}

async fn harness(config: QueueConfig) -> Harness {
    let valkey = Valkey::start();
    let queue = Arc::new(
        ValkeyQueue::connect(&valkey.url(), config)
            .await
            .expect("queue"),
    );
    Harness {
        _valkey: valkey,
        queue,
        registry: new_registry(),
    }
}

fn worker_cfg(mode: RunnerMode, max: usize) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(
        RunnerId::new("r-test"),
        mode,
        max,
        Duration::from_secs(30),
        Duration::from_secs(5),
    );
    cfg.lease = Duration::from_millis(600);
    cfg.claim_wait = Duration::from_millis(200);
    cfg.wind_down = Duration::from_secs(2);
    cfg
}

fn spawn(
    h: &Harness,
    cfg: WorkerConfig,
    act: Arc<Scripted>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let metrics = RunnerMetrics::register(&h.registry);
    let worker = Worker::new(cfg, h.queue.clone(), act, metrics);
    let token = CancellationToken::new();
    let t = token.clone();
    (token, tokio::spawn(async move { worker.run(t).await }))
}

#[tokio::test]
async fn a_permit_is_taken_before_claiming_and_modes_filter_work() {
    let h = harness(QueueConfig::default()).await;
    let act = Scripted::new(&[
        ("a1", Behaviour::WaitForRelease),
        ("a2", Behaviour::WaitForRelease),
    ]);
    h.queue
        .enqueue(WorkItem::inbox("a1", "a1", 1))
        .await
        .expect("enqueue");
    h.queue
        .enqueue(WorkItem::inbox("a2", "a2", 1))
        .await
        .expect("enqueue");
    h.queue
        .enqueue(WorkItem::discovery("d1", "d1"))
        .await
        .expect("enqueue");
    let (stop, task) = spawn(&h, worker_cfg(RunnerMode::Notification, 1), act.clone());

    assert!(
        eventually(Duration::from_secs(5), || async {
            act.started().len() == 1
        })
        .await
    );
    // With its only permit busy the runner holds no second lease: a2 still waits in the queue.
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!(stats.active, 1, "{stats:?}");
    assert_eq!(stats.depth_of(Priority::High), 1, "{stats:?}");
    act.release.notify_one();
    assert!(
        eventually(Duration::from_secs(5), || async {
            act.started().len() == 2
        })
        .await
    );
    act.release.notify_one();
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.queue
                .stats()
                .await
                .map(|s| s.active == 0)
                .unwrap_or(false)
        })
        .await
    );
    // A notification runner never claims discovery work.
    let stats = h.queue.stats().await.expect("stats");
    assert_eq!(stats.depth_of(Priority::Normal), 1, "{stats:?}");
    assert_eq!(
        act.started()
            .iter()
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>(),
        vec!["a1", "a2"]
    );
    stop.cancel();
    task.await.expect("worker ends");
    let text = render_metrics(&h.registry);
    assert!(
        text.contains(
            "botburrow_activations_total{agent=\"a1\",task_type=\"inbox\",outcome=\"success\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("botburrow_activations_in_flight 0"), "{text}");
    assert!(
        text.contains("botburrow_queue_wait_seconds_count 2"),
        "{text}"
    );
}

#[tokio::test]
async fn the_lease_is_renewed_while_working_and_force_stop_cancels_within_seconds() {
    let h = harness(QueueConfig::default()).await;
    let act = Scripted::new(&[
        ("slow", Behaviour::WorkFor(Duration::from_millis(2_500))),
        ("stuck", Behaviour::Hang),
    ]);
    h.queue
        .enqueue(WorkItem::inbox("slow", "slow", 1))
        .await
        .expect("enqueue");
    let (stop, task) = spawn(&h, worker_cfg(RunnerMode::Hybrid, 2), act.clone());
    assert!(
        eventually(Duration::from_secs(5), || async {
            act.started().len() == 1
        })
        .await
    );
    // Four leases pass while it works: renewals keep it from being reaped.
    let until = Instant::now() + Duration::from_millis(2_000);
    while Instant::now() < until {
        let report = h
            .queue
            .reap(chrono::Utc::now().timestamp_millis())
            .await
            .expect("reap");
        assert!(report.is_empty(), "a renewed lease was reaped: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.queue
                .stats()
                .await
                .map(|s| s.active == 0)
                .unwrap_or(false)
        })
        .await
    );
    assert!(act.cancelled().is_empty());

    // Force-stop: DEL activation:{id} (what `botburrow activation stop` does).
    h.queue
        .enqueue(WorkItem::inbox("stuck", "stuck", 1))
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(5), || async {
            act.started().len() == 2
        })
        .await
    );
    let (id, _) = act.started()[1].clone();
    let stopped_at = Instant::now();
    assert!(h.queue.stop_activation(&id).await.expect("stop"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            !act.cancelled().is_empty()
        })
        .await
    );
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "force-stop took {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(act.cancelled()[0].0, id);
    stop.cancel();
    task.await.expect("worker ends");
    let text = render_metrics(&h.registry);
    assert!(text.contains("outcome=\"cancelled\"} 1"), "{text}");
}

#[tokio::test]
async fn the_activation_timeout_cancels_and_the_item_is_retried() {
    let h = harness(QueueConfig::default()).await;
    let act = Scripted::new(&[("hung", Behaviour::Hang)]);
    h.queue
        .enqueue(WorkItem::inbox("hung", "hung", 1))
        .await
        .expect("enqueue");
    let mut cfg = worker_cfg(RunnerMode::Hybrid, 1);
    cfg.activation_timeout = Duration::from_millis(400);
    let (stop, task) = spawn(&h, cfg, act.clone());
    assert!(
        eventually(Duration::from_secs(5), || async {
            !act.cancelled().is_empty()
        })
        .await
    );
    let (_, after) = act.cancelled()[0];
    assert!(
        after >= Duration::from_millis(350) && after < Duration::from_secs(3),
        "cancelled after {after:?}"
    );
    // Failed as retryable: requeued with attempt 1 and the reason, and claimed again.
    assert!(eventually(Duration::from_secs(5), || async { act.items().len() >= 2 }).await);
    let retry = act.items()[1].clone();
    assert_eq!(retry.agent_id.as_str(), "hung");
    assert_eq!(retry.attempt, 1);
    assert!(
        retry
            .last_error
            .clone()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        retry.last_error
    );
    assert_eq!(
        retry.id,
        act.items()[0].id,
        "the same work item, so idempotency keys carry over"
    );
    stop.cancel();
    task.await.expect("worker ends");
    let text = render_metrics(&h.registry);
    assert!(
        text.contains("agent=\"hung\",task_type=\"inbox\",outcome=\"timeout\""),
        "{text}"
    );
}

#[tokio::test]
async fn failures_requeue_and_trip_the_agents_backoff_after_the_threshold() {
    let config = QueueConfig {
        failure_threshold: 2,
        max_attempts: 10,
        ..QueueConfig::default()
    };
    let h = harness(config).await;
    let act = Scripted::new(&[("flaky", Behaviour::Fail)]);
    h.queue
        .enqueue(WorkItem::inbox("flaky", "flaky", 1))
        .await
        .expect("enqueue");
    let (stop, task) = spawn(&h, worker_cfg(RunnerMode::Hybrid, 1), act.clone());
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.queue
                .backoffs()
                .await
                .map(|b| !b.is_empty())
                .unwrap_or(false)
        })
        .await
    );
    let backoffs = h.queue.backoffs().await.expect("backoffs");
    assert_eq!(backoffs[0].agent_id.as_str(), "flaky");
    assert_eq!(backoffs[0].failures, 2);
    assert_eq!(
        act.started().len(),
        2,
        "first failure requeued, second opened the breaker"
    );
    stop.cancel();
    task.await.expect("worker ends");
    let text = render_metrics(&h.registry);
    assert!(
        text.contains("agent=\"flaky\",task_type=\"inbox\",outcome=\"failure\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_within_the_grace_and_releases_the_rest() {
    let h = harness(QueueConfig::default()).await;
    let act = Scripted::new(&[
        ("quick", Behaviour::WorkFor(Duration::from_millis(300))),
        ("stuck", Behaviour::Hang),
    ]);
    h.queue
        .enqueue(WorkItem::inbox("quick", "quick", 1))
        .await
        .expect("enqueue");
    h.queue
        .enqueue(WorkItem::inbox("stuck", "stuck", 1))
        .await
        .expect("enqueue");
    let mut cfg = worker_cfg(RunnerMode::Hybrid, 2);
    cfg.shutdown_grace = Duration::from_millis(800);
    let (stop, task) = spawn(&h, cfg, act.clone());
    assert!(
        eventually(Duration::from_secs(5), || async {
            act.started().len() == 2
        })
        .await
    );
    let t0 = Instant::now();
    stop.cancel();
    // No new claims after shutdown began.
    h.queue
        .enqueue(WorkItem::inbox("late", "late", 1))
        .await
        .expect("enqueue");
    task.await.expect("worker ends");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(act.started().len(), 2);
    // `quick` finished within the grace; `stuck` was cancelled and handed back unchanged.
    assert_eq!(act.cancelled().len(), 1);
    let high = h.queue.peek(Priority::High, 10).await.expect("peek");
    let agents: Vec<_> = high.iter().map(|i| i.agent_id.to_string()).collect();
    assert!(
        agents.contains(&"stuck".to_string()) && agents.contains(&"late".to_string()),
        "{agents:?}"
    );
    let stuck = high
        .iter()
        .find(|i| i.agent_id.as_str() == "stuck")
        .expect("stuck requeued");
    assert_eq!(stuck.attempt, 0, "release keeps the attempt");
    assert_eq!(h.queue.stats().await.expect("stats").active, 0);
    let text = render_metrics(&h.registry);
    assert!(
        text.contains("agent=\"quick\",task_type=\"inbox\",outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("agent=\"stuck\",task_type=\"inbox\",outcome=\"released\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_panicking_activation_fails_its_item_instead_of_leaking_the_lease() {
    let h = harness(QueueConfig::default()).await;
    let act = Scripted::new(&[("buggy", Behaviour::Panic)]);
    h.queue
        .enqueue(WorkItem::inbox("buggy", "buggy", 1))
        .await
        .expect("enqueue");
    let (stop, task) = spawn(&h, worker_cfg(RunnerMode::Hybrid, 1), act.clone());
    // Failed retryably, so it comes back with attempt 1 and the reason.
    assert!(eventually(Duration::from_secs(5), || async { act.items().len() >= 2 }).await);
    let retry = act.items()[1].clone();
    assert_eq!(retry.attempt, 1);
    assert_eq!(retry.last_error.as_deref(), Some("activation panicked"));
    stop.cancel();
    task.await.expect("worker ends");
    let text = render_metrics(&h.registry);
    assert!(
        text.contains("agent=\"buggy\",task_type=\"inbox\",outcome=\"failure\""),
        "{text}"
    );
    assert!(text.contains("botburrow_activations_in_flight 0"), "{text}");
}
