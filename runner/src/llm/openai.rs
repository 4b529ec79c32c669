//! OpenAI-compatible Chat Completions adapter (OpenAI, OpenRouter, vLLM, Ollama):
//! `POST {base}/chat/completions`, where the base already ends in `/v1` as in the official SDK.
//! Owns the wire types; tool calls are `tool_calls` on the assistant message, and each answer
//! is its own `role: "tool"` message carrying the matching `tool_call_id`.

use super::chain::Endpoint;
use super::{Block, ChatRequest, LlmError, Message, ModelResponse, Role, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    temperature: f64,
    /// OpenAI itself wants `max_completion_tokens` (reasoning models reject `max_tokens`);
    /// the compatible servers know `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireToolCall {
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Serialize, Deserialize)]
struct WireFunction {
    name: String,
    /// A JSON document in a string, as the API defines it.
    #[serde(default)]
    arguments: String,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireToolDef<'a>,
}

#[derive(Serialize)]
struct WireToolDef<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

fn to_wire(system: &str, messages: &[Message]) -> Vec<WireMessage> {
    let mut out = Vec::new();
    if !system.is_empty() {
        out.push(WireMessage {
            role: "system".into(),
            content: Some(system.into()),
            tool_calls: vec![],
            tool_call_id: None,
        });
    }
    for m in messages {
        match m.role {
            Role::Assistant => {
                let text = m.text();
                let tool_calls: Vec<WireToolCall> = m
                    .blocks
                    .iter()
                    .filter_map(|b| match b {
                        Block::ToolCall(c) => Some(WireToolCall {
                            id: c.id.clone(),
                            kind: function_type(),
                            function: WireFunction {
                                name: c.name.clone(),
                                arguments: c.input.to_string(),
                            },
                        }),
                        _ => None,
                    })
                    .collect();
                let content = if text.is_empty() && !tool_calls.is_empty() {
                    None
                } else {
                    Some(text)
                };
                out.push(WireMessage {
                    role: "assistant".into(),
                    content,
                    tool_calls,
                    tool_call_id: None,
                });
            }
            Role::User => {
                // Tool results become one `tool` message each, in call order, before any text.
                let mut text = Vec::new();
                for b in &m.blocks {
                    match b {
                        Block::ToolResult {
                            call_id,
                            text: result,
                            is_error,
                        } => out.push(WireMessage {
                            role: "tool".into(),
                            content: Some(if *is_error {
                                format!("Error: {result}")
                            } else {
                                result.clone()
                            }),
                            tool_calls: vec![],
                            tool_call_id: Some(call_id.clone()),
                        }),
                        Block::Text(t) => text.push(t.as_str()),
                        Block::ToolCall(_) => {}
                    }
                }
                if !text.is_empty() {
                    out.push(WireMessage {
                        role: "user".into(),
                        content: Some(text.join("\n")),
                        tool_calls: vec![],
                        tool_call_id: None,
                    });
                }
            }
        }
    }
    out
}

/// Sends one request and maps the answer into the neutral model.
pub(crate) async fn complete(
    http: &reqwest::Client,
    ep: &Endpoint,
    req: &ChatRequest,
    timeout: Duration,
) -> Result<ModelResponse, LlmError> {
    let url = format!("{}/chat/completions", ep.base_url.trim_end_matches('/'));
    let openai_proper = ep.provider == "openai";
    let body = WireRequest {
        model: &ep.model,
        messages: to_wire(&req.system, &req.messages),
        tools: req
            .tools
            .iter()
            .map(|t| WireTool {
                kind: "function",
                function: WireToolDef {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.input_schema,
                },
            })
            .collect(),
        temperature: ep.temperature,
        max_tokens: (!openai_proper).then_some(ep.max_tokens),
        max_completion_tokens: openai_proper.then_some(ep.max_tokens),
    };
    let mut builder = http.post(url).timeout(timeout).json(&body);
    if let Some(key) = &ep.api_key {
        builder = builder.bearer_auth(key.expose());
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
    let parse_err = |message: String| LlmError::Parse {
        provider: ep.label.clone(),
        message,
    };
    let wire: WireResponse = serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| parse_err("no choices in the response".into()))?;
    let mut blocks = Vec::new();
    if let Some(t) = choice.message.content.filter(|t| !t.is_empty()) {
        blocks.push(Block::Text(t));
    }
    for c in choice.message.tool_calls {
        // A model may send arguments that are not JSON; keep the call (its id must be answered)
        // and let the loop return an error result for it.
        let input = if c.function.arguments.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&c.function.arguments).unwrap_or_else(
                |_| serde_json::json!({ "__invalid_json_arguments": c.function.arguments }),
            )
        };
        blocks.push(Block::ToolCall(ToolCall {
            id: c.id,
            name: c.function.name,
            input,
        }));
    }
    let usage = wire
        .usage
        .map(|u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        })
        .unwrap_or_default();
    Ok(ModelResponse {
        message: Message {
            role: Role::Assistant,
            blocks,
        },
        usage,
        model: wire.model.unwrap_or_else(|| ep.model.clone()),
    })
}
