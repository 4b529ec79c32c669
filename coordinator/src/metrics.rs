//! The coordinator's Prometheus metrics, declared and registered in one place so every name
//! follows `botburrow_<subsystem>_<name>_<unit>` and every declared metric has an updater.

use botburrow_shared::health::SharedRegistry;
use botburrow_shared::work::{Priority, TaskType};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicU64;

/// `task_type` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskTypeLabel {
    /// `inbox` or `discovery`.
    pub task_type: &'static str,
}

/// `priority` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    /// `high`, `normal` or `low`.
    pub priority: &'static str,
}

/// `outcome` label of the reaper counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReapLabel {
    /// `requeued`, `dead` or `orphaned`.
    pub outcome: &'static str,
}

/// Handles on every coordinator metric (clones share the underlying values).
#[derive(Clone)]
pub struct CoordinatorMetrics {
    /// `botburrow_coordinator_is_leader`: 1 while this replica leads.
    pub is_leader: Gauge,
    /// `botburrow_coordinator_poll_duration_seconds`: one Hub poll (long-poll or fallback).
    pub poll_duration: Histogram,
    /// `botburrow_coordinator_enqueued_total{task_type}`: items actually added to the queue.
    pub enqueued: Family<TaskTypeLabel, Counter>,
    /// `botburrow_coordinator_hub_errors_total`: failed Hub calls of the poll and discovery loops.
    pub hub_errors: Counter,
    /// `botburrow_coordinator_reaped_total{outcome}`: expired leases handled by the reaper.
    pub reaped: Family<ReapLabel, Counter>,
    /// `botburrow_queue_depth{priority}`: items waiting per list.
    pub queue_depth: Family<PriorityLabel, Gauge>,
    /// `botburrow_queue_active`: activations holding a lease.
    pub queue_active: Gauge,
    /// `botburrow_queue_agents_in_backoff`: agents whose circuit breaker is open.
    pub agents_in_backoff: Gauge,
    /// `botburrow_queue_dead_letters`: size of `work:dead`.
    pub dead_letters: Gauge,
    /// `botburrow_queue_oldest_age_seconds`: wait time of the oldest waiting item (0 if none).
    pub oldest_age: Gauge<f64, AtomicU64>,
    /// `botburrow_runners_alive`: live `runner:heartbeat:*` keys.
    pub runners_alive: Gauge,
}

impl CoordinatorMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &SharedRegistry) -> Self {
        let m = Self {
            is_leader: Gauge::default(),
            // Long-polls last up to LONG_POLL_TIMEOUT (30 s by default): buckets reach 60 s.
            poll_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0,
                60.0,
            ]),
            enqueued: Family::default(),
            hub_errors: Counter::default(),
            reaped: Family::default(),
            queue_depth: Family::default(),
            queue_active: Gauge::default(),
            agents_in_backoff: Gauge::default(),
            dead_letters: Gauge::default(),
            oldest_age: Gauge::default(),
            runners_alive: Gauge::default(),
        };
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "botburrow_coordinator_is_leader",
            "1 while this coordinator replica is the leader",
            m.is_leader.clone(),
        );
        r.register(
            "botburrow_coordinator_poll_duration_seconds",
            "Duration of one Hub poll (long-poll or fallback list)",
            m.poll_duration.clone(),
        );
        r.register(
            "botburrow_coordinator_enqueued",
            "Work items added to the queue, by task type",
            m.enqueued.clone(),
        );
        r.register(
            "botburrow_coordinator_hub_errors",
            "Failed Hub calls of the poll and discovery loops",
            m.hub_errors.clone(),
        );
        r.register(
            "botburrow_coordinator_reaped",
            "Expired activation leases handled by the reaper, by outcome",
            m.reaped.clone(),
        );
        r.register(
            "botburrow_queue_depth",
            "Work items waiting, by priority",
            m.queue_depth.clone(),
        );
        r.register(
            "botburrow_queue_active",
            "Activations currently holding a lease",
            m.queue_active.clone(),
        );
        r.register(
            "botburrow_queue_agents_in_backoff",
            "Agents whose circuit breaker is open",
            m.agents_in_backoff.clone(),
        );
        r.register(
            "botburrow_queue_dead_letters",
            "Items in the dead-letter list",
            m.dead_letters.clone(),
        );
        r.register(
            "botburrow_queue_oldest_age_seconds",
            "Age of the oldest waiting work item",
            m.oldest_age.clone(),
        );
        r.register(
            "botburrow_runners_alive",
            "Runners with a live heartbeat key",
            m.runners_alive.clone(),
        );
        drop(r);
        for p in Priority::ALL {
            m.queue_depth
                .get_or_create(&PriorityLabel {
                    priority: p.as_str(),
                })
                .set(0);
        }
        for t in [TaskType::Inbox, TaskType::Discovery] {
            let _ = m.enqueued.get_or_create(&TaskTypeLabel {
                task_type: t.as_str(),
            });
        }
        m
    }

    /// Counts one item added to the queue.
    pub fn count_enqueued(&self, task: TaskType) {
        self.enqueued
            .get_or_create(&TaskTypeLabel {
                task_type: task.as_str(),
            })
            .inc();
    }
}
