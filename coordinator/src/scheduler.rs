//! Turning Hub state into work items, on the leader only: the notification poll loop (long-poll,
//! with a fallback to `?has_notifications=true` when the Hub answers 404) and the discovery loop
//! (stale agents every `DISCOVERY_INTERVAL`). Leadership is re-checked before every enqueue
//! batch; Hub errors back off exponentially with jitter and are logged once per state change.

use crate::election::LeaderHandle;
use crate::latch::FailureLatch;
use crate::metrics::CoordinatorMetrics;
use botburrow_shared::hub::{AgentSummary, HubClient, PollOutcome};
use botburrow_shared::queue::{EnqueueOutcome, QueueError, WorkQueue};
use botburrow_shared::work::{TaskType, WorkItem};
use botburrow_shared::startup::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why an enqueue batch stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Leadership was lost before or during the batch.
    #[error("not the leader")]
    NotLeader,
    /// The queue refused.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A long-poll that answers "nothing" faster than this did not wait: pause before the next one.
const MIN_EMPTY_POLL: Duration = Duration::from_millis(500);

/// Knobs of the loops that are not operator settings (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct SchedulerTuning {
    /// Long-poll `timeout` sent to the Hub.
    pub long_poll_timeout: Duration,
    /// Agents per long-poll answer.
    pub batch_size: u32,
    /// Pause between fallback polls (`POLL_INTERVAL`).
    pub poll_interval: Duration,
    /// In fallback mode, probe the long-poll again after this many fallback polls.
    pub reprobe_every: u32,
    /// Pause after a poll that found only agents already queued or active: the long-poll is
    /// level-triggered and would otherwise return at once, again and again. Short (25 ms), because
    /// an agent whose activation just ended must be re-enqueued promptly for mentions that arrived
    /// meanwhile, and a new mention for another agent waits for the next poll: this pause is most
    /// of a mention's queueing delay under load. At most 40 cheap polls a second, by the leader
    /// only, and only while every agent with unread notifications is already queued or active.
    pub busy_repoll: Duration,
    /// How often stale agents are looked up (`DISCOVERY_INTERVAL`).
    pub discovery_interval: Duration,
    /// Staleness that makes an agent due for discovery (`MIN_STALENESS_SECONDS`).
    pub min_staleness: Duration,
    /// First delay after a Hub error.
    pub backoff_base: Duration,
    /// Longest delay after repeated Hub errors.
    pub backoff_max: Duration,
}

impl Default for SchedulerTuning {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(30),
            batch_size: 100,
            poll_interval: Duration::from_secs(30),
            reprobe_every: 10,
            busy_repoll: Duration::from_millis(25),
            discovery_interval: Duration::from_secs(60),
            min_staleness: Duration::from_secs(900),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Everything the leader-only loops share.
#[derive(Clone)]
pub struct Scheduler {
    queue: Arc<dyn WorkQueue>,
    hub: HubClient,
    leader: LeaderHandle,
    metrics: CoordinatorMetrics,
    tuning: SchedulerTuning,
    hub_health: Arc<FailureLatch>,
    queue_health: Arc<FailureLatch>,
}

/// What one enqueue batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// Items added to the queue.
    pub enqueued: usize,
    /// Items dropped because the agent already had one waiting, was active or backing off.
    pub skipped: usize,
}

impl Scheduler {
    /// Builds the scheduler.
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        hub: HubClient,
        leader: LeaderHandle,
        metrics: CoordinatorMetrics,
        tuning: SchedulerTuning,
    ) -> Self {
        Self {
            queue,
            hub,
            leader,
            metrics,
            tuning,
            hub_health: Arc::new(FailureLatch::new("hub")),
            queue_health: Arc::new(FailureLatch::new("queue")),
        }
    }

    /// Enqueues one item per agent, re-checking leadership before the batch and before each item.
    pub async fn enqueue_batch(
        &self,
        agents: &[AgentSummary],
        task: TaskType,
    ) -> Result<BatchReport, SchedulerError> {
        let mut report = BatchReport::default();
        if !self.leader.is_leader() {
            tracing::debug!(
                task_type = task.as_str(),
                agents = agents.len(),
                "not_leader_skipping_enqueue"
            );
            return Err(SchedulerError::NotLeader);
        }
        for agent in agents {
            if !self.leader.is_leader() {
                return Err(SchedulerError::NotLeader);
            }
            let item = match task {
                TaskType::Inbox => WorkItem::inbox(
                    agent.id.clone(),
                    agent.name.clone(),
                    agent.notification_count,
                ),
                TaskType::Discovery => WorkItem::discovery(agent.id.clone(), agent.name.clone()),
            };
            let (work_id, priority) = (item.id.clone(), item.priority);
            let outcome = match self.queue.enqueue(item).await {
                Ok(o) => {
                    self.queue_health.ok();
                    o
                }
                Err(e) => {
                    self.queue_health.fail("enqueue", &e);
                    return Err(e.into());
                }
            };
            match outcome {
                EnqueueOutcome::Enqueued => {
                    report.enqueued += 1;
                    self.metrics.count_enqueued(task);
                    tracing::info!(
                        agent_id = %agent.id,
                        work_id = %work_id,
                        task_type = task.as_str(),
                        priority = priority.as_str(),
                        inbox_count = agent.notification_count,
                        "work_enqueued"
                    );
                }
                other => {
                    report.skipped += 1;
                    tracing::debug!(agent_id = %agent.id, task_type = task.as_str(), outcome = ?other, "work_not_enqueued");
                }
            }
        }
        Ok(report)
    }

    /// Sleeps unless shutdown fires first; returns false on shutdown.
    async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// The notification poll loop; runs until `shutdown`, working only while leader.
    pub async fn run_poll_loop(self, shutdown: CancellationToken) {
        let mut long_poll = true;
        let mut fallback_polls = 0u32;
        let mut backoff = Backoff::new(self.tuning.backoff_base, self.tuning.backoff_max);
        loop {
            if !self.leader.wait_for_leadership(&shutdown).await {
                return;
            }
            let started = Instant::now();
            let result = if long_poll {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    // A long-poll can outlive our leadership: abandon it the moment we lose it.
                    _ = self.leader.lost() => continue,
                    r = self.hub.poll_notifications(self.tuning.long_poll_timeout, self.tuning.batch_size) => r,
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.hub.agents_with_notifications() => r.map(PollOutcome::Agents),
                }
            };
            self.metrics
                .poll_duration
                .observe(started.elapsed().as_secs_f64());
            let agents = match result {
                Ok(PollOutcome::Agents(agents)) => {
                    self.hub_health.ok();
                    backoff.reset();
                    agents
                }
                Ok(PollOutcome::Unsupported) => {
                    self.hub_health.ok();
                    tracing::info!(
                        poll_interval_s = self.tuning.poll_interval.as_secs(),
                        "long_poll_not_available_falling_back"
                    );
                    long_poll = false;
                    fallback_polls = 0;
                    continue;
                }
                Err(e) => {
                    self.metrics.hub_errors.inc();
                    let call = if long_poll {
                        "poll"
                    } else {
                        "agents_with_notifications"
                    };
                    self.hub_health.fail(call, &e);
                    if !Self::pause(&shutdown, backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };
            let report = match self.enqueue_batch(&agents, TaskType::Inbox).await {
                Ok(r) => r,
                Err(SchedulerError::NotLeader) => continue,
                Err(SchedulerError::Queue(_)) => {
                    // Logged once per outage by the queue latch.
                    if !Self::pause(&shutdown, backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };
            if long_poll {
                // Level-triggered long-poll: if nothing new came of it, do not spin on the same
                // agents. An empty answer that came back at once means a Hub that ignores
                // `timeout`; do not spin on that either.
                let nothing_new = !agents.is_empty() && report.enqueued == 0;
                let too_fast = agents.is_empty() && started.elapsed() < MIN_EMPTY_POLL;
                if (nothing_new || too_fast)
                    && !Self::pause(&shutdown, self.tuning.busy_repoll).await
                {
                    return;
                }
            } else {
                fallback_polls += 1;
                if fallback_polls >= self.tuning.reprobe_every {
                    tracing::debug!("long_poll_reprobe");
                    long_poll = true;
                    fallback_polls = 0;
                }
                if !Self::pause(&shutdown, self.tuning.poll_interval).await {
                    return;
                }
            }
        }
    }

    /// The discovery loop: every `discovery_interval` (a tokio interval), stale agents become
    /// discovery work; only the leader asks the Hub.
    pub async fn run_discovery_loop(self, shutdown: CancellationToken) {
        // First lookup one interval after start, so a restart or failover does not stampede.
        let period = self.tuning.discovery_interval;
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if !self.leader.is_leader() {
                continue;
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.hub.stale_agents(self.tuning.min_staleness) => r,
            };
            match result {
                Ok(agents) => {
                    self.hub_health.ok();
                    match self.enqueue_batch(&agents, TaskType::Discovery).await {
                        Ok(r) => tracing::debug!(
                            stale = agents.len(),
                            enqueued = r.enqueued,
                            "discovery_checked"
                        ),
                        // Queue failures are logged once per outage by the queue latch.
                        Err(SchedulerError::NotLeader | SchedulerError::Queue(_)) => {}
                    }
                }
                Err(e) => {
                    self.metrics.hub_errors.inc();
                    self.hub_health.fail("stale_agents", &e);
                }
            }
        }
    }
}

