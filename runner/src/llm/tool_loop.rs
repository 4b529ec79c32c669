//! The tool loop: system prompt + user prompt -> model -> every tool call of the turn executed
//! in order and answered with its id -> repeat, until a final answer, `max_iterations`, the
//! activation deadline, or cancellation. A tool error goes back to the model as an error
//! result; only provider failures end the loop with an error.

use super::chain::ProviderChain;
use super::{Block, ChatRequest, LlmError, Message, Role, Usage};
use crate::tools::{ToolOutput, ToolSet};
use botburrow_shared::ids::AgentId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Inputs of one loop run.
#[derive(Debug, Clone)]
pub struct LoopParams {
    /// System prompt.
    pub system: String,
    /// The activation's prompt (thread, notification, feed...).
    pub user_prompt: String,
    /// Model turns allowed (0 is treated as 1).
    pub max_iterations: u32,
    /// The activation's hard deadline.
    pub deadline: Instant,
    /// Whose loop this is (metrics and logs).
    pub agent: AgentId,
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model answered without tool calls.
    Final,
    /// `max_iterations` turns were used and the model still wanted tools.
    MaxIterations,
    /// The activation deadline passed.
    Deadline,
    /// The activation was cancelled.
    Cancelled,
}

/// What the loop produced; usage and cost cover every model call that completed.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopOutcome {
    /// The last assistant text ("" if there was none).
    pub final_text: String,
    /// Model calls made.
    pub iterations: u32,
    /// Tokens summed over all calls.
    pub usage: Usage,
    /// USD summed over all calls.
    pub cost_usd: f64,
    /// Why it stopped.
    pub stop: StopReason,
    /// The model of the last answer (may be a fallback's), or the primary model if none.
    pub model: String,
    /// Tool calls executed.
    pub tool_calls: u32,
}

enum Interrupt {
    Deadline,
    Cancelled,
}

async fn bounded<F: std::future::Future>(
    fut: F,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<F::Output, Interrupt> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Interrupt::Cancelled),
        _ = tokio::time::sleep_until(deadline) => Err(Interrupt::Deadline),
        out = fut => Ok(out),
    }
}

/// Runs the loop. Returns `Err` only when the providers fail (after retries and failover).
pub async fn run_tool_loop(
    params: LoopParams,
    chain: &ProviderChain,
    tools: &ToolSet,
    cancel: &CancellationToken,
) -> Result<LoopOutcome, LlmError> {
    let agent = params.agent.clone();
    let mut outcome = LoopOutcome {
        final_text: String::new(),
        iterations: 0,
        usage: Usage::default(),
        cost_usd: 0.0,
        stop: StopReason::MaxIterations,
        model: chain.primary_model().to_string(),
        tool_calls: 0,
    };
    let mut req = ChatRequest {
        system: params.system,
        messages: vec![Message::user(params.user_prompt)],
        tools: tools.specs(),
    };
    let stop = |mut o: LoopOutcome, why: Interrupt| {
        o.stop = match why {
            Interrupt::Deadline => StopReason::Deadline,
            Interrupt::Cancelled => StopReason::Cancelled,
        };
        tracing::warn!(agent_id = %agent, iterations = o.iterations, stop = ?o.stop, "loop_interrupted");
        Ok(o)
    };
    let max = params.max_iterations.max(1);
    while outcome.iterations < max {
        let answer = match bounded(
            chain.complete(&agent, &req, params.deadline),
            params.deadline,
            cancel,
        )
        .await
        {
            Ok(r) => r?,
            Err(why) => return stop(outcome, why),
        };
        outcome.iterations += 1;
        outcome.usage.add(answer.response.usage);
        outcome.cost_usd += answer.cost_usd;
        outcome.model = answer.response.model.clone();
        let calls = answer.response.tool_calls();
        let text = answer.response.message.text();
        tracing::info!(
            agent_id = %agent,
            iteration = outcome.iterations,
            provider = %answer.provider,
            model = %answer.response.model,
            input_tokens = answer.response.usage.input_tokens,
            output_tokens = answer.response.usage.output_tokens,
            tool_calls = calls.len(),
            "iteration"
        );
        outcome.final_text = text;
        req.messages.push(answer.response.message);
        if calls.is_empty() {
            outcome.stop = StopReason::Final;
            return Ok(outcome);
        }
        let mut results = Vec::with_capacity(calls.len());
        for call in calls {
            outcome.tool_calls += 1;
            let output = if call.input.get("__invalid_json_arguments").is_some() {
                ToolOutput::error(
                    "the arguments were not valid JSON; call the tool again with a JSON object",
                )
            } else if !call.input.is_object() {
                ToolOutput::error("arguments must be a JSON object")
            } else {
                match bounded(
                    tools.call(&call.name, call.input.clone()),
                    params.deadline,
                    cancel,
                )
                .await
                {
                    Ok(out) => out,
                    Err(why) => return stop(outcome, why),
                }
            };
            tracing::debug!(agent_id = %agent, tool = %call.name, is_error = output.is_error, "tool_called");
            results.push(Block::ToolResult {
                call_id: call.id,
                text: output.text,
                is_error: output.is_error,
            });
        }
        req.messages.push(Message {
            role: Role::User,
            blocks: results,
        });
    }
    outcome.stop = StopReason::MaxIterations;
    tracing::warn!(agent_id = %agent, iterations = outcome.iterations, "max_iterations_reached");
    Ok(outcome)
}
