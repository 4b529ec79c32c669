//! Anthropic Messages API adapter: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version`. Owns the wire types; tool calls are `tool_use` blocks in the assistant
//! message, and their answers are `tool_result` blocks in the next user message (Anthropic
//! rejects any other arrangement).

use super::chain::Endpoint;
use super::{Block, ChatRequest, LlmError, Message, ModelResponse, Role, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The API version this adapter speaks.
const API_VERSION: &str = "2023-06-01";

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    temperature: f64,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<WireBlock>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(skip_serializing_if = "std::ops::Not::not", default)]
        is_error: bool,
    },
    #[serde(other)]
    Other,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct WireResponse {
    content: Vec<WireBlock>,
    #[serde(default)]
    model: Option<String>,
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

fn to_wire(messages: &[Message]) -> Vec<WireMessage> {
    messages
        .iter()
        .map(|m| WireMessage {
            role: match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: m
                .blocks
                .iter()
                .filter(|b| !matches!(b, Block::Text(t) if t.is_empty()))
                .map(|b| match b {
                    Block::Text(t) => WireBlock::Text { text: t.clone() },
                    Block::ToolCall(c) => WireBlock::ToolUse {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        input: c.input.clone(),
                    },
                    Block::ToolResult {
                        call_id,
                        text,
                        is_error,
                    } => WireBlock::ToolResult {
                        tool_use_id: call_id.clone(),
                        content: text.clone(),
                        is_error: *is_error,
                    },
                })
                .collect(),
        })
        .collect()
}

/// Sends one request and maps the answer into the neutral model.
pub(crate) async fn complete(
    http: &reqwest::Client,
    ep: &Endpoint,
    req: &ChatRequest,
    timeout: Duration,
) -> Result<ModelResponse, LlmError> {
    let url = format!("{}/v1/messages", ep.base_url.trim_end_matches('/'));
    let body = WireRequest {
        model: &ep.model,
        max_tokens: ep.max_tokens,
        system: &req.system,
        messages: to_wire(&req.messages),
        tools: req
            .tools
            .iter()
            .map(|t| WireTool {
                name: &t.name,
                description: &t.description,
                input_schema: &t.input_schema,
            })
            .collect(),
        // Anthropic accepts 0.0..=1.0; agents written for OpenAI may say more.
        temperature: ep.temperature.clamp(0.0, 1.0),
    };
    let mut builder = http
        .post(url)
        .timeout(timeout)
        .header("anthropic-version", API_VERSION)
        .json(&body);
    if let Some(key) = &ep.api_key {
        builder = builder.header("x-api-key", key.expose());
    }
    let resp = builder
        .send()
        .await
        .map_err(|e| super::transport_error(&ep.label, e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp
        .text()
        .await
        .map_err(|e| super::transport_error(&ep.label, e))?;
    if !status.is_success() {
        return Err(super::status_error(
            &ep.label,
            status.as_u16(),
            &headers,
            &text,
        ));
    }
    let wire: WireResponse = serde_json::from_str(&text).map_err(|e| LlmError::Parse {
        provider: ep.label.clone(),
        message: e.to_string(),
    })?;
    let blocks = wire
        .content
        .into_iter()
        .filter_map(|b| match b {
            WireBlock::Text { text } => Some(Block::Text(text)),
            WireBlock::ToolUse { id, name, input } => {
                let input = if input.is_null() {
                    serde_json::json!({})
                } else {
                    input
                };
                Some(Block::ToolCall(ToolCall { id, name, input }))
            }
            WireBlock::ToolResult { .. } | WireBlock::Other => None,
        })
        .collect();
    Ok(ModelResponse {
        message: Message {
            role: Role::Assistant,
            blocks,
        },
        usage: Usage {
            input_tokens: wire.usage.input_tokens,
            output_tokens: wire.usage.output_tokens,
        },
        model: wire.model.unwrap_or_else(|| ep.model.clone()),
    })
}
