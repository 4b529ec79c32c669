//! The runner's own Prometheus metrics (activations, queue wait, heartbeat, config errors,
//! skipped notifications). LLM and MCP metrics live with their modules.

use botburrow_shared::health::SharedRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::atomic::AtomicU64;

/// Labels of `botburrow_activations_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActivationLabels {
    /// Agent id.
    pub agent: String,
    /// `inbox` or `discovery`.
    pub task_type: String,
    /// `success`, `failure`, `skipped`, `timeout`, `cancelled`, `released`.
    pub outcome: String,
}

/// Labels with one agent.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    /// Agent id.
    pub agent: String,
}

/// Labels with one reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (e.g. `follow`, `like`, `unknown_type`, `respond_to_mentions_off`, `no_hub_write_grant`).
    pub reason: String,
}

/// Labels with one task type.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    /// `inbox` or `discovery`.
    pub task_type: String,
}

/// Every runner metric; cheap to clone (handles share their atomics).
#[derive(Clone)]
pub struct RunnerMetrics {
    /// Finished activations by agent, task type and outcome.
    pub activations: Family<ActivationLabels, Counter>,
    /// Wall time of one activation.
    pub activation_duration: Family<TaskLabel, Histogram>,
    /// Activations running now in this runner.
    pub in_flight: Gauge,
    /// Time from enqueue to claim.
    pub queue_wait: Histogram,
    /// Last heartbeat written (epoch seconds).
    pub heartbeat_timestamp: Gauge<f64, AtomicU64>,
    /// Agent definitions that failed to load or validate.
    pub config_errors: Family<AgentLabel, Counter>,
    /// Notifications marked read without an LLM call.
    pub notifications_skipped: Family<ReasonLabel, Counter>,
}

impl RunnerMetrics {
    /// Creates the metrics and registers them into the process registry.
    pub fn register(registry: &SharedRegistry) -> Self {
        let m = Self {
            activations: Family::default(),
            activation_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 14))
            }),
            in_flight: Gauge::default(),
            queue_wait: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            heartbeat_timestamp: Gauge::default(),
            config_errors: Family::default(),
            notifications_skipped: Family::default(),
        };
        let mut reg = match registry.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        reg.register(
            "botburrow_activations",
            "Finished activations by agent, task type and outcome",
            m.activations.clone(),
        );
        reg.register(
            "botburrow_activation_duration_seconds",
            "Wall time of one activation",
            m.activation_duration.clone(),
        );
        reg.register(
            "botburrow_activations_in_flight",
            "Activations running now in this runner",
            m.in_flight.clone(),
        );
        reg.register(
            "botburrow_queue_wait_seconds",
            "Time a work item waited between enqueue and claim",
            m.queue_wait.clone(),
        );
        reg.register(
            "botburrow_runner_heartbeat_timestamp_seconds",
            "Epoch seconds of the last heartbeat this runner wrote",
            m.heartbeat_timestamp.clone(),
        );
        reg.register(
            "botburrow_agent_config_errors",
            "Agent definitions that failed to load or validate",
            m.config_errors.clone(),
        );
        reg.register(
            "botburrow_notifications_skipped",
            "Notifications marked read without an LLM call, by reason",
            m.notifications_skipped.clone(),
        );
        m
    }

    /// Counts one finished activation.
    pub fn activation(&self, agent: &str, task_type: &str, outcome: &str) {
        self.activations
            .get_or_create(&ActivationLabels {
                agent: agent.to_string(),
                task_type: task_type.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts one skipped notification.
    pub fn skipped(&self, reason: &str) {
        self.notifications_skipped
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one config error.
    pub fn config_error(&self, agent: &str) {
        self.config_errors
            .get_or_create(&AgentLabel {
                agent: agent.to_string(),
            })
            .inc();
    }
}
