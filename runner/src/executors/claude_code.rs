//! Claude Code (`claude`, npm `@anthropic-ai/claude-code`) in print mode.
//!
//! Invocation (reference/peers.md §4.1): `claude -p --output-format stream-json --verbose
//! --mcp-config <file> --strict-mcp-config --append-system-prompt-file <file> --model <m>
//! --max-turns <n> --permission-mode dontAsk --allowedTools "<tools>" -- <prompt>`.
//! `stream-json` (which print mode only allows with `--verbose`) is used rather than `json` because
//! its last line is the same `result` object (`result`, `total_cost_usd`, `usage`, `is_error`) and
//! the lines before it show the `mcp__hub__hub_post` tool calls, so the runner knows whether the
//! agent already posted. The MCP config file sits in the private scratch directory (it carries the
//! agent's Hub key in the server's `env`), never on argv.

use super::{
    CliFlavor, ExecOutcome, ExecRequest, ExecutorError, Invocation, Parsed, PrepareContext,
};
use botburrow_shared::settings::Secret;
use serde_json::{Value, json};
use std::collections::HashSet;

/// The Claude Code flavour.
pub struct ClaudeCode;

/// Name of the Hub server in the MCP config; Claude Code names its tools `mcp__hub__<tool>`.
pub const HUB_SERVER_NAME: &str = "hub";

/// The tool list for `--allowedTools`: the Hub server's tools always; file tools unless the
/// agent's legacy `network.enabled` is false; `Bash` only with `capabilities.shell.enabled`.
pub fn allowed_tools(req: &ExecRequest) -> Vec<String> {
    let mut tools = vec![format!("mcp__{HUB_SERVER_NAME}")];
    if req.agent.network.enabled {
        tools.extend(["Read", "Glob", "Grep", "Write", "Edit"].map(String::from));
        if req.agent.capabilities.shell.enabled {
            tools.push("Bash".into());
        }
    }
    tools
}

impl CliFlavor for ClaudeCode {
    const KIND: &'static str = "claude-code";
    const PROGRAM: &'static str = "claude";
    const BIN_ENV: &'static str = "BOTBURROW_CLAUDE_BIN";

    fn prepare(req: &ExecRequest, ctx: &PrepareContext) -> Result<Invocation, ExecutorError> {
        let mcp_path = ctx.scratch.join("mcp.json");
        let config = json!({
            "mcpServers": {
                HUB_SERVER_NAME: {
                    "type": "stdio",
                    "command": req.hub.binary.to_string_lossy(),
                    "args": [],
                    "env": super::hub_server_env(&req.hub, &req.agent),
                }
            }
        });
        let bytes =
            serde_json::to_vec_pretty(&config).map_err(|e| ExecutorError::Io(e.to_string()))?;
        super::write_private(&mcp_path, &bytes, 0o600)?;

        let mut args: Vec<String> = vec![
            "-p".into(),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
            "--mcp-config".into(),
            mcp_path.to_string_lossy().into_owned(),
            "--strict-mcp-config".into(),
        ];
        if !req.system_prompt.trim().is_empty() {
            let sp = ctx.scratch.join("system-prompt.md");
            super::write_private(&sp, req.system_prompt.as_bytes(), 0o600)?;
            args.push("--append-system-prompt-file".into());
            args.push(sp.to_string_lossy().into_owned());
        }
        if req.agent.brain.provider == "anthropic" && !req.agent.brain.model.is_empty() {
            args.push("--model".into());
            args.push(req.agent.brain.model.clone());
        }
        args.push("--max-turns".into());
        args.push(
            req.agent
                .max_iterations(super::DEFAULT_MAX_TURNS)
                .to_string(),
        );
        args.push("--permission-mode".into());
        args.push("dontAsk".into());
        args.push("--allowedTools".into());
        args.push(allowed_tools(req).join(" "));
        if !req.agent.capabilities.shell.enabled {
            args.push("--disallowedTools".into());
            args.push("Bash".into());
        }
        // `--` ends the options, so a prompt starting with `-` stays a prompt.
        args.push("--".into());
        args.push(req.prompt.clone());

        let mut env = ctx.base_env.clone();
        if let Some((var, key)) = super::provider_key(req) {
            env.insert(var.to_string(), key);
        }
        if req.agent.brain.provider == "anthropic"
            && let Some(base) = &req.agent.brain.api_base
        {
            env.insert("ANTHROPIC_BASE_URL".into(), Secret::new(base.clone()));
        }
        env.insert(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            Secret::new("1"),
        );
        env.insert("DISABLE_AUTOUPDATER".into(), Secret::new("1"));
        Ok(Invocation {
            program: ctx.program.clone(),
            args,
            env,
            cwd: req.workspace.clone(),
        })
    }

    fn parse(stdout: &str) -> Result<Parsed, ExecutorError> {
        let mut post_calls: HashSet<String> = HashSet::new();
        let mut posted = false;
        let mut model: Option<String> = None;
        let mut result: Option<Value> = None;
        for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match event.get("type").and_then(Value::as_str) {
                Some("assistant") => {
                    let message = &event["message"];
                    if let Some(m) = message.get("model").and_then(Value::as_str) {
                        model = Some(m.to_string());
                    }
                    for block in message["content"].as_array().into_iter().flatten() {
                        let is_post = block["type"] == "tool_use"
                            && block["name"]
                                .as_str()
                                .is_some_and(|n| n == format!("mcp__{HUB_SERVER_NAME}__hub_post"));
                        if let (true, Some(id)) = (is_post, block["id"].as_str()) {
                            post_calls.insert(id.to_string());
                        }
                    }
                }
                Some("user") => {
                    for block in event["message"]["content"].as_array().into_iter().flatten() {
                        let answers_post = block["type"] == "tool_result"
                            && block["tool_use_id"]
                                .as_str()
                                .is_some_and(|id| post_calls.contains(id));
                        if answers_post && block["is_error"] != Value::Bool(true) {
                            posted = true;
                        }
                    }
                }
                Some("result") => result = Some(event),
                _ => {}
            }
        }
        let Some(result) = result else {
            return Err(ExecutorError::Parse(
                "no `result` line in Claude Code stream-json output".into(),
            ));
        };
        let usage = &result["usage"];
        let n = |k: &str| usage[k].as_u64().unwrap_or(0);
        let outcome = ExecOutcome {
            final_text: result["result"].as_str().unwrap_or_default().to_string(),
            input_tokens: n("input_tokens")
                + n("cache_creation_input_tokens")
                + n("cache_read_input_tokens"),
            output_tokens: n("output_tokens"),
            cost_usd: result["total_cost_usd"].as_f64(),
            model,
            posted_via_mcp: posted,
        };
        let reported_error = (result["is_error"] == Value::Bool(true)).then(|| {
            let subtype = result["subtype"].as_str().unwrap_or("error");
            format!("{subtype}: {}", outcome.final_text)
        });
        Ok(Parsed {
            outcome,
            reported_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stream_json_with_a_hub_post() {
        let out = r#"{"type":"system","subtype":"init","session_id":"s","mcp_servers":[{"name":"hub","status":"connected"}]}
{"type":"assistant","message":{"model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"t1","name":"mcp__hub__hub_post","input":{"content":"hi"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}
{"type":"result","subtype":"success","is_error":false,"result":"Posted.","total_cost_usd":0.0123,"usage":{"input_tokens":100,"cache_read_input_tokens":20,"cache_creation_input_tokens":5,"output_tokens":42}}"#;
        let p = ClaudeCode::parse(out).expect("parses");
        assert_eq!(p.outcome.final_text, "Posted.");
        assert_eq!(p.outcome.input_tokens, 125);
        assert_eq!(p.outcome.output_tokens, 42);
        assert_eq!(p.outcome.cost_usd, Some(0.0123));
        assert_eq!(p.outcome.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(p.outcome.posted_via_mcp);
        assert!(p.reported_error.is_none());
    }

    #[test]
    fn a_failed_post_or_error_result_is_seen() {
        let out = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"mcp__hub__hub_post","input":{}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"403"}]}}
{"type":"result","subtype":"error_max_turns","is_error":true,"result":"","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let p = ClaudeCode::parse(out).expect("parses");
        assert!(!p.outcome.posted_via_mcp);
        assert_eq!(p.reported_error.as_deref(), Some("error_max_turns: "));
        assert!(ClaudeCode::parse("not json\n").is_err());
    }
}
