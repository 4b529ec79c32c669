//! Leader election: one [`LeaderElector`] trait with a Kubernetes Lease backend ([`lease`]), a
//! Valkey lock backend ([`valkey`]) and [`NoElection`] (always leader), plus the [`Leadership`]
//! driver that runs client-go's acquire/renew loop over any of them and publishes the result
//! through a [`LeaderHandle`].
//!
//! Only the leader polls, enqueues and reaps. The driver steps down the moment a renewal fails or
//! times out, and [`LeaderHandle::is_leader`] additionally refuses leadership once the last
//! successful renewal is older than the renew deadline, so a stuck driver can never leave a
//! stale "leader" enqueuing.

pub mod lease;
pub mod valkey;

use async_trait::async_trait;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why one election attempt could not be completed (distinct from "someone else holds it").
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The Kubernetes Lease backend failed.
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// The Valkey lock backend failed.
    #[error(transparent)]
    Valkey(#[from] valkey::ValkeyLockError),
    /// The attempt did not finish within the renew deadline.
    #[error("election attempt timed out after {0:?}")]
    Timeout(Duration),
}

/// client-go's three timings. Invariant (checked by [`ElectionTiming::validate`]):
/// `lease_duration > renew_deadline > 1.2 * retry_period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTiming {
    /// How long a non-leader waits after the last observed change before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Default for ElectionTiming {
    /// client-go's defaults: 15 s / 10 s / 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl ElectionTiming {
    /// Checks client-go's ordering so a misconfiguration cannot produce overlapping leaders.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("lease duration must exceed the renew deadline".into());
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err("renew deadline must exceed 1.2 x retry period".into());
        }
        Ok(())
    }
}

/// Wall-clock source, injectable so tests can expire leases without waiting.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests and simulations of lease expiry.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// Starts at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One leader-election backend. Implementations perform a single client-go style
/// `tryAcquireOrRenew` per call; the [`Leadership`] driver owns timing and state.
#[async_trait]
pub trait LeaderElector: Send + Sync {
    /// Acquires the lock if it is free or expired, renews it if held by us. `Ok(true)` means we
    /// hold it now; `Ok(false)` means another candidate does (or won a race).
    async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError>;

    /// Gives the lock up if we hold it, so a successor need not wait for expiry.
    async fn release(&self) -> Result<(), ElectionError>;

    /// This candidate's identity (pod name), for logs.
    fn identity(&self) -> &str;

    /// The timings this backend was configured with.
    fn timing(&self) -> ElectionTiming;

    /// Short backend name for logs and `/ready` (`kubernetes`, `valkey`, `none`).
    fn backend(&self) -> &'static str;
}

/// `LEADER_ELECTION=none`: a single coordinator that is always leader (local use, `botburrow up`).
#[derive(Debug, Clone)]
pub struct NoElection {
    identity: String,
}

impl NoElection {
    /// Always-leader elector with the given identity.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
        }
    }
}

#[async_trait]
impl LeaderElector for NoElection {
    async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        Ok(true)
    }
    async fn release(&self) -> Result<(), ElectionError> {
        Ok(())
    }
    fn identity(&self) -> &str {
        &self.identity
    }
    fn timing(&self) -> ElectionTiming {
        ElectionTiming::default()
    }
    fn backend(&self) -> &'static str {
        "none"
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    leader: bool,
    /// Leadership is only trusted until this instant (last successful renewal + renew deadline).
    valid_until: Option<Instant>,
}

/// Cheap, cloneable view of the current leadership, for the loops that must only run on the
/// leader.
#[derive(Debug, Clone)]
pub struct LeaderHandle {
    rx: watch::Receiver<State>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl LeaderHandle {
    /// Whether we lead right now: the driver says so and the last renewal is within the renew
    /// deadline. Call it before every enqueue batch.
    pub fn is_leader(&self) -> bool {
        let s = *self.rx.borrow();
        s.leader && s.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// Waits until we lead or `shutdown` fires; returns false on shutdown.
    pub async fn wait_for_leadership(&self, shutdown: &CancellationToken) -> bool {
        let mut rx = self.rx.clone();
        loop {
            if self.is_leader() {
                return true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The driver is gone: nobody will ever make us leader again.
                        shutdown.cancelled().await;
                        return false;
                    }
                }
            }
        }
    }

    /// Resolves when leadership is lost (or the driver stops); loops use it to abort work that
    /// is only valid for the leader, such as an in-flight long-poll.
    pub async fn lost(&self) {
        let mut rx = self.rx.clone();
        loop {
            if !self.is_leader() {
                return;
            }
            // Wake at the validity deadline too, not only on a state change.
            let until = rx.borrow().valid_until;
            let deadline = until.unwrap_or_else(Instant::now);
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The last election error, if the most recent attempt failed (for `/ready`).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs client-go's leader-election loop over one [`LeaderElector`] and publishes the result.
pub struct Leadership {
    elector: Box<dyn LeaderElector>,
    timing: ElectionTiming,
    tx: watch::Sender<State>,
    gauge: Gauge,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Leadership {
    /// Wraps an elector; `gauge` is `botburrow_coordinator_is_leader`.
    pub fn new(elector: Box<dyn LeaderElector>, gauge: Gauge) -> (Self, LeaderHandle) {
        let timing = elector.timing();
        let (tx, rx) = watch::channel(State {
            leader: false,
            valid_until: None,
        });
        let last_error = Arc::new(Mutex::new(None));
        let handle = LeaderHandle {
            rx,
            last_error: last_error.clone(),
        };
        gauge.set(0);
        (
            Self {
                elector,
                timing,
                tx,
                gauge,
                last_error,
            },
            handle,
        )
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        self.elector.identity()
    }

    /// The backend name.
    pub fn backend(&self) -> &'static str {
        self.elector.backend()
    }

    /// Whether the driver currently considers itself leader (ignores the validity deadline).
    fn leading(&self) -> bool {
        self.tx.borrow().leader
    }

    /// One attempt: acquire or renew, bounded by the renew deadline. Steps down on any failure
    /// while leading. Returns whether we lead afterwards.
    pub async fn tick(&self) -> bool {
        let started = Instant::now();
        let bound = self.timing.renew_deadline;
        let result = match tokio::time::timeout(bound, self.elector.try_acquire_or_renew()).await {
            Ok(r) => r,
            Err(_) => Err(ElectionError::Timeout(bound)),
        };
        let was = self.leading();
        let identity = self.elector.identity().to_owned();
        match result {
            Ok(true) => {
                self.set_error(None);
                self.tx.send_replace(State {
                    leader: true,
                    valid_until: Some(started + bound),
                });
                self.gauge.set(1);
                if !was {
                    tracing::info!(identity = %identity, backend = self.elector.backend(), "became_leader");
                }
                true
            }
            Ok(false) => {
                self.set_error(None);
                if was {
                    self.step_down(&identity, "lock held by another candidate");
                }
                false
            }
            Err(e) => {
                let msg = e.to_string();
                let changed = self.set_error(Some(msg.clone()));
                if was {
                    self.step_down(&identity, &msg);
                } else if changed {
                    tracing::warn!(identity = %identity, error = %msg, "leader_election_error");
                }
                false
            }
        }
    }

    fn step_down(&self, identity: &str, reason: &str) {
        self.tx.send_replace(State {
            leader: false,
            valid_until: None,
        });
        self.gauge.set(0);
        tracing::warn!(identity = %identity, reason = %reason, "lost_leadership");
    }

    /// Records the latest error; returns whether it differs from the previous one (so errors
    /// are logged once per state change, not once per attempt).
    fn set_error(&self, e: Option<String>) -> bool {
        let mut slot = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *slot != e;
        *slot = e;
        changed
    }

    /// Runs attempts every retry period until `shutdown`, then releases the lock if held.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.timing.retry_period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.tick() => {}
            }
        }
        self.shutdown().await;
    }

    /// Steps down and releases the lock (bounded, best effort) so a successor takes over at once.
    pub async fn shutdown(&self) {
        let was = self.leading();
        self.tx.send_replace(State {
            leader: false,
            valid_until: None,
        });
        self.gauge.set(0);
        if was {
            let identity = self.elector.identity().to_owned();
            match tokio::time::timeout(Duration::from_secs(2), self.elector.release()).await {
                Ok(Ok(())) => tracing::info!(identity = %identity, "released_leadership"),
                Ok(Err(e)) => {
                    tracing::warn!(identity = %identity, error = %e, "release_leadership_failed")
                }
                Err(_) => tracing::warn!(identity = %identity, "release_leadership_timed_out"),
            }
        }
    }
}
