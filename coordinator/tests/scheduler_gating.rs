//! The scheduler only enqueues while this replica leads, checked before every batch and item.

use async_trait::async_trait;
use botburrow_coordinator::election::{ElectionError, ElectionTiming, LeaderElector, Leadership};
use botburrow_coordinator::metrics::CoordinatorMetrics;
use botburrow_coordinator::scheduler::{Scheduler, SchedulerError, SchedulerTuning};
use botburrow_shared::health::new_registry;
use botburrow_shared::hub::{AgentSummary, HubClient};
use botburrow_shared::ids::AgentId;
use botburrow_shared::queue::{MemoryQueue, QueueConfig, WorkQueue};
use botburrow_shared::work::TaskType;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// An elector whose answer the test controls.
struct Switch(Arc<AtomicBool>);

#[async_trait]
impl LeaderElector for Switch {
    async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    async fn release(&self) -> Result<(), ElectionError> {
        Ok(())
    }
    fn identity(&self) -> &str {
        "switch"
    }
    fn timing(&self) -> ElectionTiming {
        ElectionTiming::default()
    }
    fn backend(&self) -> &'static str {
        "test"
    }
}

fn agent(id: &str) -> AgentSummary {
    serde_json::from_value(serde_json::json!({"id": id, "name": id, "notification_count": 2}))
        .expect("summary")
}

#[tokio::test(start_paused = true)]
async fn enqueue_batches_require_current_leadership() {
    let switch = Arc::new(AtomicBool::new(true));
    let metrics = CoordinatorMetrics::register(&new_registry());
    let (leadership, handle) =
        Leadership::new(Box::new(Switch(switch.clone())), metrics.is_leader.clone());
    let queue = Arc::new(MemoryQueue::new(QueueConfig::default()));
    // The Hub is never contacted by enqueue_batch; the client only has to exist.
    let hub = HubClient::new("http://127.0.0.1:9", None).expect("client");
    let scheduler = Scheduler::new(
        queue.clone(),
        hub,
        handle.clone(),
        metrics.clone(),
        SchedulerTuning::default(),
    );

    // Not yet elected: nothing is enqueued.
    let err = scheduler
        .enqueue_batch(&[agent("a")], TaskType::Inbox)
        .await
        .expect_err("not leader");
    assert!(matches!(err, SchedulerError::NotLeader));
    assert_eq!(queue.stats().await.expect("stats").total_waiting(), 0);

    assert!(leadership.tick().await);
    let r = scheduler
        .enqueue_batch(&[agent("a"), agent("b")], TaskType::Inbox)
        .await
        .expect("leader enqueues");
    assert_eq!(r.enqueued, 2);
    // Duplicates are the queue's business: counted as skipped, not enqueued twice.
    let r = scheduler
        .enqueue_batch(&[agent("a")], TaskType::Inbox)
        .await
        .expect("leader enqueues");
    assert_eq!((r.enqueued, r.skipped), (0, 1));

    // Renewal fails: the very next batch is refused.
    switch.store(false, Ordering::SeqCst);
    assert!(!leadership.tick().await);
    assert!(
        scheduler
            .enqueue_batch(&[agent("c")], TaskType::Discovery)
            .await
            .is_err()
    );

    // Re-elected, then the driver stalls past the renew deadline: refused without any tick.
    switch.store(true, Ordering::SeqCst);
    assert!(leadership.tick().await);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(
        scheduler
            .enqueue_batch(&[agent("c")], TaskType::Discovery)
            .await
            .is_err()
    );
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.total_waiting(), 2);
    let peek = queue
        .peek(botburrow_shared::work::Priority::High, 10)
        .await
        .expect("peek");
    let ids: Vec<&AgentId> = peek.iter().map(|i| &i.agent_id).collect();
    assert_eq!(ids, [&AgentId::new("a"), &AgentId::new("b")]);
    assert_eq!(peek[0].inbox_count, 2);
}
