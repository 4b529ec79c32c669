//! botburrow-coordinator: leader election, Hub polling, discovery scheduling, the lease reaper,
//! queue statistics and the coordinator's HTTP endpoints (design §5).
//!
//! Construction of dependencies ([`deps::build`]) is separate from running ([`start`], [`run`]),
//! so `botburrow up` can run the coordinator in-process with a `MemoryQueue` and
//! [`election::NoElection`], while the binary wires Valkey and the configured election backend.

pub mod deps;
pub mod election;
pub mod latch;
pub mod maintenance;
pub mod metrics;
pub mod scheduler;
pub mod store;
pub mod webhook;

use crate::election::{LeaderElector, LeaderHandle, Leadership};
use crate::metrics::CoordinatorMetrics;
use crate::scheduler::{Scheduler, SchedulerTuning};
use crate::store::KeyStore;
use botburrow_shared::health::{self, ReadyCheck, SharedRegistry};
use botburrow_shared::hub::HubClient;
use botburrow_shared::queue::WorkQueue;
use botburrow_shared::settings::CoordinatorSettings;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Loop periods and limits that are not operator settings; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Poll and discovery knobs (the settings-backed ones are overwritten from settings by
    /// [`Tuning::from_settings`]).
    pub scheduler: SchedulerTuning,
    /// Reaper period (about 1 s).
    pub reap_interval: Duration,
    /// Stats refresh period.
    pub stats_interval: Duration,
    /// How long shutdown may take before loops are abandoned (the exit must come within 5 s).
    pub shutdown_budget: Duration,
    /// Address the HTTP server binds (with `METRICS_PORT`): all interfaces in a pod;
    /// `botburrow up` may prefer loopback.
    pub http_ip: IpAddr,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            scheduler: SchedulerTuning::default(),
            reap_interval: Duration::from_secs(1),
            stats_interval: Duration::from_secs(5),
            shutdown_budget: Duration::from_secs(4),
            http_ip: IpAddr::from([0, 0, 0, 0]),
        }
    }
}

impl Tuning {
    /// Defaults with `POLL_INTERVAL`, `LONG_POLL_TIMEOUT`, `DISCOVERY_INTERVAL` and
    /// `MIN_STALENESS_SECONDS` applied.
    pub fn from_settings(s: &CoordinatorSettings) -> Self {
        let mut t = Self::default();
        t.scheduler.poll_interval = s.poll_interval.max(Duration::from_millis(100));
        t.scheduler.long_poll_timeout = s.long_poll_timeout.max(Duration::from_secs(1));
        t.scheduler.discovery_interval = s.discovery_interval.max(Duration::from_millis(100));
        t.scheduler.min_staleness = s.min_staleness;
        t.scheduler.busy_repoll = t.scheduler.busy_repoll.min(t.scheduler.poll_interval);
        t
    }
}

/// Everything the coordinator talks to, built by the caller ([`deps::build`] for the binary).
pub struct CoordinatorDeps {
    /// The work queue (Valkey in production, memory for `botburrow up`).
    pub queue: Arc<dyn WorkQueue>,
    /// The Hub client (use a single-attempt retry policy: the loops own backoff).
    pub hub: HubClient,
    /// The election backend.
    pub elector: Box<dyn LeaderElector>,
    /// Where metrics are registered.
    pub registry: SharedRegistry,
    /// Direct Valkey access for heartbeats and the config cache; `None` without Valkey.
    pub store: Option<KeyStore>,
    /// Loop periods.
    pub tuning: Tuning,
}

/// A started coordinator.
pub struct RunningCoordinator {
    /// Where `/metrics`, `/health`, `/ready` and the webhook listen.
    pub addr: SocketAddr,
    /// Current leadership of this replica.
    pub leader: LeaderHandle,
    /// The coordinator's metrics.
    pub metrics: CoordinatorMetrics,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
    budget: Duration,
}

impl RunningCoordinator {
    /// Waits for `shutdown`, then for the loops to stop (leadership released) within the budget.
    pub async fn wait(mut self) {
        self.shutdown.cancelled().await;
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.budget, drain).await.is_err() {
            tracing::warn!(
                budget_ms = self.budget.as_millis() as u64,
                "coordinator_shutdown_timed_out"
            );
            self.tasks.abort_all();
        }
        tracing::info!("coordinator_stopped");
    }
}

fn ready_checks(
    queue: Arc<dyn WorkQueue>,
    hub: HubClient,
    leader: LeaderHandle,
) -> Vec<ReadyCheck> {
    vec![
        ReadyCheck::new("valkey", move || {
            let q = queue.clone();
            async move { q.ping().await.map_err(|e| e.to_string()) }
        }),
        ReadyCheck::new("hub", move || {
            let h = hub.clone();
            async move { h.health().await.map_err(|e| e.to_string()) }
        }),
        ReadyCheck::new("election", move || {
            let l = leader.clone();
            async move { l.last_error().map_or(Ok(()), Err) }
        }),
    ]
}

/// Starts the HTTP server and every loop; returns once the server is bound.
pub async fn start(
    settings: &CoordinatorSettings,
    deps: CoordinatorDeps,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningCoordinator> {
    let CoordinatorDeps {
        queue,
        hub,
        elector,
        registry,
        store,
        tuning,
    } = deps;
    let metrics = CoordinatorMetrics::register(&registry);
    let (leadership, leader) = Leadership::new(elector, metrics.is_leader.clone());
    tracing::info!(
        identity = %leadership.identity(),
        election = leadership.backend(),
        hub_url = %hub.base_url(),
        poll_interval_s = tuning.scheduler.poll_interval.as_secs(),
        discovery_interval_s = tuning.scheduler.discovery_interval.as_secs(),
        "coordinator_starting"
    );

    let router = health::router(
        registry.clone(),
        ready_checks(queue.clone(), hub.clone(), leader.clone()),
    )
    .merge(webhook::router(
        settings.cache_webhook_token.clone(),
        store.clone(),
    ));
    let bind = SocketAddr::new(tuning.http_ip, settings.common.metrics_port);
    let (addr, http_task) = health::serve(bind, router, shutdown.clone()).await?;
    tracing::info!(addr = %addr, "http_listening");

    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let _ = http_task.await;
    });
    tasks.spawn(leadership.run(shutdown.clone()));
    let scheduler = Scheduler::new(
        queue.clone(),
        hub,
        leader.clone(),
        metrics.clone(),
        tuning.scheduler,
    );
    tasks.spawn(scheduler.clone().run_poll_loop(shutdown.clone()));
    tasks.spawn(scheduler.run_discovery_loop(shutdown.clone()));
    tasks.spawn(maintenance::run_reaper(
        queue.clone(),
        leader.clone(),
        metrics.clone(),
        tuning.reap_interval,
        shutdown.clone(),
    ));
    tasks.spawn(maintenance::run_stats(
        queue,
        store,
        metrics.clone(),
        tuning.stats_interval,
        shutdown.clone(),
    ));
    tracing::info!("coordinator_started");
    Ok(RunningCoordinator {
        addr,
        leader,
        metrics,
        tasks,
        shutdown,
        budget: tuning.shutdown_budget,
    })
}

/// Runs the coordinator until `shutdown` is cancelled, then releases leadership and stops.
pub async fn run(
    settings: CoordinatorSettings,
    deps: CoordinatorDeps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let running = start(&settings, deps, shutdown).await?;
    running.wait().await;
    Ok(())
}
