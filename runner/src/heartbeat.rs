//! Runner liveness: `runner:heartbeat:{runner_id}` (JSON with mode and load, with a TTL) written
//! every few seconds, and the `botburrow_runner_heartbeat_timestamp_seconds` gauge.

use crate::kv::{KvError, KvStore};
use crate::metrics::RunnerMetrics;
use botburrow_shared::ids::RunnerId;
use botburrow_shared::valkey;
use botburrow_shared::work::RunnerMode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The heartbeat value operators read with `redis-cli GET runner:heartbeat:<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    /// The runner.
    pub runner_id: String,
    /// `notification`, `exploration` or `hybrid`.
    pub mode: String,
    /// Activations running now.
    pub in_flight: usize,
    /// `MAX_CONCURRENT_ACTIVATIONS`.
    pub max: usize,
    /// Epoch seconds when written.
    pub timestamp: f64,
}

/// Writes heartbeats; `in_flight` is shared with the claim loop.
#[derive(Clone)]
pub struct Heartbeat {
    kv: Arc<dyn KvStore>,
    runner: RunnerId,
    mode: RunnerMode,
    max: usize,
    in_flight: Arc<AtomicUsize>,
    metrics: RunnerMetrics,
    /// Time between beats.
    pub interval: Duration,
    /// Key TTL: a runner that stops beating disappears after this.
    pub ttl: Duration,
}

impl Heartbeat {
    /// A heartbeat every 10 s with a 30 s TTL.
    pub fn new(
        kv: Arc<dyn KvStore>,
        runner: RunnerId,
        mode: RunnerMode,
        max: usize,
        in_flight: Arc<AtomicUsize>,
        metrics: RunnerMetrics,
    ) -> Self {
        Self {
            kv,
            runner,
            mode,
            max,
            in_flight,
            metrics,
            interval: Duration::from_secs(10),
            ttl: Duration::from_secs(30),
        }
    }

    /// Writes one heartbeat now.
    pub async fn beat(&self) -> Result<(), KvError> {
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        let record = HeartbeatRecord {
            runner_id: self.runner.to_string(),
            mode: self.mode.as_str().to_string(),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max: self.max,
            timestamp: now,
        };
        let json = serde_json::to_string(&record).unwrap_or_default();
        self.kv
            .set_ex(&valkey::heartbeat(&self.runner), &json, self.ttl)
            .await?;
        self.metrics.heartbeat_timestamp.set(now);
        Ok(())
    }

    /// Removes the heartbeat key, so a cleanly stopped runner disappears at once.
    pub async fn clear(&self) {
        if let Err(e) = self.kv.del(&valkey::heartbeat(&self.runner)).await {
            tracing::warn!(runner_id = %self.runner, error = %e, "heartbeat_clear_failed");
        }
    }

    /// Beats until `shutdown`, then removes the key; errors are logged, never fatal.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.clear().await;
                        return;
                    }
                    _ = tick.tick() => {}
                }
                match self.beat().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(runner_id = %self.runner, "heartbeat_recovered");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(runner_id = %self.runner, error = %e, "heartbeat_error");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}
