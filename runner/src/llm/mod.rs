//! LLM providers and the tool loop.
//!
//! Owns: the provider-neutral conversation model ([`Message`], [`Block`], [`ToolCall`],
//! [`Usage`]), the wire adapters (`anthropic`, `openai`, `demo`: vendor types stop there), the
//! resilience pieces shared by all activations of one runner ([`LlmRuntime`]: circuit breakers,
//! token-bucket limits, prices, metrics, one reqwest client), the ordered fallback
//! [`ProviderChain`] and [`run_tool_loop`].
//!
//! The runner calls, once per process, [`LlmRuntime::new`], and per activation
//! [`ProviderChain::from_brain`] then [`run_tool_loop`].

mod anthropic;
pub mod breaker;
mod chain;
mod demo;
pub mod limiter;
pub mod metrics;
mod openai;
pub mod prices;
mod tool_loop;

pub use breaker::{BreakerState, CircuitBreaker, Clock, ManualClock, TokioClock};
pub use chain::{LlmContext, LlmRuntime, ProviderChain, RetryPolicy, RuntimeConfig};
pub use limiter::RateLimiter;
pub use metrics::LlmMetrics;
pub use prices::{ModelPrice, PriceError, PriceTable};
pub use tool_loop::{LoopOutcome, LoopParams, StopReason, run_tool_loop};

use crate::tools::ToolSpec;
use std::time::Duration;

/// Why a model call failed. Classified so the chain knows what to retry and fail over, and
/// with a low-cardinality [`LlmError::kind`] for the `botburrow_llm_errors_total` metric.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The request did not get an HTTP answer (connection refused, reset, TLS...).
    #[error("HTTP error talking to {provider}: {message}")]
    Http {
        /// Provider endpoint label.
        provider: String,
        /// What went wrong (no secrets: reqwest errors carry the URL, never headers).
        message: String,
    },
    /// The API answered with an error status other than 429.
    #[error("{provider} API error (status {status}): {message}")]
    Api {
        /// Provider endpoint label.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The API's own error message.
        message: String,
    },
    /// 429: the provider asks us to slow down, optionally saying for how long.
    #[error("{provider} rate limited the request (retry after {retry_after:?})")]
    RateLimited {
        /// Provider endpoint label.
        provider: String,
        /// The `Retry-After` header, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// No answer in time.
    #[error("{provider} did not answer in time")]
    Timeout {
        /// Provider endpoint label.
        provider: String,
    },
    /// The answer was not what the API documents.
    #[error("could not parse the {provider} response: {message}")]
    Parse {
        /// Provider endpoint label.
        provider: String,
        /// Parser message.
        message: String,
    },
    /// A provider name this runner does not speak.
    #[error("Unsupported LLM provider: {0}")]
    Unsupported(String),
    /// The configuration cannot work (e.g. the API key variable is not set).
    #[error("LLM configuration error: {0}")]
    Config(String),
    /// The provider's circuit breaker is open; the call was not attempted.
    #[error("circuit breaker open for {provider}")]
    CircuitOpen {
        /// Provider endpoint label.
        provider: String,
    },
}

impl LlmError {
    /// Whether another attempt (same provider after backoff, or the next in the chain) may work:
    /// 429, 5xx, timeouts, transport errors and an open breaker. Other 4xx mean the request
    /// itself is wrong and are returned at once, without retry or failover.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { .. } | LlmError::RateLimited { .. } | LlmError::Timeout { .. } => true,
            LlmError::CircuitOpen { .. } => true,
            LlmError::Api { status, .. } => *status >= 500,
            LlmError::Parse { .. } | LlmError::Unsupported(_) | LlmError::Config(_) => false,
        }
    }

    /// Metric label value, one of a fixed set.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Http { .. } => "http",
            LlmError::Api { status, .. } if *status >= 500 => "server_error",
            LlmError::Api {
                status: 401 | 403, ..
            } => "auth",
            LlmError::Api { .. } => "client_error",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Parse { .. } => "parse",
            LlmError::Unsupported(_) => "unsupported",
            LlmError::Config(_) => "config",
            LlmError::CircuitOpen { .. } => "circuit_open",
        }
    }
}

/// Who said a message. The system prompt is not a message: both APIs take it separately
/// (OpenAI as a leading `system` message, which the adapter adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The person (prompt) or the tool results.
    User,
    /// The model.
    Assistant,
}

/// A tool call the model asked for; `id` ties the result back to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Provider-assigned id (`toolu_...`, `call_...`), echoed in the result.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Parsed arguments (an object; `{}` when the model sent none).
    pub input: serde_json::Value,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Plain text.
    Text(String),
    /// A call by the assistant.
    ToolCall(ToolCall),
    /// The answer to a call, in the next user message.
    ToolResult {
        /// The id of the call answered.
        call_id: String,
        /// Text for the model.
        text: String,
        /// Whether the tool failed.
        is_error: bool,
    },
}

/// One turn of the conversation, in the loop's provider-neutral model.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Content blocks, in order.
    pub blocks: Vec<Block>,
}

impl Message {
    /// A user text message.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            blocks: vec![Block::Text(text.into())],
        }
    }

    /// All text blocks joined, for logging and final answers.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        parts.join("\n")
    }
}

/// Token counts from a response's `usage` (summed over a loop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Completion tokens billed.
    pub output_tokens: u64,
}

impl Usage {
    /// Adds another response's usage.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
    /// Both directions together (what a TPM limit counts).
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// What a provider adapter is asked: everything but the model settings, which belong to the
/// endpoint (so a fallback uses its own model).
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// System prompt ("" for none).
    pub system: String,
    /// The conversation so far, starting with a user message and alternating.
    pub messages: Vec<Message>,
    /// Tools offered (unique names).
    pub tools: Vec<ToolSpec>,
}

/// A provider's answer in the neutral model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResponse {
    /// The assistant message (text and tool calls in the order the model gave them).
    pub message: Message,
    /// Tokens billed for this call.
    pub usage: Usage,
    /// The model that answered (as the API reports it, else as configured).
    pub model: String,
}

impl ModelResponse {
    /// The tool calls in this answer.
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.message
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::ToolCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Parses `Retry-After` in its seconds form (the form LLM APIs send); the date form is ignored.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Maps a reqwest transport error to the typed error.
pub(crate) fn transport_error(provider: &str, e: reqwest::Error) -> LlmError {
    if e.is_timeout() {
        LlmError::Timeout {
            provider: provider.to_string(),
        }
    } else {
        LlmError::Http {
            provider: provider.to_string(),
            message: e.without_url().to_string(),
        }
    }
}

/// Maps a non-success status to the typed error, using the API's error message when present.
pub(crate) fn status_error(
    provider: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> LlmError {
    if status == 429 {
        return LlmError::RateLimited {
            provider: provider.to_string(),
            retry_after: parse_retry_after(headers),
        };
    }
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    if status == 401 || status == 403 {
        // Some APIs quote part of the rejected key in the message; never pass it on.
        let kind = parsed
            .as_ref()
            .and_then(|v| {
                v.pointer("/error/type")
                    .or_else(|| v.pointer("/error/code"))
            })
            .and_then(|t| t.as_str())
            .unwrap_or("unauthorized");
        return LlmError::Api {
            provider: provider.to_string(),
            status,
            message: format!("authentication failed ({kind}); check the API key variable"),
        };
    }
    let message = parsed
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    LlmError::Api {
        provider: provider.to_string(),
        status,
        message,
    }
}
