//! Housekeeping loops: the lease reaper (leader only: requeues items whose runner died, or
//! dead-letters them after `max_attempts`) and the stats loop (every replica, Valkey only: it
//! never calls the Hub) that feeds the queue and runner gauges.

use crate::election::LeaderHandle;
use crate::latch::FailureLatch;
use crate::metrics::{CoordinatorMetrics, PriorityLabel, ReapLabel};
use crate::store::KeyStore;
use botburrow_shared::queue::WorkQueue;
use botburrow_shared::work::Priority;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every `period`, while leader, asks the queue to requeue or dead-letter expired leases.
pub async fn run_reaper(
    queue: Arc<dyn WorkQueue>,
    leader: LeaderHandle,
    metrics: CoordinatorMetrics,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let latch = FailureLatch::new("queue");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if !leader.is_leader() {
            continue;
        }
        match queue.reap(now_ms()).await {
            Ok(report) => {
                latch.ok();
                if !report.is_empty() {
                    for (outcome, n) in [
                        ("requeued", report.requeued),
                        ("dead", report.dead),
                        ("orphaned", report.orphaned),
                    ] {
                        metrics
                            .reaped
                            .get_or_create(&ReapLabel { outcome })
                            .inc_by(u64::from(n));
                    }
                    tracing::info!(
                        requeued = report.requeued,
                        dead = report.dead,
                        orphaned = report.orphaned,
                        "leases_reaped"
                    );
                }
            }
            Err(e) => {
                latch.fail("reap", &e);
            }
        }
    }
}

/// Every `period`, on every replica, refreshes the queue and runner gauges from Valkey.
pub async fn run_stats(
    queue: Arc<dyn WorkQueue>,
    store: Option<KeyStore>,
    metrics: CoordinatorMetrics,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let latch = FailureLatch::new("queue");
    let store_latch = FailureLatch::new("valkey_keys");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        refresh_stats(
            queue.as_ref(),
            store.as_ref(),
            &metrics,
            &latch,
            &store_latch,
        )
        .await;
    }
}

async fn refresh_stats(
    queue: &dyn WorkQueue,
    store: Option<&KeyStore>,
    metrics: &CoordinatorMetrics,
    latch: &FailureLatch,
    store_latch: &FailureLatch,
) {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match queue.stats().await {
        Ok(s) => {
            latch.ok();
            for p in Priority::ALL {
                metrics
                    .queue_depth
                    .get_or_create(&PriorityLabel {
                        priority: p.as_str(),
                    })
                    .set(to_i64(s.depth_of(p)));
            }
            metrics.queue_active.set(to_i64(s.active));
            metrics.agents_in_backoff.set(to_i64(s.in_backoff));
            metrics.dead_letters.set(to_i64(s.dead));
            metrics
                .oldest_age
                .set(s.oldest_waiting_age.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        }
        Err(e) => {
            latch.fail("stats", &e);
            return;
        }
    }
    if let Some(store) = store {
        match store.runners_alive().await {
            Ok(n) => {
                store_latch.ok();
                metrics.runners_alive.set(to_i64(n));
            }
            Err(e) => {
                store_latch.fail("runners_alive", &e);
            }
        }
    }
}
