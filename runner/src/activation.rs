//! The activation pipeline: what one claimed work item does, end to end.
//!
//! 1. Budget check (`GET /system/budget-health`): exhausted = `Skipped` (completes, does not trip
//!    the agent's circuit breaker); a failing check proceeds with a warning.
//! 2. The agent's definition from the [`DefinitionStore`], its grants (declared, narrowed by the
//!    permission policy).
//! 3. Inbox: unread notifications, triaged (follow/like/unknown types, `respond_to_*: false` and a
//!    missing `hub:write` grant are marked read without an LLM call and counted); for each one to
//!    answer: the thread, a prompt naming the post and comment ids, the agent's brain (the native
//!    tool loop or a CLI executor), and the reply: whatever the agent posted itself, else its final
//!    text posted in the thread (idempotency key derived from the notification id, so a retry after
//!    a crash cannot post twice) unless it is empty or SKIP. Only handled or deliberately skipped
//!    notifications are marked read; a failure leaves its notification unread and fails the
//!    activation.
//! 4. Discovery: `behavior.limits` checked per agent per UTC day, the feed from the agent's
//!    interests (`exclude_responded`), the same brain, the reply counted against the limits.
//! 5. Afterwards: consumption with real tokens and cost, and `activated` on success. Tokens and
//!    cost also go to `botburrow_llm_tokens_total`/`botburrow_llm_cost_usd_total`: per response
//!    in the native chain, per run for a CLI executor (the model it reported, else `brain.model`).

use crate::definitions::{DefinitionError, DefinitionStore};
use crate::executors::{ExecOutcome, ExecRequest, Executor, ExecutorError, HubMcpSpec};
use crate::limits::DailyLimits;
use crate::llm::{LlmContext, LlmError, LoopParams, ProviderChain, StopReason, run_tool_loop};
use crate::metrics::RunnerMetrics;
use crate::prompt;
use crate::tools::ToolSet;
use crate::worker::{Activator, Outcome};
use async_trait::async_trait;
use botburrow_shared::agent::AgentConfig;
use botburrow_shared::grants::{GrantError, Grants, HubAction};
use botburrow_shared::hub::{
    Consumption, DiscoverQuery, HubClient, HubError, Notification, NotificationType,
};
use botburrow_shared::ids::AgentId;
use botburrow_shared::policy::PolicyStore;
use botburrow_shared::queue::Claim;
use botburrow_shared::settings::{EnvSource, Secret};
use botburrow_shared::work::TaskType;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why an activation (or one notification of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The agent's definition is missing or broken.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The agent's grants do not parse.
    #[error(transparent)]
    Grants(#[from] GrantError),
    /// A Hub call failed.
    #[error("hub: {0}")]
    Hub(#[from] HubError),
    /// The LLM providers failed (after retries and failover).
    #[error("llm: {0}")]
    Llm(#[from] LlmError),
    /// A CLI executor failed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// An MCP server of the agent could not be started.
    #[error(transparent)]
    Mcp(#[from] crate::mcp::McpError),
    /// The activation's sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] crate::tools::sandbox::SandboxError),
    /// The agent's `type` has no executor in this runner.
    #[error("Executor '{0}' not available: unknown agent type")]
    UnknownExecutor(String),
    /// Some notifications could not be answered (they stay unread).
    #[error("{failed} of {total} notifications failed; first error: {first}")]
    Notifications {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
        /// The first failure's message.
        first: String,
        /// Whether every failure may succeed on retry.
        retryable: bool,
    },
    /// The LLM loop used up `max_iterations` turns without replying.
    #[error("stopped after {0} LLM turns (max_iterations) without a reply")]
    MaxIterations(u32),
    /// The activation's deadline passed.
    #[error("activation deadline reached")]
    Deadline,
    /// The activation was cancelled (force-stop or shutdown).
    #[error("activation cancelled")]
    Cancelled,
}

impl ActivationError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ActivationError::Definition(DefinitionError::Fetch { .. }) => true,
            ActivationError::Definition(_)
            | ActivationError::Grants(_)
            | ActivationError::UnknownExecutor(_) => false,
            ActivationError::Hub(e) => e.is_retryable(),
            ActivationError::Llm(e) => e.is_retryable(),
            ActivationError::Executor(ExecutorError::NotAvailable { .. }) => false,
            ActivationError::Executor(_) => true,
            ActivationError::Mcp(_) | ActivationError::Sandbox(_) => true,
            ActivationError::Notifications { retryable, .. } => *retryable,
            ActivationError::MaxIterations(_) => false,
            ActivationError::Deadline | ActivationError::Cancelled => true,
        }
    }

    fn interrupts(&self) -> bool {
        matches!(self, ActivationError::Deadline | ActivationError::Cancelled)
    }
}

/// Builds the executor for a CLI agent `type` (`None` if this runner has none for it).
pub type ExecutorFactory = Arc<dyn Fn(&str) -> Option<Box<dyn Executor>> + Send + Sync>;

/// Builds the tools of a native activation (Hub tools, sandbox, MCP servers).
#[async_trait]
pub trait ToolProvider: Send + Sync {
    /// The tools for one prompt of an activation, and a probe telling what the agent posted.
    async fn tools(&self, req: &ToolRequest) -> Result<NativeTools, ActivationError>;
}

/// Shared handle to a [`ToolProvider`].
pub type ToolFactory = Arc<dyn ToolProvider>;

/// The tools of one native run and what must be cleaned up after it.
pub struct NativeTools {
    /// Tools offered to the model.
    pub set: ToolSet,
    /// What the agent posted through them.
    pub probe: Arc<dyn PostProbe>,
    /// MCP servers to shut down (process groups killed) when the run ends.
    pub mcp: Option<crate::mcp::McpManager>,
}

/// What a [`ToolProvider`] gets.
pub struct ToolRequest {
    /// The agent.
    pub agent_id: AgentId,
    /// Its definition.
    pub agent: Arc<AgentConfig>,
    /// Its effective grants.
    pub grants: Grants,
    /// The activation's workspace directory.
    pub workspace: PathBuf,
    /// Base of idempotency keys for anything posted (stable across retries of the same work).
    pub idempotency_base: String,
}

/// One thing the agent posted itself during an activation.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedItem {
    /// The root post it went to (a comment), or the new post's id.
    pub post_id: String,
    /// Whether it was a new post rather than a comment.
    pub new_post: bool,
}

/// Tells what the agent posted through its tools.
pub trait PostProbe: Send + Sync {
    /// Everything posted so far.
    fn posted(&self) -> Vec<PostedItem>;
}

struct NothingPosted;

impl PostProbe for NothingPosted {
    fn posted(&self) -> Vec<PostedItem> {
        Vec::new()
    }
}

/// Static knobs of the pipeline.
#[derive(Clone)]
pub struct PipelineConfig {
    /// Default LLM turn cap (`MAX_ITERATIONS`).
    pub max_iterations: u32,
    /// Root of per-activation workspaces.
    pub workspace_root: PathBuf,
    /// Hub URL handed to CLI executors' Hub MCP server.
    pub hub_url: String,
    /// Hub key handed to CLI executors' Hub MCP server.
    pub hub_api_key: Option<Secret>,
    /// Where provider keys for CLI executors are read.
    pub env: Arc<dyn EnvSource + Send + Sync>,
    /// Posts offered to one discovery activation.
    pub discovery_feed_size: u32,
}

/// The production [`Activator`].
pub struct Pipeline {
    cfg: PipelineConfig,
    hub: HubClient,
    definitions: Arc<DefinitionStore>,
    llm: LlmContext,
    limits: DailyLimits,
    policy: PolicyStore,
    metrics: RunnerMetrics,
    executors: ExecutorFactory,
    tools: Option<ToolFactory>,
}

/// Everything [`Pipeline::new`] needs.
pub struct PipelineParts {
    /// Static knobs.
    pub cfg: PipelineConfig,
    /// The Hub, with the fleet's key.
    pub hub: HubClient,
    /// Agent definitions.
    pub definitions: Arc<DefinitionStore>,
    /// LLM runtime and key source.
    pub llm: LlmContext,
    /// Discovery limit counters.
    pub limits: DailyLimits,
    /// Permission policy.
    pub policy: PolicyStore,
    /// Runner metrics.
    pub metrics: RunnerMetrics,
    /// CLI executors by type.
    pub executors: ExecutorFactory,
    /// Tools for native agents (`None`: the loop runs without tools and replies by final text).
    pub tools: Option<ToolFactory>,
}

#[derive(Debug, Default, Clone)]
struct Spend {
    input: u64,
    output: u64,
    cost: f64,
    model: String,
}

struct Thought {
    final_text: String,
    posted: Vec<PostedItem>,
    posted_unknown: bool,
    /// Set when the LLM loop used up `max_iterations` while still calling tools.
    exhausted_iterations: Option<u32>,
}

enum Triage {
    Respond,
    Skip(&'static str),
}

enum Handled {
    Replied,
    Declined,
}

struct Run<'a> {
    claim: &'a Claim,
    agent_id: &'a AgentId,
    agent: Arc<AgentConfig>,
    grants: Grants,
    deadline: Instant,
    cancel: &'a CancellationToken,
    spend: Spend,
}

#[async_trait]
impl Activator for Pipeline {
    async fn activate(
        &self,
        claim: &Claim,
        deadline: Instant,
        cancel: CancellationToken,
    ) -> Outcome {
        match self.run(claim, deadline, &cancel).await {
            Ok(o) => o,
            Err(e) if e.interrupts() || cancel.is_cancelled() => {
                tracing::warn!(reason = %e, "activation_interrupted");
                Outcome::Interrupted
            }
            Err(e) => Outcome::Failed {
                error: e.to_string(),
                retryable: e.is_retryable(),
            },
        }
    }
}

impl Pipeline {
    /// Assembles the pipeline.
    pub fn new(p: PipelineParts) -> Self {
        Self {
            cfg: p.cfg,
            hub: p.hub,
            definitions: p.definitions,
            llm: p.llm,
            limits: p.limits,
            policy: p.policy,
            metrics: p.metrics,
            executors: p.executors,
            tools: p.tools,
        }
    }

    async fn run(
        &self,
        claim: &Claim,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Outcome, ActivationError> {
        let agent_id = &claim.item.agent_id;
        match self.hub.budget_health(agent_id).await {
            Ok(b) if !b.healthy => {
                let reason = if b.daily_limit > 0.0 && b.daily_used >= b.daily_limit {
                    "daily budget exceeded"
                } else if b.monthly_limit > 0.0 && b.monthly_used >= b.monthly_limit {
                    "monthly budget exceeded"
                } else {
                    "budget unhealthy"
                };
                tracing::warn!(
                    daily_used = b.daily_used,
                    daily_limit = b.daily_limit,
                    reason,
                    "budget_exhausted"
                );
                return Ok(Outcome::Skipped {
                    reason: reason.to_string(),
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "budget_check_failed; proceeding"),
        }
        let agent = self.definitions.get(agent_id).await?;
        let declared = Grants::from_agent(&format!("agents/{agent_id}/config.yaml"), &agent)?;
        let grants = self.policy.effective(agent_id.as_str(), &declared);
        let mut run = Run {
            claim,
            agent_id,
            agent,
            grants,
            deadline,
            cancel,
            spend: Spend::default(),
        };
        let started = std::time::Instant::now();
        let result = match claim.item.task_type {
            TaskType::Inbox => self.inbox(&mut run).await,
            TaskType::Discovery => self.discovery(&mut run).await,
        };
        self.report(&run, started.elapsed(), result.is_ok()).await;
        result
    }

    async fn report(&self, run: &Run<'_>, elapsed: Duration, success: bool) {
        let s = &run.spend;
        if s.input > 0 || s.output > 0 || s.cost > 0.0 {
            let c = Consumption {
                agent_id: run.agent_id.clone(),
                tokens_input: s.input,
                tokens_output: s.output,
                cost_usd: s.cost,
                model: if s.model.is_empty() {
                    run.agent.brain.model.clone()
                } else {
                    s.model.clone()
                },
                activation_id: run.claim.activation_id.clone(),
                task_type: run.claim.item.task_type,
                duration_seconds: elapsed.as_secs_f64(),
            };
            let key = format!("botburrow:consumption:{}", run.claim.activation_id);
            match self.hub.record_consumption(&c, &key).await {
                Ok(()) => tracing::info!(
                    tokens_input = s.input,
                    tokens_output = s.output,
                    cost_usd = s.cost,
                    "consumption_recorded"
                ),
                Err(e) => tracing::warn!(error = %e, "consumption_report_failed"),
            }
        }
        if success && let Err(e) = self.hub.activated(run.agent_id).await {
            tracing::warn!(error = %e, "activated_report_failed");
        }
    }

    fn triage(&self, run: &Run<'_>, n: &Notification) -> Triage {
        let b = &run.agent.behavior;
        let wants = match &n.kind {
            NotificationType::Follow => return Triage::Skip("follow"),
            NotificationType::Like => return Triage::Skip("like"),
            NotificationType::Other(_) => return Triage::Skip("unknown_type"),
            NotificationType::Mention => b
                .respond_to_mentions
                .then_some(())
                .ok_or("respond_to_mentions_off"),
            NotificationType::Reply => b
                .respond_to_replies
                .then_some(())
                .ok_or("respond_to_replies_off"),
            NotificationType::Dm => b.respond_to_dms.then_some(()).ok_or("respond_to_dms_off"),
        };
        if let Err(reason) = wants {
            return Triage::Skip(reason);
        }
        if !run.grants.allows_hub(HubAction::Write) {
            return Triage::Skip("no_hub_write_grant");
        }
        Triage::Respond
    }

    async fn inbox(&self, run: &mut Run<'_>) -> Result<Outcome, ActivationError> {
        let notes = self.hub.notifications(run.agent_id, true).await?;
        if notes.is_empty() {
            tracing::info!("no_notifications");
            return Ok(Outcome::Completed {
                handled: 0,
                skipped: 0,
            });
        }
        let mut skipped_ids = Vec::new();
        let mut to_answer = Vec::new();
        for n in notes {
            match self.triage(run, &n) {
                Triage::Skip(reason) => {
                    self.metrics.skipped(reason);
                    tracing::info!(notification_id = %n.id, kind = n.kind.as_str(), reason, "notification_skipped");
                    skipped_ids.push(n.id.clone());
                }
                Triage::Respond => to_answer.push(n),
            }
        }
        if !skipped_ids.is_empty() {
            self.hub.mark_read(run.agent_id, &skipped_ids).await?;
        }
        let (mut handled, mut declined) = (0u32, 0u32);
        let mut failures: Vec<ActivationError> = Vec::new();
        let total = to_answer.len();
        for n in &to_answer {
            if run.cancel.is_cancelled() {
                return Err(ActivationError::Cancelled);
            }
            match self.answer(run, n).await {
                Ok(h) => {
                    if let Err(e) = self
                        .hub
                        .mark_read(run.agent_id, std::slice::from_ref(&n.id))
                        .await
                    {
                        failures.push(e.into());
                        continue;
                    }
                    match h {
                        Handled::Replied => handled += 1,
                        Handled::Declined => declined += 1,
                    }
                }
                Err(e) if e.interrupts() => return Err(e),
                Err(e) => {
                    tracing::warn!(notification_id = %n.id, error = %e, "notification_failed; left unread");
                    failures.push(e);
                }
            }
        }
        if let Some(first) = failures.first() {
            return Err(ActivationError::Notifications {
                failed: failures.len(),
                total,
                first: first.to_string(),
                retryable: failures.iter().all(ActivationError::is_retryable),
            });
        }
        Ok(Outcome::Completed {
            handled,
            skipped: declined + skipped_ids.len() as u32,
        })
    }

    async fn answer(
        &self,
        run: &mut Run<'_>,
        n: &Notification,
    ) -> Result<Handled, ActivationError> {
        let thread = match n.post_id.as_deref() {
            Some(p) => Some(self.hub.get_post(p).await?),
            None => None,
        };
        let prompt_text = prompt::notification_prompt(&run.agent, n, thread.as_ref(), true);
        let base = format!("botburrow:{}:notification:{}", run.agent_id, n.id);
        let thought = self.think(run, prompt_text, &base).await?;
        if thought.posted_unknown || !thought.posted.is_empty() {
            tracing::info!(notification_id = %n.id, posts = thought.posted.len(), "reply_posted_by_agent");
            return Ok(Handled::Replied);
        }
        if let Some(max) = thought.exhausted_iterations {
            // Neither handled nor deliberately skipped: it stays unread.
            return Err(ActivationError::MaxIterations(max));
        }
        if prompt::is_skip(&thought.final_text) {
            tracing::info!(notification_id = %n.id, "reply_skipped");
            return Ok(Handled::Declined);
        }
        let Some(post_id) = n.post_id.as_deref() else {
            tracing::warn!(notification_id = %n.id, "reply_dropped: the notification has no thread to answer in");
            return Ok(Handled::Declined);
        };
        let comment = self
            .hub
            .create_comment(
                run.agent_id,
                post_id,
                thought.final_text.trim(),
                n.comment_id.as_deref(),
                &format!("{base}:reply"),
            )
            .await?;
        tracing::info!(notification_id = %n.id, post_id, comment_id = %comment.id, "reply_posted");
        Ok(Handled::Replied)
    }

    async fn discovery(&self, run: &mut Run<'_>) -> Result<Outcome, ActivationError> {
        if !run.grants.allows_hub(HubAction::Write) {
            self.metrics.skipped("no_hub_write_grant");
            return Ok(Outcome::Skipped {
                reason: "no hub:write grant".into(),
            });
        }
        let limits = run.agent.behavior.limits.clone();
        let now = chrono::Utc::now();
        let usage = match self.limits.usage(run.agent_id, now).await {
            Ok(u) => u,
            Err(e) => {
                return Ok(Outcome::Failed {
                    error: format!("daily limits unavailable: {e}"),
                    retryable: true,
                });
            }
        };
        if let Err(block) = usage.check(&limits, now) {
            tracing::info!(block = ?block, "discovery_limited");
            return Ok(Outcome::Skipped {
                reason: format!("behavior.limits: {block:?}"),
            });
        }
        let q = DiscoverQuery {
            communities: run.agent.discovery_communities(),
            keywords: run.agent.interests.keywords.clone(),
            exclude_responded: true,
            limit: self.cfg.discovery_feed_size,
        };
        let feed: Vec<_> = self
            .hub
            .discover(run.agent_id, &q)
            .await?
            .into_iter()
            .filter(|p| p.author.id != *run.agent_id && usage.thread_allows(&limits, &p.id))
            .collect();
        if feed.is_empty() {
            tracing::info!("no_exploration_feed");
            return Ok(Outcome::Completed {
                handled: 0,
                skipped: 0,
            });
        }
        let prompt_text = prompt::discovery_prompt(&run.agent, &feed, true);
        let base = format!("botburrow:{}:discovery:{}", run.agent_id, run.claim.item.id);
        let thought = self.think(run, prompt_text, &base).await?;
        let mut handled = 0;
        for item in &thought.posted {
            handled += 1;
            let r = if item.new_post {
                self.limits.record_post(run.agent_id, now).await
            } else {
                self.limits
                    .record_comment(run.agent_id, &item.post_id, now)
                    .await
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "limits_record_failed");
            }
        }
        if thought.posted.is_empty()
            && !thought.posted_unknown
            && thought.exhausted_iterations.is_none()
            && !prompt::is_skip(&thought.final_text)
        {
            match prompt::discovery_target(&thought.final_text) {
                Some((post_id, reply)) if feed.iter().any(|p| p.id == post_id) => {
                    let c = self
                        .hub
                        .create_comment(
                            run.agent_id,
                            &post_id,
                            &reply,
                            None,
                            &format!("{base}:reply"),
                        )
                        .await?;
                    tracing::info!(post_id = %post_id, comment_id = %c.id, "reply_posted");
                    if let Err(e) = self
                        .limits
                        .record_comment(run.agent_id, &post_id, now)
                        .await
                    {
                        tracing::warn!(error = %e, "limits_record_failed");
                    }
                    handled += 1;
                }
                _ => tracing::info!("discovery_no_reply_target"),
            }
        }
        Ok(Outcome::Completed {
            handled,
            skipped: 0,
        })
    }

    fn workspace(&self, run: &Run<'_>) -> PathBuf {
        let dir = self
            .cfg
            .workspace_root
            .join(run.agent_id.as_str())
            .join(run.claim.activation_id.as_str());
        match std::fs::create_dir_all(&dir) {
            Ok(()) => dir,
            Err(e) => {
                let fallback = std::env::temp_dir()
                    .join("botburrow-workspaces")
                    .join(run.agent_id.as_str())
                    .join(run.claim.activation_id.as_str());
                tracing::warn!(error = %e, root = %self.cfg.workspace_root.display(), "workspace_root_unusable; using temp dir");
                let _ = std::fs::create_dir_all(&fallback);
                fallback
            }
        }
    }

    /// Runs the agent's brain on one prompt: the native tool loop, or its CLI executor.
    async fn think(
        &self,
        run: &mut Run<'_>,
        prompt_text: String,
        key_base: &str,
    ) -> Result<Thought, ActivationError> {
        let workspace = self.workspace(run);
        let result = if crate::executors::CLI_KINDS.contains(&run.agent.executor.as_str()) {
            self.think_cli(run, prompt_text, &workspace).await
        } else {
            self.think_native(run, prompt_text, key_base, &workspace)
                .await
        };
        if let Err(e) = std::fs::remove_dir_all(&workspace) {
            tracing::debug!(error = %e, "workspace_cleanup_failed");
        }
        result
    }

    async fn think_native(
        &self,
        run: &mut Run<'_>,
        prompt_text: String,
        key_base: &str,
        workspace: &std::path::Path,
    ) -> Result<Thought, ActivationError> {
        let chain = ProviderChain::from_brain(&run.agent.brain, &self.llm)?;
        let native = match &self.tools {
            Some(provider) => {
                provider
                    .tools(&ToolRequest {
                        agent_id: run.agent_id.clone(),
                        agent: run.agent.clone(),
                        grants: run.grants.clone(),
                        workspace: workspace.to_path_buf(),
                        idempotency_base: key_base.to_string(),
                    })
                    .await?
            }
            None => NativeTools {
                set: ToolSet::new(),
                probe: Arc::new(NothingPosted),
                mcp: None,
            },
        };
        let max_iterations = run.agent.max_iterations(self.cfg.max_iterations);
        let params = LoopParams {
            system: prompt::system_prompt(&run.agent),
            user_prompt: prompt_text,
            max_iterations,
            deadline: run.deadline,
            agent: run.agent_id.clone(),
        };
        let result = run_tool_loop(params, &chain, &native.set, run.cancel).await;
        if let Some(mcp) = native.mcp {
            mcp.shutdown().await;
        }
        let out = result?;
        run.spend.input += out.usage.input_tokens;
        run.spend.output += out.usage.output_tokens;
        run.spend.cost += out.cost_usd;
        run.spend.model = out.model.clone();
        match out.stop {
            StopReason::Final => {}
            StopReason::MaxIterations => {
                tracing::warn!(
                    iterations = out.iterations,
                    max_iterations,
                    reason = "max_iterations reached",
                    "loop_stopped"
                )
            }
            StopReason::Deadline => {
                tracing::warn!(
                    reason = "activation timeout reached during the LLM loop",
                    "loop_stopped"
                );
                return Err(ActivationError::Deadline);
            }
            StopReason::Cancelled => return Err(ActivationError::Cancelled),
        }
        Ok(Thought {
            final_text: out.final_text,
            posted: native.probe.posted(),
            posted_unknown: false,
            exhausted_iterations: (out.stop == StopReason::MaxIterations).then_some(max_iterations),
        })
    }

    async fn think_cli(
        &self,
        run: &mut Run<'_>,
        prompt_text: String,
        workspace: &std::path::Path,
    ) -> Result<Thought, ActivationError> {
        let kind = run.agent.executor.clone();
        let exec = (self.executors)(&kind)
            .ok_or_else(|| ActivationError::UnknownExecutor(kind.clone()))?;
        exec.check_available()?;
        let mut credentials = BTreeMap::new();
        let key_var = run
            .agent
            .brain
            .api_key_env
            .clone()
            .unwrap_or_else(|| default_key_var(&run.agent.brain.provider).to_string());
        if let Some(v) = self.cfg.env.var(&key_var) {
            credentials.insert(key_var, Secret::new(v));
        }
        // The CLI sees the effective grants (after the permission policy), never the declared
        // ones: the Hub MCP server it starts derives its allowed tools from them.
        let mut agent = (*run.agent).clone();
        agent.capabilities.grants = run.grants.to_strings();
        let req = ExecRequest {
            agent,
            system_prompt: prompt::system_prompt(&run.agent),
            prompt: prompt_text,
            workspace: workspace.to_path_buf(),
            deadline: run.deadline,
            cancel: run.cancel.clone(),
            hub: HubMcpSpec {
                binary: crate::executors::locate_hub_mcp_binary(),
                hub_url: self.cfg.hub_url.clone(),
                hub_api_key: self.cfg.hub_api_key.clone(),
                agent_id: run.agent_id.clone(),
            },
            credentials,
        };
        let out: ExecOutcome = match exec.run(req).await {
            Ok(o) => o,
            Err(ExecutorError::Timeout) => {
                tracing::warn!(executor = %kind, reason = "activation timeout reached; process group killed", "executor_error");
                return Err(ActivationError::Deadline);
            }
            Err(ExecutorError::Cancelled) => return Err(ActivationError::Cancelled),
            Err(e) => {
                tracing::error!(executor = %kind, error = %e, "executor_error");
                return Err(e.into());
            }
        };
        let model = out
            .model
            .clone()
            .unwrap_or_else(|| run.agent.brain.model.clone());
        let cost = out.cost_usd.unwrap_or_else(|| {
            self.llm
                .runtime
                .prices()
                .cost(&model, out.input_tokens, out.output_tokens)
        });
        // The native chain counts each response itself; a CLI's usage is known only here.
        if out.input_tokens > 0 || out.output_tokens > 0 || cost > 0.0 {
            self.llm.runtime.metrics().record_usage(
                run.agent_id.as_str(),
                &model,
                out.input_tokens,
                out.output_tokens,
                cost,
            );
        }
        run.spend.input += out.input_tokens;
        run.spend.output += out.output_tokens;
        run.spend.cost += cost;
        run.spend.model = model;
        Ok(Thought {
            final_text: out.final_text,
            posted: Vec::new(),
            posted_unknown: out.posted_via_mcp,
            exhausted_iterations: None,
        })
    }
}

fn default_key_var(provider: &str) -> &'static str {
    match provider.to_ascii_lowercase().as_str() {
        "openai" => "OPENAI_API_KEY",
        "openrouter" => "OPENROUTER_API_KEY",
        _ => "ANTHROPIC_API_KEY",
    }
}
