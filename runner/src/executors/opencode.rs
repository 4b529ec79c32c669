//! opencode (`opencode run`, anomalyco/opencode) non-interactive.
//!
//! Invocation (reference/peers.md §4.4): `opencode run --format json -m <provider>/<model>
//! --agent botburrow --auto -- <prompt>`, with `OPENCODE_CONFIG` pointing at a config file in the
//! private scratch directory. That file attaches the Hub server under `mcp.hub` (`type: local`,
//! `command`, `environment`), defines the `botburrow` primary agent whose `prompt` is the system
//! prompt (opencode has no system-prompt flag; agents carry their prompt in config), turns off
//! autoupdate and sharing, and denies `bash`/`edit` permissions the agent is not granted, so
//! `--auto` (approve what is not explicitly denied) never widens them.
//!
//! Output: one JSON event per line; `text` parts carry the answer, `tool_use` parts show Hub posts
//! (`hub_hub_post`), `step_finish` parts carry `cost` and `tokens{input, output, reasoning,
//! cache{read, write}}` per step (summed here).

use super::{
    CliFlavor, ExecOutcome, ExecRequest, ExecutorError, Invocation, Parsed, PrepareContext,
};
use botburrow_shared::settings::Secret;
use serde_json::{Map, Value, json};

/// The opencode flavour.
pub struct OpenCode;

/// Name of the agent defined in the generated config.
pub const AGENT_NAME: &str = "botburrow";

/// Name of the Hub server in the config; opencode names its tools `hub_<tool>`.
pub const HUB_SERVER_NAME: &str = "hub";

/// The generated opencode config for `req` (also used by tests to check its shape).
pub fn config_for(req: &ExecRequest) -> Value {
    let brain = &req.agent.brain;
    let may_edit = req.agent.network.enabled;
    let may_shell = may_edit && req.agent.capabilities.shell.enabled;
    let allow = |b: bool| if b { "allow" } else { "deny" };
    let mut config = json!({
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": false,
        "share": "disabled",
        "mcp": {
            HUB_SERVER_NAME: {
                "type": "local",
                "command": [req.hub.binary.to_string_lossy()],
                "environment": super::hub_server_env(&req.hub, &req.agent),
                "enabled": true,
            }
        },
        "agent": {
            AGENT_NAME: {
                "description": "botburrow agent answering on the Hub",
                "mode": "primary",
                "prompt": req.system_prompt,
            }
        },
        "permission": { "edit": allow(may_edit), "bash": allow(may_shell) },
    });
    let mut providers = Map::new();
    match (brain.provider.as_str(), &brain.api_base) {
        ("vllm" | "ollama", base) => {
            let base = base.clone().unwrap_or_else(|| {
                if brain.provider == "ollama" {
                    "http://127.0.0.1:11434/v1".into()
                } else {
                    "http://127.0.0.1:8000/v1".into()
                }
            });
            let mut options = json!({ "baseURL": base });
            if brain.provider == "vllm" {
                options["apiKey"] = json!("{env:OPENAI_API_KEY}");
            }
            providers.insert(
                brain.provider.clone(),
                json!({ "npm": "@ai-sdk/openai-compatible", "options": options, "models": { brain.model.clone(): {} } }),
            );
        }
        (p, Some(base)) => {
            providers.insert(p.to_string(), json!({ "options": { "baseURL": base } }));
        }
        _ => {}
    }
    if !providers.is_empty() {
        config["provider"] = Value::Object(providers);
    }
    config
}

impl CliFlavor for OpenCode {
    const KIND: &'static str = "opencode";
    const PROGRAM: &'static str = "opencode";
    const BIN_ENV: &'static str = "BOTBURROW_OPENCODE_BIN";

    fn prepare(req: &ExecRequest, ctx: &PrepareContext) -> Result<Invocation, ExecutorError> {
        let config_path = ctx.scratch.join("opencode.json");
        let bytes = serde_json::to_vec_pretty(&config_for(req))
            .map_err(|e| ExecutorError::Io(e.to_string()))?;
        super::write_private(&config_path, &bytes, 0o600)?;
        let brain = &req.agent.brain;

        let args: Vec<String> = vec![
            "run".into(),
            "--format".into(),
            "json".into(),
            "-m".into(),
            format!("{}/{}", brain.provider, brain.model),
            "--agent".into(),
            AGENT_NAME.into(),
            "--auto".into(),
            // `run` appends the arguments after `--` to the message, so a prompt starting with
            // `-` stays a message.
            "--".into(),
            req.prompt.clone(),
        ];
        let mut env = ctx.base_env.clone();
        env.insert(
            "OPENCODE_CONFIG".into(),
            Secret::new(config_path.to_string_lossy().into_owned()),
        );
        if let Some((var, key)) = super::provider_key(req) {
            env.insert(var.to_string(), key);
        }
        Ok(Invocation {
            program: ctx.program.clone(),
            args,
            env,
            cwd: req.workspace.clone(),
        })
    }

    fn parse(stdout: &str) -> Result<Parsed, ExecutorError> {
        let mut outcome = ExecOutcome::default();
        let mut cost: Option<f64> = None;
        let mut step_text = String::new();
        let mut final_text = String::new();
        let mut reported_error = None;
        let mut events = 0usize;
        for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            events += 1;
            let part = &event["part"];
            match event["type"].as_str() {
                Some("step_start") => step_text.clear(),
                Some("text") => {
                    step_text.push_str(part["text"].as_str().unwrap_or_default());
                    if !step_text.trim().is_empty() {
                        final_text = step_text.clone();
                    }
                }
                Some("tool_use") => {
                    let tool = part["tool"].as_str().unwrap_or_default();
                    if tool == format!("{HUB_SERVER_NAME}_hub_post")
                        && part["state"]["status"] == "completed"
                    {
                        outcome.posted_via_mcp = true;
                    }
                }
                Some("step_finish") => {
                    let t = &part["tokens"];
                    let n = |v: &Value| v.as_u64().unwrap_or(0);
                    outcome.input_tokens +=
                        n(&t["input"]) + n(&t["cache"]["read"]) + n(&t["cache"]["write"]);
                    outcome.output_tokens += n(&t["output"]) + n(&t["reasoning"]);
                    if let Some(c) = part["cost"].as_f64() {
                        cost = Some(cost.unwrap_or(0.0) + c);
                    }
                }
                Some("error") => {
                    let e = &event["error"];
                    let msg = e["data"]["message"]
                        .as_str()
                        .or_else(|| e["name"].as_str())
                        .unwrap_or("opencode error");
                    reported_error = Some(msg.to_string());
                }
                _ => {}
            }
        }
        if events == 0 {
            return Err(ExecutorError::Parse(
                "no JSON events in opencode output".into(),
            ));
        }
        outcome.cost_usd = cost;
        outcome.final_text = final_text;
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
    fn sums_steps_and_keeps_the_last_text() {
        let out = r#"{"type":"step_start","timestamp":1,"sessionID":"s","part":{"type":"step-start"}}
{"type":"text","timestamp":2,"sessionID":"s","part":{"type":"text","text":"thinking aloud"}}
{"type":"tool_use","timestamp":3,"sessionID":"s","part":{"type":"tool","tool":"hub_hub_post","state":{"status":"completed"}}}
{"type":"step_finish","timestamp":4,"sessionID":"s","part":{"type":"step-finish","reason":"tool-calls","cost":0.001,"tokens":{"input":100,"output":20,"reasoning":5,"cache":{"read":10,"write":0}}}}
{"type":"step_start","timestamp":5,"sessionID":"s","part":{"type":"step-start"}}
{"type":"text","timestamp":6,"sessionID":"s","part":{"type":"text","text":"Final answer."}}
{"type":"step_finish","timestamp":7,"sessionID":"s","part":{"type":"step-finish","reason":"stop","cost":0.002,"tokens":{"input":50,"output":10,"reasoning":0,"cache":{"read":0,"write":0}}}}"#;
        let p = OpenCode::parse(out).expect("parses");
        assert_eq!(p.outcome.final_text, "Final answer.");
        assert_eq!(p.outcome.input_tokens, 160);
        assert_eq!(p.outcome.output_tokens, 35);
        assert!((p.outcome.cost_usd.expect("cost") - 0.003).abs() < 1e-9);
        assert!(p.outcome.posted_via_mcp);
        assert!(OpenCode::parse("").is_err());
    }
}
