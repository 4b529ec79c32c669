//! `botburrow agents validate|list`: checks agent definitions the way the runner loads them, plus
//! the JSON Schema (which reports every problem, not just the first).

use crate::AgentsCommand;
use crate::output;
use botburrow_shared::agent::{AgentConfig, AgentConfigError};
use botburrow_shared::grants::{Grants, grant_errors};
use botburrow_shared::policy::Policy;
use std::path::Path;
use std::process::ExitCode;

/// Executor types the runner knows.
pub const KNOWN_TYPES: &[&str] = &["native", "claude-code", "goose", "aider", "opencode"];

const SCHEMA: &str = include_str!("../../agent-definitions-schema/agent-config.schema.json");

/// One problem found in a definition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// Agent id (directory).
    pub agent: String,
    /// File relative to the root.
    pub file: String,
    /// Dotted field path, or empty for whole-file problems.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// `error` fails validation; `warning` does not.
    pub severity: &'static str,
}

/// Validates every agent under `root/agents`, returning all problems found. With a policy, the
/// grants it removes are reported as warnings.
pub fn validate_dir(root: &Path, policy: Option<&Policy>) -> Result<(Vec<String>, Vec<Problem>), String> {
    let ids = AgentConfig::list(root).map_err(|e| format!("{}: cannot list agents: {e}", root.join("agents").display()))?;
    let schema_value: serde_json::Value =
        serde_json::from_str(SCHEMA).map_err(|e| format!("embedded schema is invalid: {e}"))?;
    let validator = jsonschema::validator_for(&schema_value).map_err(|e| format!("embedded schema is invalid: {e}"))?;
    let mut problems = Vec::new();
    for id in &ids {
        let file = format!("agents/{id}/config.yaml");
        let text = match std::fs::read_to_string(root.join(&file)) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem { agent: id.clone(), file, field: String::new(), message: e.to_string(), severity: "error" });
                continue;
            }
        };
        let value: serde_json::Value = match serde_norway::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem { agent: id.clone(), file, field: String::new(), message: format!("invalid YAML: {e}"), severity: "error" });
                continue;
            }
        };
        for err in validator.iter_errors(&value) {
            problems.push(Problem {
                agent: id.clone(),
                file: file.clone(),
                field: pointer_to_path(&err.instance_path.to_string()),
                message: err.to_string(),
                severity: "error",
            });
        }
        match AgentConfig::load(root, id) {
            Ok(cfg) => {
                // The runner's own check: every bad grant, in capabilities.grants and in each
                // custom MCP server's `grant` (default `<name>:*`), one problem per field.
                for e in grant_errors(&file, &cfg) {
                    let (field, message) = match e {
                        AgentConfigError::Field { field, message, .. } => (field, message),
                        other => (other.field().unwrap_or("").to_string(), other.to_string()),
                    };
                    problems.push(Problem { agent: id.clone(), file: file.clone(), field, message, severity: "error" });
                }
                if let (Some(policy), Ok(grants)) = (policy, Grants::from_agent(&file, &cfg)) {
                    let (_, dropped) = policy.effective(id, &grants);
                    for g in dropped {
                        problems.push(Problem {
                            agent: id.clone(),
                            file: file.clone(),
                            field: "capabilities.grants".into(),
                            message: format!("grant '{g}' is removed (or narrowed) by the permission policy"),
                            severity: "warning",
                        });
                    }
                }
                if !KNOWN_TYPES.contains(&cfg.executor.as_str()) {
                    problems.push(Problem {
                        agent: id.clone(),
                        file: file.clone(),
                        field: "type".into(),
                        message: format!("unknown executor '{}' (expected one of {})", cfg.executor, KNOWN_TYPES.join(", ")),
                        severity: "error",
                    });
                }
                if cfg.system_prompt.trim().is_empty() {
                    problems.push(Problem {
                        agent: id.clone(),
                        file: format!("agents/{id}/system-prompt.md"),
                        field: String::new(),
                        message: "missing or empty system prompt".into(),
                        severity: "warning",
                    });
                }
                if cfg.name != *id {
                    problems.push(Problem {
                        agent: id.clone(),
                        file: file.clone(),
                        field: "name".into(),
                        message: format!("name '{}' differs from directory '{id}'; the fleet looks agents up by directory", cfg.name),
                        severity: "warning",
                    });
                }
            }
            Err(e) => {
                let field = e.field().unwrap_or("").to_string();
                // The schema usually reports the same field; keep one line per field.
                if !problems.iter().any(|p| p.agent == *id && p.field == field && p.severity == "error") {
                    problems.push(Problem { agent: id.clone(), file, field, message: e.to_string(), severity: "error" });
                }
            }
        }
    }
    Ok((ids, problems))
}

/// `/brain/temperature` → `brain.temperature`, `/capabilities/grants/1` → `capabilities.grants[1]`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Runs an `agents` subcommand.
pub fn run(cmd: AgentsCommand) -> ExitCode {
    match cmd {
        AgentsCommand::Validate { dir, policy, json } => {
            let policy = match policy.as_deref().map(Policy::load).transpose() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match validate_dir(&dir, policy.as_ref()) {
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            Ok((ids, problems)) => {
                let errors = problems.iter().filter(|p| p.severity == "error").count();
                if json {
                    println!("{}", output::json(&serde_json::json!({"agents": ids, "problems": problems, "errors": errors})));
                } else {
                    for p in &problems {
                        let field = if p.field.is_empty() { String::new() } else { format!("{}: ", p.field) };
                        println!("{}: {}: {}{}", p.severity, p.file, field, p.message);
                    }
                    println!("{} agent(s) checked, {} error(s), {} warning(s)", ids.len(), errors, problems.len() - errors);
                }
                if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
            }
            }
        }
        AgentsCommand::List { dir, json } => {
            let ids = match AgentConfig::list(&dir) {
                Ok(ids) => ids,
                Err(e) => {
                    eprintln!("{}: cannot list agents: {e}", dir.join("agents").display());
                    return ExitCode::from(2);
                }
            };
            let mut rows = Vec::new();
            let mut items = Vec::new();
            for id in ids {
                match AgentConfig::load(&dir, &id) {
                    Ok(cfg) => {
                        rows.push(vec![
                            id.clone(),
                            cfg.executor.clone(),
                            format!("{}/{}", cfg.brain.provider, cfg.brain.model),
                            cfg.capabilities.grants.join(","),
                        ]);
                        items.push(serde_json::json!({"id": id, "type": cfg.executor, "provider": cfg.brain.provider,
                            "model": cfg.brain.model, "grants": cfg.capabilities.grants}));
                    }
                    Err(e) => {
                        rows.push(vec![id.clone(), "INVALID".into(), e.to_string(), String::new()]);
                        items.push(serde_json::json!({"id": id, "error": e.to_string()}));
                    }
                }
            }
            if json {
                println!("{}", output::json(&serde_json::Value::Array(items)));
            } else {
                print!("{}", output::table(&["AGENT", "TYPE", "MODEL", "GRANTS"], &rows));
            }
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(super::pointer_to_path("/brain/temperature"), "brain.temperature");
        assert_eq!(super::pointer_to_path("/capabilities/grants/1"), "capabilities.grants[1]");
        assert_eq!(super::pointer_to_path(""), "");
    }
}
