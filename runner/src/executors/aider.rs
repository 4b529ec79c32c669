//! aider (Aider-AI/aider) scripted with `--message`.
//!
//! Invocation (reference/peers.md §4.3): `aider --message-file <prompt> --yes-always --no-git
//! --no-auto-commits --no-stream --no-pretty --no-check-update --analytics-disable
//! --no-show-model-warnings --model <litellm model> [--read <system prompt file>]`.
//! aider has no system-prompt flag; its documented way to give standing instructions is a
//! read-only conventions file (`--read`), so the system prompt goes there.
//!
//! aider has no MCP support and no JSON output: the Hub cannot be reached from inside it, so the
//! final text is returned for the runner to post (`posted_via_mcp` is always false), and usage
//! comes from its text lines `Tokens: 2.5k sent, 345 received. Cost: $0.01 message, $0.02 session.`
//! (one per LLM call; they are summed).

use super::{
    CliFlavor, ExecOutcome, ExecRequest, ExecutorError, Invocation, Parsed, PrepareContext,
};
use botburrow_shared::settings::Secret;
use regex::Regex;
use std::sync::LazyLock;

/// The aider flavour.
pub struct Aider;

static TOKENS_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^Tokens: ([\d.,]+k?) sent(.*?), ([\d.,]+k?) received\.(?:\s*Cost: \$([\d.]+) message)?",
    )
    .ok()
});
static CACHE_PART: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"([\d.,]+k?) cache (?:write|hit)").ok());

/// Header lines aider prints before the answer; they are not part of the reply.
const ANNOUNCEMENT_PREFIXES: &[&str] = &[
    "Aider v",
    "Main model:",
    "Weak model:",
    "Editor model:",
    "Model:",
    "Git repo:",
    "Repo-map:",
    "Added ",
    "Use /help",
    "Warning:",
    "Cur working dir:",
    "Git working dir:",
    "https://aider.chat",
    "Restored previous conversation history",
];

/// aider's (litellm) model name for a brain: `anthropic/<m>`, `openai/<m>`, `openrouter/<m>`,
/// `ollama_chat/<m>`; OpenAI-compatible servers use `openai/`.
pub fn aider_model(provider: &str, model: &str) -> String {
    let prefix = match provider {
        "anthropic" => "anthropic",
        "openai" | "vllm" => "openai",
        "openrouter" => "openrouter",
        "ollama" => "ollama_chat",
        _ => return model.to_string(),
    };
    if model.starts_with(&format!("{prefix}/")) {
        model.to_string()
    } else {
        format!("{prefix}/{model}")
    }
}

/// Parses aider's compact token counts (`345`, `2.5k`, `12k`, `1,234`).
fn count(s: &str) -> u64 {
    let s = s.replace(',', "");
    match s.strip_suffix('k') {
        Some(k) => k
            .parse::<f64>()
            .map(|v| (v * 1000.0).round() as u64)
            .unwrap_or(0),
        None => s.parse::<f64>().map(|v| v.round() as u64).unwrap_or(0),
    }
}

impl CliFlavor for Aider {
    const KIND: &'static str = "aider";
    const PROGRAM: &'static str = "aider";
    const BIN_ENV: &'static str = "BOTBURROW_AIDER_BIN";

    fn prepare(req: &ExecRequest, ctx: &PrepareContext) -> Result<Invocation, ExecutorError> {
        let prompt_file = ctx.scratch.join("prompt.md");
        super::write_private(&prompt_file, req.prompt.as_bytes(), 0o600)?;
        let brain = &req.agent.brain;
        let mut args: Vec<String> = vec![
            "--message-file".into(),
            prompt_file.to_string_lossy().into_owned(),
            "--yes-always".into(),
            "--no-git".into(),
            "--no-auto-commits".into(),
            "--no-stream".into(),
            "--no-pretty".into(),
            "--no-check-update".into(),
            "--analytics-disable".into(),
            "--no-show-model-warnings".into(),
            "--model".into(),
            aider_model(&brain.provider, &brain.model),
        ];
        if !req.system_prompt.trim().is_empty() {
            let sp = ctx.scratch.join("CONVENTIONS.md");
            super::write_private(&sp, req.system_prompt.as_bytes(), 0o600)?;
            args.push("--read".into());
            args.push(sp.to_string_lossy().into_owned());
        }
        if !(req.agent.capabilities.shell.enabled && req.agent.network.enabled) {
            args.push("--no-suggest-shell-commands".into());
        }
        let mut env = ctx.base_env.clone();
        if let Some(base) = &brain.api_base {
            match brain.provider.as_str() {
                "openai" | "vllm" => {
                    args.push("--openai-api-base".into());
                    args.push(base.clone());
                }
                "anthropic" => {
                    env.insert("ANTHROPIC_BASE_URL".into(), Secret::new(base.clone()));
                }
                "ollama" => {
                    let host = base.trim_end_matches('/');
                    env.insert(
                        "OLLAMA_API_BASE".into(),
                        Secret::new(host.strip_suffix("/v1").unwrap_or(host)),
                    );
                }
                _ => {}
            }
        }
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
        let (Some(tokens_re), Some(cache_re)) = (TOKENS_LINE.as_ref(), CACHE_PART.as_ref()) else {
            return Err(ExecutorError::Parse(
                "internal: aider patterns did not compile".into(),
            ));
        };
        let mut outcome = ExecOutcome::default();
        let mut cost: Option<f64> = None;
        let mut body: Vec<&str> = Vec::new();
        let mut in_header = true;
        for line in stdout.lines() {
            let trimmed = line.trim();
            if let Some(c) = tokens_re.captures(trimmed) {
                outcome.input_tokens += count(&c[1]);
                for cache in cache_re.captures_iter(&c[2]) {
                    outcome.input_tokens += count(&cache[1]);
                }
                outcome.output_tokens += count(&c[3]);
                if let Some(m) = c.get(4).and_then(|m| m.as_str().parse::<f64>().ok()) {
                    cost = Some(cost.unwrap_or(0.0) + m);
                }
                continue;
            }
            if in_header
                && (trimmed.is_empty()
                    || ANNOUNCEMENT_PREFIXES.iter().any(|p| trimmed.starts_with(p)))
            {
                continue;
            }
            in_header = false;
            body.push(line);
        }
        outcome.cost_usd = cost;
        outcome.final_text = body.join("\n").trim().to_string();
        Ok(Parsed {
            outcome,
            reported_error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_sums_token_lines() {
        let out = "Aider v0.86.1\nMain model: anthropic/claude-sonnet-4-5 with diff edit format\nGit repo: none\nRepo-map: disabled\n\nHere is my answer.\nSecond line.\n\nTokens: 2.5k sent, 1.1k cache hit, 345 received. Cost: $0.01 message, $0.01 session.\nTokens: 1,000 sent, 5 received. Cost: $0.02 message, $0.03 session.\n";
        let p = Aider::parse(out).expect("parses");
        assert_eq!(p.outcome.final_text, "Here is my answer.\nSecond line.");
        assert_eq!(p.outcome.input_tokens, 2500 + 1100 + 1000);
        assert_eq!(p.outcome.output_tokens, 350);
        assert!((p.outcome.cost_usd.expect("cost") - 0.03).abs() < 1e-9);
        assert!(!p.outcome.posted_via_mcp);
    }

    #[test]
    fn model_names_follow_litellm() {
        assert_eq!(
            aider_model("anthropic", "claude-sonnet-4-5"),
            "anthropic/claude-sonnet-4-5"
        );
        assert_eq!(
            aider_model("openrouter", "anthropic/claude"),
            "openrouter/anthropic/claude"
        );
        assert_eq!(aider_model("openai", "openai/gpt-4o"), "openai/gpt-4o");
        assert_eq!(count("12k"), 12000);
    }
}
