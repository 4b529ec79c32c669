//! goose (`goose run`, aaif-goose/goose) headless.
//!
//! Invocation (reference/peers.md §4.2): `goose run --no-session --no-profile -q --output-format json
//! --max-turns <n> --provider <p> --model <m> --system <text> --with-extension <hub launcher>
//! -i <prompt file>`. `--no-profile` keeps the operator's default extensions out; the Hub server is
//! the only extension (plus the `developer` builtin when the agent may use a shell).
//!
//! goose takes stdio extensions as one string `"ENV=v ... CMD ARGS"`, which would put the agent's
//! Hub key on argv (visible in `ps`). Instead the string names a small launcher script in the
//! private scratch directory, called `hub` (goose names an extension after its command's file
//! name), which exports the server's variables and `exec`s `botburrow-hub-mcp`.
//!
//! Output: one JSON object `{messages, metadata: {total_tokens, input_tokens, output_tokens,
//! cost_usd?, status}}`; the final text is the last assistant message's text.

use super::{
    CliFlavor, ExecOutcome, ExecRequest, ExecutorError, Invocation, Parsed, PrepareContext,
};
use botburrow_shared::settings::Secret;
use serde_json::Value;
use std::collections::HashSet;

/// The goose flavour.
pub struct Goose;

/// Quotes a value for a POSIX shell script (single quotes; `'` becomes `'\''`).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// goose's provider name for a brain provider (OpenAI-compatible servers go through `openai`).
pub fn goose_provider(provider: &str) -> &str {
    match provider {
        "vllm" => "openai",
        other => other,
    }
}

/// Splits an SDK-style base URL (`http://h:8000/v1`) into goose's host (`http://h:8000`).
fn host_of(api_base: &str) -> String {
    let trimmed = api_base.trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string()
}

impl CliFlavor for Goose {
    const KIND: &'static str = "goose";
    const PROGRAM: &'static str = "goose";
    const BIN_ENV: &'static str = "BOTBURROW_GOOSE_BIN";

    fn prepare(req: &ExecRequest, ctx: &PrepareContext) -> Result<Invocation, ExecutorError> {
        let launcher = ctx.scratch.join("hub");
        if launcher.to_string_lossy().chars().any(char::is_whitespace) {
            return Err(ExecutorError::Io(format!(
                "scratch path {} contains whitespace, which goose's --with-extension cannot take",
                launcher.display()
            )));
        }
        let mut script = String::from(
            "#!/bin/sh\n# Hub MCP server launcher written by botburrow-runner for one activation.\n",
        );
        for (k, v) in super::hub_server_env(&req.hub, &req.agent) {
            script.push_str(&format!("export {k}={}\n", sh_quote(&v)));
        }
        script.push_str(&format!(
            "exec {} \"$@\"\n",
            sh_quote(&req.hub.binary.to_string_lossy())
        ));
        super::write_private(&launcher, script.as_bytes(), 0o700)?;
        let prompt_file = ctx.scratch.join("prompt.md");
        super::write_private(&prompt_file, req.prompt.as_bytes(), 0o600)?;

        let brain = &req.agent.brain;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--no-session".into(),
            "--no-profile".into(),
            "-q".into(),
            "--output-format".into(),
            "json".into(),
            "--max-turns".into(),
            req.agent
                .max_iterations(super::DEFAULT_MAX_TURNS)
                .to_string(),
            "--provider".into(),
            goose_provider(&brain.provider).to_string(),
            "--model".into(),
            brain.model.clone(),
        ];
        if !req.system_prompt.trim().is_empty() {
            args.push("--system".into());
            args.push(req.system_prompt.clone());
        }
        args.push("--with-extension".into());
        args.push(launcher.to_string_lossy().into_owned());
        if req.agent.network.enabled && req.agent.capabilities.shell.enabled {
            args.push("--with-builtin".into());
            args.push("developer".into());
        }
        args.push("-i".into());
        args.push(prompt_file.to_string_lossy().into_owned());

        let mut env = ctx.base_env.clone();
        if let Some((var, key)) = super::provider_key(req) {
            env.insert(var.to_string(), key);
        }
        if let Some(base) = &brain.api_base {
            match brain.provider.as_str() {
                "anthropic" => {
                    env.insert("ANTHROPIC_HOST".into(), Secret::new(host_of(base)));
                }
                "openai" | "vllm" => {
                    env.insert("OPENAI_HOST".into(), Secret::new(host_of(base)));
                    env.insert(
                        "OPENAI_BASE_PATH".into(),
                        Secret::new("v1/chat/completions"),
                    );
                }
                "ollama" => {
                    env.insert("OLLAMA_HOST".into(), Secret::new(host_of(base)));
                }
                "openrouter" => {
                    env.insert("OPENROUTER_HOST".into(), Secret::new(host_of(base)));
                }
                _ => {}
            }
        }
        env.insert("GOOSE_MODE".into(), Secret::new("auto"));
        env.insert("GOOSE_DISABLE_KEYRING".into(), Secret::new("1"));
        Ok(Invocation {
            program: ctx.program.clone(),
            args,
            env,
            cwd: req.workspace.clone(),
        })
    }

    fn parse(stdout: &str) -> Result<Parsed, ExecutorError> {
        let trimmed = stdout.trim();
        let doc: Value = serde_json::from_str(trimmed)
            .ok()
            .or_else(|| {
                trimmed
                    .lines()
                    .rev()
                    .filter(|l| l.trim_start().starts_with('{'))
                    .find_map(|l| serde_json::from_str(l.trim()).ok())
            })
            .ok_or_else(|| {
                ExecutorError::Parse("goose output is not the documented JSON object".into())
            })?;
        let messages = doc["messages"].as_array().ok_or_else(|| {
            ExecutorError::Parse("goose JSON output has no `messages` array".into())
        })?;
        let mut post_ids: HashSet<String> = HashSet::new();
        let mut posted = false;
        let mut final_text = String::new();
        for msg in messages {
            let content = msg["content"].as_array().into_iter().flatten();
            let mut text = String::new();
            for item in content {
                match item["type"].as_str() {
                    Some("text") => text.push_str(item["text"].as_str().unwrap_or_default()),
                    Some("toolRequest") => {
                        let name = item["toolCall"]["value"]["name"]
                            .as_str()
                            .unwrap_or_default();
                        if name.ends_with("hub_post")
                            && let Some(id) = item["id"].as_str()
                        {
                            post_ids.insert(id.to_string());
                        }
                    }
                    Some("toolResponse") => {
                        let answers_post =
                            item["id"].as_str().is_some_and(|id| post_ids.contains(id));
                        if answers_post && item["toolResult"]["status"] != "error" {
                            posted = true;
                        }
                    }
                    _ => {}
                }
            }
            if msg["role"] == "assistant" && !text.trim().is_empty() {
                final_text = text;
            }
        }
        let meta = &doc["metadata"];
        let input = meta["input_tokens"].as_u64().unwrap_or(0)
            + meta["cache_read_input_tokens"].as_u64().unwrap_or(0)
            + meta["cache_write_input_tokens"].as_u64().unwrap_or(0);
        let mut output = meta["output_tokens"].as_u64().unwrap_or(0);
        if input == 0 && output == 0 {
            // Providers that report only a total: count it as output rather than drop it.
            output = meta["total_tokens"].as_u64().unwrap_or(0);
        }
        let outcome = ExecOutcome {
            final_text,
            input_tokens: input,
            output_tokens: output,
            cost_usd: meta["cost_usd"].as_f64(),
            model: meta["model"].as_str().map(String::from),
            posted_via_mcp: posted,
        };
        let reported_error =
            (meta["status"] == "error").then(|| "goose reported status error".to_string());
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
    fn parses_the_json_object() {
        let out = r#"{"messages":[
 {"role":"user","content":[{"type":"text","text":"hi"}]},
 {"role":"assistant","content":[{"type":"text","text":"Let me post."},{"type":"toolRequest","id":"r1","toolCall":{"status":"success","value":{"name":"hub__hub_post","arguments":{}}}}]},
 {"role":"user","content":[{"type":"toolResponse","id":"r1","toolResult":{"status":"success","value":[]}}]},
 {"role":"assistant","content":[{"type":"text","text":"Done: replied."}]}],
 "metadata":{"total_tokens":150,"input_tokens":100,"output_tokens":50,"cost_usd":0.002,"status":"completed"}}"#;
        let p = Goose::parse(out).expect("parses");
        assert_eq!(p.outcome.final_text, "Done: replied.");
        assert_eq!((p.outcome.input_tokens, p.outcome.output_tokens), (100, 50));
        assert_eq!(p.outcome.cost_usd, Some(0.002));
        assert!(p.outcome.posted_via_mcp);
        assert!(Goose::parse("plain text").is_err());
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(host_of("http://h:8000/v1/"), "http://h:8000");
    }
}
