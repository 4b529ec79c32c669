//! The per-process [`LlmRuntime`] (one HTTP client, breakers, limiters, prices, metrics) and
//! the per-activation [`ProviderChain`]: an agent's primary brain followed by its
//! `brain.fallbacks`, with retries honouring `Retry-After` and failover on retryable errors.

use super::breaker::{CircuitBreaker, Clock, TokioClock};
use super::limiter::RateLimiter;
use super::metrics::{ErrorLabels, LlmMetrics, ProviderLabels};
use super::prices::PriceTable;
use super::{ChatRequest, LlmError, ModelResponse, Usage, anthropic, demo, openai};
use botburrow_shared::agent::Brain;
use botburrow_shared::health::SharedRegistry;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::{EnvSource, ProcessEnv, Secret};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Which wire protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiKind {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI-compatible Chat Completions.
    OpenAi,
    /// The offline demo provider.
    Demo,
}

/// One resolved provider endpoint with its model settings.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Metrics/log label: the provider name, or `provider@host:port` for a custom base.
    pub label: String,
    /// Provider name as configured (`openai`, `ollama`, ...).
    pub provider: String,
    pub kind: ApiKind,
    pub model: String,
    /// Base URL per the SDK convention (OpenAI-compatible includes `/v1`).
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub temperature: f64,
    pub max_tokens: u32,
}

/// Retry behaviour for one endpoint before failing over.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per endpoint (1 = no retry).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with jitter in [50%, 100%].
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this fails over at once instead of waiting.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Tunables of the runtime; the defaults are the production values.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Retries per endpoint.
    pub retry: RetryPolicy,
    /// Consecutive failures that open a breaker.
    pub breaker_threshold: u32,
    /// How long a breaker stays open before a probe.
    pub breaker_cooldown: Duration,
    /// Upper bound of one HTTP request (also bounded by the activation deadline).
    pub request_timeout: Duration,
    /// When every endpoint of a chain refuses at its open breaker, how long one model call
    /// may wait for a breaker to take calls again (half-open probe) before failing with
    /// `CircuitOpen`; also bounded by the activation deadline. Waiting out a short provider
    /// outage keeps it from burning the work item's attempts and tripping the agent's
    /// backoff in Valkey. Zero fails at once.
    pub max_breaker_wait: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            max_breaker_wait: Duration::from_secs(60),
        }
    }
}

/// State shared by every activation of one runner process: create once, pass down.
pub struct LlmRuntime {
    http: reqwest::Client,
    prices: PriceTable,
    metrics: LlmMetrics,
    config: RuntimeConfig,
    clock: Arc<dyn Clock>,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
}

impl std::fmt::Debug for LlmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LlmRuntime {
    /// The production runtime: default tunables and the real clock; metrics go to `registry`.
    pub fn new(registry: &SharedRegistry, prices: PriceTable) -> Result<Arc<Self>, LlmError> {
        Self::with_config(
            registry,
            prices,
            RuntimeConfig::default(),
            Arc::new(TokioClock::new()),
        )
    }

    /// The production runtime with the price table from `LLM_PRICES_PATH` (built-in prices
    /// when `None`); a bad price file is a configuration error reported at startup.
    pub fn from_prices_path(
        registry: &SharedRegistry,
        prices_path: Option<&std::path::Path>,
    ) -> Result<Arc<Self>, LlmError> {
        let prices = PriceTable::load(prices_path).map_err(|e| LlmError::Config(e.to_string()))?;
        Self::new(registry, prices)
    }

    /// A runtime with explicit tunables and clock (tests use a [`super::ManualClock`]).
    pub fn with_config(
        registry: &SharedRegistry,
        prices: PriceTable,
        config: RuntimeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, LlmError> {
        let metrics = {
            let mut reg = match registry.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            LlmMetrics::register(&mut reg)
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Arc::new(Self {
            http,
            prices,
            metrics,
            config,
            clock,
            breakers: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
        }))
    }

    /// The metric handles (for the runner's own accounting or tests).
    pub fn metrics(&self) -> &LlmMetrics {
        &self.metrics
    }

    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// The breaker of an endpoint label, created closed on first use.
    pub fn breaker(&self, label: &str) -> Arc<CircuitBreaker> {
        let mut map = match self.breakers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(label.to_string())
            .or_insert_with(|| {
                let gauge = self
                    .metrics
                    .breaker_state
                    .get_or_create(&ProviderLabels {
                        provider: label.into(),
                    })
                    .clone();
                gauge.set(0);
                Arc::new(CircuitBreaker::new(
                    label,
                    self.config.breaker_threshold,
                    self.config.breaker_cooldown,
                    self.clock.clone(),
                    Box::new(move |s| {
                        gauge.set(s.gauge());
                    }),
                ))
            })
            .clone()
    }

    /// The limiter of an endpoint label: created or updated when limits are given, else the
    /// existing one (a fallback shares the limits of the endpoint it points at).
    fn limiter(&self, label: &str, rpm: Option<u32>, tpm: Option<u32>) -> Option<Arc<RateLimiter>> {
        let mut map = match self.limiters.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if rpm.is_none() && tpm.is_none() {
            return map.get(label).cloned();
        }
        let limiter = map
            .entry(label.to_string())
            .or_insert_with(|| Arc::new(RateLimiter::new(rpm, tpm)))
            .clone();
        limiter.set_limits(rpm, tpm);
        Some(limiter)
    }
}

/// What [`ProviderChain::from_brain`] needs from the runner.
#[derive(Clone)]
pub struct LlmContext {
    /// The process-wide runtime.
    pub runtime: Arc<LlmRuntime>,
    /// Where API keys are read (the process environment in production).
    pub env: Arc<dyn EnvSource + Send + Sync>,
}

impl LlmContext {
    /// Keys from the process environment.
    pub fn new(runtime: Arc<LlmRuntime>) -> Self {
        Self {
            runtime,
            env: Arc::new(ProcessEnv),
        }
    }
    /// Keys from another source (tests).
    pub fn with_env(runtime: Arc<LlmRuntime>, env: Arc<dyn EnvSource + Send + Sync>) -> Self {
        Self { runtime, env }
    }
}

struct Link {
    endpoint: Endpoint,
    breaker: Arc<CircuitBreaker>,
    limiter: Option<Arc<RateLimiter>>,
}

/// A successful call through the chain.
#[derive(Debug, Clone)]
pub(crate) struct ChainResponse {
    pub response: ModelResponse,
    pub cost_usd: f64,
    pub provider: String,
}

/// An agent's providers in order: primary, then `brain.fallbacks`.
pub struct ProviderChain {
    links: Vec<Link>,
    runtime: Arc<LlmRuntime>,
    spent: Mutex<(Usage, f64)>,
}

impl std::fmt::Debug for ProviderChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.links
                    .iter()
                    .map(|l| (&l.endpoint.label, &l.endpoint.model)),
            )
            .finish()
    }
}

struct ProviderDefaults {
    kind: ApiKind,
    base: &'static str,
    key_env: Option<&'static str>,
}

fn defaults(provider: &str) -> Result<ProviderDefaults, LlmError> {
    let d = |kind, base, key_env| {
        Ok(ProviderDefaults {
            kind,
            base,
            key_env,
        })
    };
    match provider {
        "anthropic" => d(
            ApiKind::Anthropic,
            "https://api.anthropic.com",
            Some("ANTHROPIC_API_KEY"),
        ),
        "openai" => d(
            ApiKind::OpenAi,
            "https://api.openai.com/v1",
            Some("OPENAI_API_KEY"),
        ),
        "openrouter" => d(
            ApiKind::OpenAi,
            "https://openrouter.ai/api/v1",
            Some("OPENROUTER_API_KEY"),
        ),
        "vllm" => d(ApiKind::OpenAi, "http://localhost:8000/v1", None),
        "ollama" => d(ApiKind::OpenAi, "http://localhost:11434/v1", None),
        "demo" => d(ApiKind::Demo, "", None),
        other => Err(LlmError::Unsupported(other.to_string())),
    }
}

/// `host[:port]` of a URL, without scheme, credentials or path.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(hostport)
}

impl ProviderChain {
    /// Resolves an agent's brain (and fallbacks) into endpoints. Fails on an unknown provider
    /// or a missing API key, before any request is made.
    pub fn from_brain(brain: &Brain, ctx: &LlmContext) -> Result<Self, LlmError> {
        let mut entries = vec![(
            brain.provider.clone(),
            brain.model.clone(),
            brain.api_base.clone(),
            brain.api_key_env.clone(),
        )];
        entries.extend(brain.fallbacks.iter().map(|f| {
            (
                f.provider.clone(),
                f.model.clone(),
                f.api_base.clone(),
                f.api_key_env.clone(),
            )
        }));
        let mut links = Vec::new();
        for (i, (provider, model, api_base, key_env)) in entries.into_iter().enumerate() {
            let provider = provider.trim().to_ascii_lowercase();
            let d = defaults(&provider)?;
            let label = match &api_base {
                Some(base) if d.kind != ApiKind::Demo => format!("{provider}@{}", host_of(base)),
                _ => provider.clone(),
            };
            let key_var = key_env.as_deref().or(d.key_env);
            let api_key = match key_var {
                Some(var) => match ctx.env.var(var) {
                    Some(v) => Some(Secret::new(v)),
                    None => {
                        return Err(LlmError::Config(format!(
                            "{provider}: API key variable {var} is not set"
                        )));
                    }
                },
                None => None,
            };
            let endpoint = Endpoint {
                label: label.clone(),
                provider,
                kind: d.kind,
                model,
                base_url: api_base.unwrap_or_else(|| d.base.to_string()),
                api_key,
                temperature: brain.temperature,
                max_tokens: brain.max_tokens,
            };
            let (rpm, tpm) = if i == 0 {
                (brain.rpm, brain.tpm)
            } else {
                (None, None)
            };
            links.push(Link {
                breaker: ctx.runtime.breaker(&label),
                limiter: ctx.runtime.limiter(&label, rpm, tpm),
                endpoint,
            });
        }
        Ok(Self {
            links,
            runtime: ctx.runtime.clone(),
            spent: Mutex::new((Usage::default(), 0.0)),
        })
    }

    /// Tokens and USD of every successful call made through this chain so far. The loop's
    /// outcome carries the same numbers; this also answers after the loop failed part-way, so
    /// the activation can still report what earlier turns consumed.
    pub fn spent(&self) -> (Usage, f64) {
        match self.spent.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// Endpoint labels in order (for logs and tests).
    pub fn labels(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|l| l.endpoint.label.clone())
            .collect()
    }

    /// The primary model id.
    pub fn primary_model(&self) -> &str {
        self.links
            .first()
            .map(|l| l.endpoint.model.as_str())
            .unwrap_or("")
    }

    /// One model call: each endpoint in order, retried per the policy; a non-retryable error
    /// stops at once (no failover), a retryable one moves to the next endpoint.
    pub(crate) async fn complete(
        &self,
        agent: &AgentId,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChainResponse, LlmError> {
        let mut waited = Duration::ZERO;
        loop {
            let mut last = LlmError::Config("no providers configured".into());
            let mut all_refused = true;
            for (i, link) in self.links.iter().enumerate() {
                match self.try_link(agent, link, req, deadline).await {
                    Ok(r) => return Ok(r),
                    Err(e) if e.is_retryable() => {
                        all_refused &= matches!(e, LlmError::CircuitOpen { .. });
                        if let Some(next) = self.links.get(i + 1) {
                            tracing::warn!(agent_id = %agent, provider = %link.endpoint.label, next = %next.endpoint.label,
                                kind = e.kind(), error = %e, "llm_failover");
                        }
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Every endpoint refused at an open breaker (no request was made): wait, within
            // bounds, for the first one to take calls again instead of failing the activation.
            let budget = self
                .runtime
                .config
                .max_breaker_wait
                .saturating_sub(waited)
                .min(deadline.saturating_duration_since(Instant::now()));
            let Some(link) = self
                .links
                .iter()
                .min_by_key(|l| l.breaker.blocked_for())
                .filter(|_| all_refused && !budget.is_zero())
            else {
                return Err(last);
            };
            let blocked = link.breaker.blocked_for();
            if blocked > budget {
                return Err(last);
            }
            tracing::info!(agent_id = %agent, provider = %link.endpoint.label,
                wait_ms = blocked.as_millis() as u64, "llm_waiting_for_breaker");
            let started = Instant::now();
            link.breaker.wait_callable(budget).await;
            // A wake-up that made no progress still counts a little, so this loop always ends.
            waited += started.elapsed().max(Duration::from_millis(1));
        }
    }

    async fn try_link(
        &self,
        agent: &AgentId,
        link: &Link,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChainResponse, LlmError> {
        let rt = &self.runtime;
        let ep = &link.endpoint;
        let policy = &rt.config.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(l) = &link.limiter {
                l.acquire().await;
            }
            if !link.breaker.try_acquire() {
                let e = LlmError::CircuitOpen {
                    provider: ep.label.clone(),
                };
                self.count_error(&e);
                return Err(e);
            }
            // Frees a half-open probe slot if this call ends without a verdict (deadline,
            // cancellation: the loop drops this future mid-request).
            let mut probe = ProbeGuard {
                breaker: &link.breaker,
                armed: true,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(LlmError::Timeout {
                    provider: ep.label.clone(),
                });
            }
            let timeout = remaining.min(rt.config.request_timeout);
            let started = Instant::now();
            let result = match ep.kind {
                ApiKind::Anthropic => anthropic::complete(&rt.http, ep, req, timeout).await,
                ApiKind::OpenAi => openai::complete(&rt.http, ep, req, timeout).await,
                ApiKind::Demo => Ok(demo::complete(ep, req)),
            };
            rt.metrics
                .request_duration
                .get_or_create(&ProviderLabels {
                    provider: ep.label.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(response) => {
                    probe.armed = false;
                    link.breaker.record_success();
                    if let Some(l) = &link.limiter {
                        l.record_tokens(response.usage.total());
                    }
                    let cost_usd = rt.prices.cost(
                        &response.model,
                        response.usage.input_tokens,
                        response.usage.output_tokens,
                    );
                    {
                        let mut spent = match self.spent.lock() {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        };
                        spent.0.add(response.usage);
                        spent.1 += cost_usd;
                    }
                    rt.metrics.record_usage(
                        agent.as_str(),
                        &response.model,
                        response.usage.input_tokens,
                        response.usage.output_tokens,
                        cost_usd,
                    );
                    return Ok(ChainResponse {
                        response,
                        cost_usd,
                        provider: ep.label.clone(),
                    });
                }
                Err(e) => {
                    self.count_error(&e);
                    if e.is_retryable() {
                        probe.armed = false;
                        link.breaker.record_failure();
                    } else {
                        // The endpoint answered; this says nothing about its health.
                        return Err(e);
                    }
                    if attempt >= policy.max_attempts.max(1) {
                        return Err(e);
                    }
                    let delay = match &e {
                        LlmError::RateLimited {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => backoff(policy, attempt),
                    };
                    if delay > policy.max_retry_after || Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(agent_id = %agent, provider = %ep.label, attempt, delay_ms = delay.as_millis() as u64,
                        kind = e.kind(), error = %e, "backoff");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn count_error(&self, e: &LlmError) {
        let provider = match e {
            LlmError::Http { provider, .. }
            | LlmError::Api { provider, .. }
            | LlmError::RateLimited { provider, .. }
            | LlmError::Timeout { provider }
            | LlmError::Parse { provider, .. }
            | LlmError::CircuitOpen { provider } => provider.clone(),
            LlmError::Unsupported(_) | LlmError::Config(_) => "none".into(),
        };
        self.runtime
            .metrics
            .errors
            .get_or_create(&ErrorLabels {
                provider,
                kind: e.kind().into(),
            })
            .inc();
    }
}

struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release_probe();
        }
    }
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(policy.max_delay);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_label_hides_credentials_and_path() {
        assert_eq!(host_of("http://user:pw@127.0.0.1:9/v1"), "127.0.0.1:9");
        assert_eq!(host_of("https://api.anthropic.com"), "api.anthropic.com");
    }

    #[test]
    fn unknown_provider_and_missing_key_fail_early() {
        let registry = botburrow_shared::health::new_registry();
        let rt = LlmRuntime::new(&registry, PriceTable::builtin()).expect("runtime");
        let env: HashMap<String, String> = HashMap::new();
        let ctx = LlmContext::with_env(rt, Arc::new(env));
        let brain = Brain {
            provider: "bard".into(),
            ..Brain::default()
        };
        assert!(
            matches!(ProviderChain::from_brain(&brain, &ctx), Err(LlmError::Unsupported(p)) if p == "bard")
        );
        let brain = Brain {
            provider: "anthropic".into(),
            ..Brain::default()
        };
        let err = ProviderChain::from_brain(&brain, &ctx).expect_err("must fail");
        assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
        let brain = Brain {
            provider: "ollama".into(),
            model: "llama3".into(),
            ..Brain::default()
        };
        let chain = ProviderChain::from_brain(&brain, &ctx).expect("ollama needs no key");
        assert_eq!(chain.labels(), vec!["ollama".to_string()]);
    }
}
