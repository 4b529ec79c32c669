//! The LLM metrics: tokens and cost by agent and model, request duration and errors by
//! provider, and each provider's breaker state.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `{agent, model, direction}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Agent id.
    pub agent: String,
    /// Model that answered.
    pub model: String,
    /// `input` or `output`.
    pub direction: String,
}

/// `{agent, model}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    /// Agent id.
    pub agent: String,
    /// Model that answered.
    pub model: String,
}

/// `{provider}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Provider endpoint label (`anthropic`, or `openai@host:port` for a custom base).
    pub provider: String,
}

/// `{provider, kind}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Provider endpoint label.
    pub provider: String,
    /// [`super::LlmError::kind`].
    pub kind: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// Handles to the LLM metrics (cheap to clone; all clones update the same series).
#[derive(Clone)]
pub struct LlmMetrics {
    /// `botburrow_llm_tokens_total`.
    pub tokens: Family<TokenLabels, Counter>,
    /// `botburrow_llm_cost_usd_total`.
    pub cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    /// `botburrow_llm_request_duration_seconds`.
    pub request_duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    /// `botburrow_llm_errors_total`.
    pub errors: Family<ErrorLabels, Counter>,
    /// `botburrow_llm_breaker_state` (0 closed, 1 open, 2 half-open).
    pub breaker_state: Family<ProviderLabels, Gauge>,
}

impl LlmMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            tokens: Family::default(),
            cost: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            errors: Family::default(),
            breaker_state: Family::default(),
        };
        registry.register(
            "botburrow_llm_tokens",
            "Tokens billed by LLM providers",
            m.tokens.clone(),
        );
        registry.register(
            "botburrow_llm_cost_usd",
            "Estimated LLM cost in USD",
            m.cost.clone(),
        );
        registry.register(
            "botburrow_llm_request_duration_seconds",
            "Duration of one LLM HTTP request",
            m.request_duration.clone(),
        );
        registry.register(
            "botburrow_llm_errors",
            "Failed LLM requests by kind",
            m.errors.clone(),
        );
        registry.register(
            "botburrow_llm_breaker_state",
            "Circuit breaker state per provider endpoint: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        m
    }

    /// Counts a response's tokens and cost.
    pub fn record_usage(&self, agent: &str, model: &str, input: u64, output: u64, cost_usd: f64) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    agent: agent.into(),
                    model: model.into(),
                    direction: direction.into(),
                })
                .inc_by(n);
        }
        self.cost
            .get_or_create(&CostLabels {
                agent: agent.into(),
                model: model.into(),
            })
            .inc_by(cost_usd);
    }
}
