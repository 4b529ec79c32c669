//! Wiring of one runner process: [`RunnerDeps`] (built from settings for production, or assembled
//! by `botburrow up` around an in-memory queue), and [`run`], which serves `/metrics`, `/health`
//! and `/ready` on `METRICS_PORT`, watches the agent definitions, beats the heartbeat and runs the
//! claim loop until `shutdown`.

use crate::activation::{ExecutorFactory, Pipeline, PipelineConfig, PipelineParts, ToolFactory};
use crate::definitions::{DefinitionStore, DefinitionsConfig};
use crate::heartbeat::Heartbeat;
use crate::kv::{KvStore, ValkeyKv};
use crate::limits::DailyLimits;
use crate::llm::{LlmContext, LlmRuntime, PriceTable};
use crate::metrics::RunnerMetrics;
use crate::worker::{Worker, WorkerConfig};
use botburrow_shared::health::{self, ReadyCheck, SharedRegistry};
use botburrow_shared::hub::HubClient;
use botburrow_shared::ids::RunnerId;
use botburrow_shared::policy::PolicyStore;
use botburrow_shared::queue::{ValkeyQueue, WorkQueue};
use botburrow_shared::settings::{EnvSource, ProcessEnv, RunnerSettings};
use botburrow_shared::startup::wait_for_dependencies;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Valkey (queue or key-value) could not be reached or configured.
    #[error("valkey: {0}")]
    Valkey(String),
    /// The Hub client could not be built.
    #[error("hub client: {0}")]
    Hub(String),
    /// The LLM runtime or price table could not be built.
    #[error("llm: {0}")]
    Llm(String),
    /// The permission policy file could not be loaded.
    #[error("permission policy: {0}")]
    Policy(String),
    /// The health server could not bind.
    #[error("cannot serve health on {addr}: {message}")]
    Health {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        message: String,
    },
}

/// Overrides of the claim loop's timing (tests shorten leases; production leaves them `None`).
#[derive(Debug, Clone, Default)]
pub struct WorkerTuning {
    /// Lease length (default 12 s, renewed every third).
    pub lease: Option<Duration>,
    /// Blocking claim wait (default 2 s).
    pub claim_wait: Option<Duration>,
}

/// Everything a runner needs besides its settings.
pub struct RunnerDeps {
    /// The work queue (Valkey in production, in-memory for `botburrow up`).
    pub queue: Arc<dyn WorkQueue>,
    /// The Hub, with the fleet's key.
    pub hub: HubClient,
    /// Agent definitions.
    pub definitions: Arc<DefinitionStore>,
    /// The process-wide LLM runtime.
    pub llm: Arc<LlmRuntime>,
    /// Where provider API keys are read.
    pub llm_env: Arc<dyn EnvSource + Send + Sync>,
    /// The process's metrics registry.
    pub registry: SharedRegistry,
    /// The runner's metrics (registered into `registry`).
    pub metrics: RunnerMetrics,
    /// Heartbeats, the config cache and daily limits.
    pub kv: Arc<dyn KvStore>,
    /// Permission policy.
    pub policy: PolicyStore,
    /// CLI executors by agent type.
    pub executors: ExecutorFactory,
    /// Tools for native agents (Hub, sandbox, MCP by default); `None` = no tools.
    pub tools: Option<ToolFactory>,
    /// Claim loop timing overrides.
    pub tuning: WorkerTuning,
}

impl RunnerDeps {
    /// The production set: Valkey queue and key-value, Hub client, definitions from the settings,
    /// LLM runtime with the price table, policy from `AGENT_PERMISSIONS_PATH`.
    pub async fn connect(
        settings: &RunnerSettings,
        registry: SharedRegistry,
    ) -> Result<Self, AppError> {
        let url = settings.common.valkey_url.expose();
        let queue = ValkeyQueue::connect(url, settings.common.queue_config())
            .await
            .map_err(|e| AppError::Valkey(e.to_string()))?;
        let kv = ValkeyKv::connect(url)
            .await
            .map_err(|e| AppError::Valkey(e.to_string()))?;
        let hub = HubClient::new(
            &settings.common.hub_url,
            settings.common.hub_api_key.clone(),
        )
        .map_err(|e| AppError::Hub(e.to_string()))?;
        Self::assemble(settings, registry, Arc::new(queue), Arc::new(kv), hub)
    }

    /// [`RunnerDeps::connect`], retried with backoff while Valkey is unreachable, so a runner
    /// started before Valkey waits instead of crash-looping (see
    /// [`wait_for_dependencies`]). `Ok(None)` when `shutdown` fires first; any error other than
    /// an unreachable Valkey is returned at once.
    pub async fn connect_when_ready(
        settings: &RunnerSettings,
        registry: SharedRegistry,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, AppError> {
        wait_for_dependencies(
            shutdown,
            || Self::connect(settings, registry.clone()),
            |e| matches!(e, AppError::Valkey(_)),
        )
        .await
    }

    /// A set around a given queue, key-value store and Hub client (`botburrow up`, tests).
    pub fn assemble(
        settings: &RunnerSettings,
        registry: SharedRegistry,
        queue: Arc<dyn WorkQueue>,
        kv: Arc<dyn KvStore>,
        hub: HubClient,
    ) -> Result<Self, AppError> {
        let metrics = RunnerMetrics::register(&registry);
        let definitions = Arc::new(DefinitionStore::new(
            DefinitionsConfig::from_settings(settings),
            kv.clone(),
            metrics.clone(),
        ));
        let prices = PriceTable::load(settings.llm_prices_path.as_deref())
            .map_err(|e| AppError::Llm(e.to_string()))?;
        let llm = LlmRuntime::new(&registry, prices).map_err(|e| AppError::Llm(e.to_string()))?;
        let policy = PolicyStore::from_setting(settings.agent_permissions_path.as_deref())
            .map_err(|e| AppError::Policy(e.to_string()))?;
        let mcp =
            crate::mcp::McpOptions::from_env(&ProcessEnv, crate::mcp::McpMetrics::new(&registry));
        let tools: ToolFactory =
            Arc::new(crate::native_tools::StandardTools::new(hub.clone(), mcp));
        Ok(Self {
            queue,
            hub,
            definitions,
            llm,
            llm_env: Arc::new(ProcessEnv),
            registry,
            metrics,
            kv,
            policy,
            executors: Arc::new(|kind: &str| crate::executors::executor_for(kind)),
            tools: Some(tools),
            tuning: WorkerTuning::default(),
        })
    }
}

fn log_executor_availability() {
    for kind in crate::executors::CLI_KINDS {
        if let Some(exec) = crate::executors::executor_for(kind) {
            match exec.check_available() {
                Ok(()) => tracing::info!(executor = kind, "executor_available"),
                Err(e) => tracing::info!(executor = kind, reason = %e, "executor_unavailable"),
            }
        }
    }
}

/// Runs the runner until `shutdown`, then drains (see [`crate::worker`]) and returns.
pub async fn run(
    settings: RunnerSettings,
    deps: RunnerDeps,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let internal = CancellationToken::new();
    let runner_id = RunnerId::new(settings.runner_id.clone());

    let checks = {
        let (kv, queue, defs) = (
            deps.kv.clone(),
            deps.queue.clone(),
            deps.definitions.clone(),
        );
        vec![
            ReadyCheck::new("valkey", move || {
                let (kv, queue) = (kv.clone(), queue.clone());
                async move {
                    queue.ping().await.map_err(|e| e.to_string())?;
                    kv.ping().await.map_err(|e| e.to_string())
                }
            }),
            ReadyCheck::new("agent_definitions", move || {
                let defs = defs.clone();
                async move { defs.check_ready().await }
            }),
        ]
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], settings.common.metrics_port));
    let (bound, health_task) = health::serve(
        addr,
        health::router(deps.registry.clone(), checks),
        internal.clone(),
    )
    .await
    .map_err(|e| AppError::Health {
        addr,
        message: e.to_string(),
    })?;
    tracing::info!(addr = %bound, runner_id = %runner_id, mode = settings.mode.as_str(), "runner_starting");
    log_executor_availability();

    let watcher = deps.definitions.spawn_watcher(internal.clone());
    deps.definitions.preload().await;
    let pipeline = Pipeline::new(PipelineParts {
        cfg: PipelineConfig {
            max_iterations: settings.max_iterations,
            workspace_root: settings.workspace_root.clone(),
            hub_url: settings.common.hub_url.clone(),
            hub_api_key: settings.common.hub_api_key.clone(),
            env: deps.llm_env.clone(),
            discovery_feed_size: 10,
        },
        hub: deps.hub.clone(),
        definitions: deps.definitions.clone(),
        llm: LlmContext::with_env(deps.llm.clone(), deps.llm_env.clone()),
        limits: DailyLimits::new(deps.kv.clone()),
        policy: deps.policy.clone(),
        metrics: deps.metrics.clone(),
        executors: deps.executors.clone(),
        tools: deps.tools.clone(),
    });
    let mut wcfg = WorkerConfig::new(
        runner_id.clone(),
        settings.mode,
        settings.max_concurrent_activations as usize,
        settings.activation_timeout,
        settings.common.shutdown_grace,
    );
    if let Some(l) = deps.tuning.lease {
        wcfg.lease = l;
    }
    if let Some(w) = deps.tuning.claim_wait {
        wcfg.claim_wait = w;
    }
    let worker = Worker::new(
        wcfg,
        deps.queue.clone(),
        Arc::new(pipeline),
        deps.metrics.clone(),
    );
    let heartbeat = Heartbeat::new(
        deps.kv.clone(),
        runner_id,
        settings.mode,
        settings.max_concurrent_activations as usize,
        worker.in_flight(),
        deps.metrics.clone(),
    );
    let beats = heartbeat.spawn(internal.clone());
    worker.run(shutdown).await;
    internal.cancel();
    let _ = beats.await;
    let _ = watcher.await;
    let _ = health_task.await;
    Ok(())
}
