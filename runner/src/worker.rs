//! The claim loop: concurrency permits, claims, lease renewal, the activation deadline, force-stop
//! and graceful shutdown. What an activation *does* is behind [`Activator`] (the production one is
//! [`crate::activation::Pipeline`]), so this loop is tested on its own.
//!
//! Rules it keeps:
//! - a permit is taken **before** claiming, so a runner never holds a lease it cannot start;
//! - it claims only what `RUNNER_MODE` allows (the queue filters by mode);
//! - the lease is renewed every `lease / 3`; a renewal that answers `Lost` (an operator ran
//!   `DEL activation:{id}`, or the reaper took it) cancels the activation at once;
//! - `ACTIVATION_TIMEOUT` is a hard deadline: the activation's cancel token fires (killing its
//!   child processes) and the item is failed as retryable;
//! - on shutdown it stops claiming, lets in-flight activations finish within `SHUTDOWN_GRACE`,
//!   then cancels the rest and hands their items back with `release` (same attempt, front of the
//!   list). Nothing is lost.

use crate::metrics::RunnerMetrics;
use async_trait::async_trait;
use botburrow_shared::ids::{ActivationId, RunnerId};
use botburrow_shared::queue::{Claim, FailOutcome, RenewOutcome, WorkQueue};
use botburrow_shared::work::RunnerMode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How an activation ended, as the activator reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The work was done (possibly with nothing to do).
    Completed {
        /// Notifications answered or feed replies posted.
        handled: u32,
        /// Notifications deliberately not answered (marked read).
        skipped: u32,
    },
    /// Deliberately not run (exhausted budget, daily limits): completes without failure and does
    /// not count toward the agent's circuit breaker.
    Skipped {
        /// Why, for logs.
        reason: String,
    },
    /// It failed; `retryable` decides between requeue/backoff and the dead-letter list.
    Failed {
        /// The error, as recorded with the item.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The activation's cancel token fired and it stopped early.
    Interrupted,
}

/// Runs one claimed work item. Implementations must honour `cancel` promptly and treat
/// `deadline` as the hard end (the loop cancels at the deadline too).
#[async_trait]
pub trait Activator: Send + Sync {
    /// Runs the activation.
    async fn activate(
        &self,
        claim: &Claim,
        deadline: Instant,
        cancel: CancellationToken,
    ) -> Outcome;
}

/// Tunables of the loop.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This runner's id (lease owner, heartbeat key).
    pub runner_id: RunnerId,
    /// Which work it claims.
    pub mode: RunnerMode,
    /// Activations at once.
    pub max_concurrent: usize,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// How long one blocking claim waits before the loop re-checks for shutdown.
    pub claim_wait: Duration,
    /// Hard deadline of one activation.
    pub activation_timeout: Duration,
    /// How long in-flight activations may finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// After an activation was cancelled, how long to wait for it to wind down.
    pub wind_down: Duration,
}

impl WorkerConfig {
    /// Production defaults around the given settings: a 12 s lease (renewed every 4 s, so a
    /// force-stop lands within 5 s) and 2 s claim waits.
    pub fn new(
        runner_id: RunnerId,
        mode: RunnerMode,
        max_concurrent: usize,
        activation_timeout: Duration,
        shutdown_grace: Duration,
    ) -> Self {
        Self {
            runner_id,
            mode,
            max_concurrent: max_concurrent.max(1),
            lease: Duration::from_secs(12),
            claim_wait: Duration::from_secs(2),
            activation_timeout,
            shutdown_grace,
            wind_down: Duration::from_secs(10),
        }
    }
}

const REASON_NONE: u8 = 0;
const REASON_LOST: u8 = 1;
const REASON_TIMEOUT: u8 = 2;
const REASON_SHUTDOWN: u8 = 3;

/// The claim loop; share the in-flight counter with the heartbeat.
pub struct Worker {
    cfg: WorkerConfig,
    queue: Arc<dyn WorkQueue>,
    activator: Arc<dyn Activator>,
    metrics: RunnerMetrics,
    in_flight: Arc<AtomicUsize>,
}

impl Worker {
    /// A loop over `queue` running claims through `activator`.
    pub fn new(
        cfg: WorkerConfig,
        queue: Arc<dyn WorkQueue>,
        activator: Arc<dyn Activator>,
        metrics: RunnerMetrics,
    ) -> Self {
        Self {
            cfg,
            queue,
            activator,
            metrics,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Activations running now (shared with the heartbeat).
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Claims and runs work until `shutdown`, then drains as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(tokio::sync::Semaphore::new(this.cfg.max_concurrent));
        let hard_stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut failing = false;
        tracing::info!(runner_id = %this.cfg.runner_id, mode = this.cfg.mode.as_str(), max = this.cfg.max_concurrent, "runner_started");
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            if shutdown.is_cancelled() {
                break;
            }
            // Not raced against shutdown: a claim that already leased an item must return it to us.
            let claimed = this
                .queue
                .claim(
                    this.cfg.mode,
                    &this.cfg.runner_id,
                    this.cfg.lease,
                    this.cfg.claim_wait,
                )
                .await;
            match claimed {
                Ok(None) => {
                    failing = false;
                    drop(permit);
                }
                Ok(Some(claim)) => {
                    failing = false;
                    let me = this.clone();
                    let token = hard_stop.child_token();
                    tasks.spawn(async move {
                        me.run_claim(claim, token).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    drop(permit);
                    if !failing {
                        tracing::warn!(error = %e, "claim_failed");
                        failing = true;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        let running = tasks.len();
        tracing::info!(
            in_flight = running,
            grace_seconds = this.cfg.shutdown_grace.as_secs_f64(),
            "runner_draining"
        );
        let drained = tokio::time::timeout(this.cfg.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(in_flight = tasks.len(), "shutdown_grace_expired_releasing");
            hard_stop.cancel();
            let wind_down = this.cfg.wind_down + Duration::from_secs(5);
            if tokio::time::timeout(wind_down, async {
                while tasks.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                tracing::error!(
                    in_flight = tasks.len(),
                    "activations_did_not_stop; leases will expire and be reaped"
                );
                tasks.abort_all();
            }
        }
        tracing::info!(runner_id = %this.cfg.runner_id, "runner_stopped");
    }

    async fn run_claim(self: Arc<Self>, claim: Claim, hard_stop: CancellationToken) {
        let span = tracing::info_span!(
            "activation",
            activation_id = %claim.activation_id,
            agent_id = %claim.item.agent_id,
            task_type = claim.item.task_type.as_str()
        );
        self.clone()
            .run_claim_inner(claim, hard_stop)
            .instrument(span)
            .await
    }

    async fn run_claim_inner(self: Arc<Self>, claim: Claim, hard_stop: CancellationToken) {
        let agent = claim.item.agent_id.to_string();
        let task = claim.item.task_type.as_str();
        let started = Instant::now();
        self.metrics
            .queue_wait
            .observe(claim.queue_wait.as_secs_f64());
        tracing::info!(
            priority = claim.item.priority.as_str(),
            attempt = claim.item.attempt,
            queue_wait_ms = claim.queue_wait.as_millis() as u64,
            "work_claimed"
        );
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.metrics.in_flight.inc();

        let cancel = CancellationToken::new();
        let reason = Arc::new(AtomicU8::new(REASON_NONE));
        // Shutdown past the grace period cancels this activation (and is remembered as the reason).
        let shutdown_link = {
            let (cancel, reason) = (cancel.clone(), reason.clone());
            tokio::spawn(async move {
                hard_stop.cancelled().await;
                let _ = reason.compare_exchange(
                    REASON_NONE,
                    REASON_SHUTDOWN,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                cancel.cancel();
            })
        };
        let renewer = tokio::spawn(
            renew_loop(
                self.queue.clone(),
                claim.activation_id.clone(),
                self.cfg.lease,
                cancel.clone(),
                reason.clone(),
            )
            .in_current_span(),
        );

        let deadline = started + self.cfg.activation_timeout;
        tracing::info!(
            deadline_seconds = self.cfg.activation_timeout.as_secs_f64(),
            "activation_started"
        );
        // A panicking activation fails its item (retryably) instead of leaking the lease.
        let guarded = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            self.activator.activate(&claim, deadline, cancel.clone()),
        ));
        let run = async move {
            match guarded.await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed {
                    error: "activation panicked".into(),
                    retryable: true,
                },
            }
        };
        tokio::pin!(run);
        let mut outcome = tokio::select! {
            out = &mut run => out,
            _ = tokio::time::sleep_until(deadline) => {
                let _ = reason.compare_exchange(REASON_NONE, REASON_TIMEOUT, Ordering::SeqCst, Ordering::SeqCst);
                cancel.cancel();
                match tokio::time::timeout(self.cfg.wind_down, &mut run).await {
                    Ok(out) => out,
                    Err(_) => Outcome::Interrupted,
                }
            }
        };
        renewer.abort();
        shutdown_link.abort();
        // An activation that stopped on its own at the deadline (the LLM loop or the executor
        // saw it first) is a timeout too.
        if matches!(outcome, Outcome::Interrupted) && Instant::now() >= deadline {
            let _ = reason.compare_exchange(
                REASON_NONE,
                REASON_TIMEOUT,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        let why = reason.load(Ordering::SeqCst);
        if why != REASON_NONE
            && !matches!(outcome, Outcome::Completed { .. } | Outcome::Skipped { .. })
        {
            outcome = Outcome::Interrupted;
        }
        let elapsed = started.elapsed();
        let secs = elapsed.as_secs_f64();
        let label = self.settle(&claim, &outcome, why, secs).await;
        self.metrics.activation(&agent, task, label);
        self.metrics
            .activation_duration
            .get_or_create(&crate::metrics::TaskLabel {
                task_type: task.to_string(),
            })
            .observe(secs);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.metrics.in_flight.dec();
    }

    /// Reports the outcome to the queue and logs it; returns the metrics outcome label.
    async fn settle(&self, claim: &Claim, outcome: &Outcome, why: u8, secs: f64) -> &'static str {
        let id = &claim.activation_id;
        match (outcome, why) {
            (Outcome::Completed { handled, skipped }, _) => {
                self.complete(id).await;
                tracing::info!(
                    activation_duration = secs,
                    handled,
                    skipped,
                    "activation_completed"
                );
                "success"
            }
            (Outcome::Skipped { reason }, _) => {
                self.complete(id).await;
                tracing::info!(activation_duration = secs, reason = %reason, "activation_completed");
                "skipped"
            }
            (Outcome::Failed { error, retryable }, _) => {
                tracing::error!(activation_duration = secs, error = %error, retryable, "activation_failed");
                self.fail(claim, error, *retryable).await;
                "failure"
            }
            (Outcome::Interrupted, REASON_LOST) => {
                tracing::warn!(
                    activation_duration = secs,
                    reason = "lease lost (force-stopped or reaped)",
                    "activation_failed"
                );
                "cancelled"
            }
            (Outcome::Interrupted, REASON_TIMEOUT) => {
                let error = format!(
                    "activation timed out after {}s",
                    self.cfg.activation_timeout.as_secs()
                );
                tracing::error!(activation_duration = secs, error = %error, reason = "timeout", "activation_failed");
                self.fail(claim, &error, true).await;
                "timeout"
            }
            (Outcome::Interrupted, _) => {
                match self.queue.release(id).await {
                    Ok(true) => tracing::warn!(activation_duration = secs, "activation_released"),
                    Ok(false) => {
                        tracing::warn!(activation_duration = secs, "activation_release_not_owner")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "activation_release_failed; the reaper will requeue it")
                    }
                }
                "released"
            }
        }
    }

    async fn complete(&self, id: &ActivationId) {
        match self.queue.complete(id).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("complete_not_owner (lease was lost meanwhile)"),
            Err(e) => tracing::error!(error = %e, "complete_failed; the reaper will requeue it"),
        }
    }

    async fn fail(&self, claim: &Claim, error: &str, retryable: bool) {
        match self
            .queue
            .fail(&claim.activation_id, error, retryable)
            .await
        {
            Ok(FailOutcome::Backoff { until, failures }) => {
                tracing::warn!(until = %until.to_rfc3339(), failures, "backoff");
            }
            Ok(FailOutcome::Requeued { attempt }) => tracing::info!(attempt, "work_requeued"),
            Ok(FailOutcome::Dead) => {
                tracing::error!(attempts = claim.item.attempt + 1, "work_dead_lettered")
            }
            Ok(FailOutcome::NotOwner) => {
                tracing::warn!("fail_not_owner (lease was lost meanwhile)")
            }
            Err(e) => tracing::error!(error = %e, "fail_failed; the reaper will requeue it"),
        }
    }
}

async fn renew_loop(
    queue: Arc<dyn WorkQueue>,
    id: ActivationId,
    lease: Duration,
    cancel: CancellationToken,
    reason: Arc<AtomicU8>,
) {
    let every = (lease / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue.renew(&id, lease).await {
            Ok(RenewOutcome::Renewed) => {}
            Ok(RenewOutcome::Lost) => {
                let _ = reason.compare_exchange(
                    REASON_NONE,
                    REASON_LOST,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                tracing::warn!("activation_lease_lost; cancelling");
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "lease_renew_failed"),
        }
    }
}
