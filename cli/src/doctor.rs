//! `botburrow doctor`: one line per check (✅ ok, ⚠️ warning, ❌ failure) with a hint, exit 1 if
//! any check fails. It reads the same settings as the binaries (the runner's set, which includes
//! the common ones) and never prints a secret.

use crate::agents::{KNOWN_TYPES, validate_dir};
use botburrow_shared::agent::{AgentConfig, McpServerEntry};
use botburrow_shared::grants::Grants;
use botburrow_shared::hub::HubClient;
use botburrow_shared::policy::Policy;
use botburrow_shared::queue::{QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::settings::{
    CoordinatorSettings, EnvSource, PROVIDER_KEY_VARS, ProcessEnv, RunnerSettings, redact_url,
};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Which checks to run (none selected = all).
#[derive(Debug, Clone, Default, Args)]
pub struct DoctorArgs {
    /// Settings parse (both binaries' sets).
    #[arg(long)]
    pub check_config: bool,
    /// Valkey reachable; queue health.
    #[arg(long)]
    pub check_valkey: bool,
    /// Hub reachable and the key accepted.
    #[arg(long)]
    pub check_hub: bool,
    /// Provider keys present for the agents that need them.
    #[arg(long)]
    pub check_providers: bool,
    /// Agent definitions valid; effective grants.
    #[arg(long)]
    pub check_agents: bool,
    /// MCP server programs and CLI executors installed.
    #[arg(long)]
    pub check_mcp: bool,
}

impl DoctorArgs {
    fn all(&self) -> bool {
        !(self.check_config || self.check_valkey || self.check_hub || self.check_providers || self.check_agents || self.check_mcp)
    }
}

/// Outcome of one check line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken.
    Fail,
}

struct Report {
    lines: Vec<(Status, String, String, Option<String>)>,
}

impl Report {
    fn add(&mut self, status: Status, check: &str, detail: impl Into<String>, hint: Option<&str>) {
        self.lines.push((status, check.to_string(), detail.into(), hint.map(str::to_string)));
    }
    fn print(&self) {
        for (status, check, detail, hint) in &self.lines {
            let icon = match status {
                Status::Ok => "✅",
                Status::Warn => "⚠️ ",
                Status::Fail => "❌",
            };
            match hint {
                Some(h) => println!("{icon} {check}: {detail} — hint: {h}"),
                None => println!("{icon} {check}: {detail}"),
            }
        }
    }
    fn failed(&self) -> bool {
        self.lines.iter().any(|l| l.0 == Status::Fail)
    }
}

fn on_path(program: &str, env: &dyn EnvSource) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    let path = env.var("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

/// Runs the selected checks against `env` and prints them; exit 1 if any failed.
pub async fn run(args: DoctorArgs, env: &dyn EnvSource) -> ExitCode {
    let all = args.all();
    let mut r = Report { lines: Vec::new() };
    let runner = RunnerSettings::from_env(env);
    let coordinator = CoordinatorSettings::from_env(env);

    if all || args.check_config {
        match (&runner, &coordinator) {
            (Ok(_), Ok(_)) => r.add(Status::Ok, "config", "coordinator and runner settings parse", None),
            _ => {
                let mut seen = std::collections::BTreeSet::new();
                for p in runner.as_ref().err().into_iter().chain(coordinator.as_ref().err()).flat_map(|e| e.problems.iter()) {
                    if seen.insert((p.variable.clone(), p.message.clone())) {
                        r.add(Status::Fail, "config", format!("{}: {}", p.variable, p.message), Some("fix the variable in the ConfigMap botburrow-agents-config (docs/configuration.md)"));
                    }
                }
            }
        }
    }
    let Ok(settings) = runner else {
        if !(all || args.check_config) {
            r.add(Status::Fail, "config", "settings do not parse; run `botburrow doctor --check-config`", None);
        }
        r.print();
        return ExitCode::from(1);
    };

    if all || args.check_valkey {
        let url = settings.common.valkey_url.expose();
        match tokio::time::timeout(Duration::from_secs(5), ValkeyQueue::connect(url, QueueConfig::default())).await {
            Ok(Ok(q)) => match q.stats().await {
                Ok(s) => {
                    r.add(Status::Ok, "valkey", format!("{} reachable; {} waiting, {} active", redact_url(url), s.total_waiting(), s.active), None);
                    if s.dead > 0 {
                        r.add(Status::Warn, "valkey", format!("{} dead letter(s) in work:dead", s.dead), Some("inspect with `botburrow queue dlq`, requeue with `botburrow queue dlq retry ID`"));
                    }
                    if s.in_backoff > 0 {
                        r.add(Status::Warn, "valkey", format!("{} agent(s) in backoff", s.in_backoff), Some("see `botburrow queue backoff`; clear with `botburrow queue backoff clear AGENT`"));
                    }
                }
                Err(e) => r.add(Status::Fail, "valkey", format!("{}: {e}", redact_url(url)), Some("check VALKEY_URL and that valkey-0 is Running")),
            },
            Ok(Err(e)) => r.add(Status::Fail, "valkey", format!("{}: {e}", redact_url(url)), Some("check VALKEY_URL and that valkey-0 is Running")),
            Err(_) => r.add(Status::Fail, "valkey", format!("{}: no answer within 5s", redact_url(url)), Some("check VALKEY_URL and NetworkPolicy egress to valkey:6379")),
        }
    }

    if all || args.check_hub {
        match HubClient::new(&settings.common.hub_url, settings.common.hub_api_key.clone()) {
            Err(e) => r.add(Status::Fail, "hub", e.to_string(), Some("check HUB_URL")),
            Ok(hub) => match tokio::time::timeout(Duration::from_secs(10), hub.health()).await {
                Ok(Ok(())) => {
                    r.add(Status::Ok, "hub", format!("{} answers /health", settings.common.hub_url), None);
                    match tokio::time::timeout(Duration::from_secs(10), hub.agents_with_notifications()).await {
                        Ok(Ok(agents)) => r.add(Status::Ok, "hub", format!("key accepted; {} agent(s) with unread notifications", agents.len()), None),
                        Ok(Err(e)) => r.add(Status::Fail, "hub", format!("authenticated call failed: {e}"), Some("HUB_API_KEY must be the fleet's service key (agent keys get 403 on cross-agent endpoints)")),
                        Err(_) => r.add(Status::Fail, "hub", "authenticated call timed out", None),
                    }
                }
                Ok(Err(e)) => r.add(Status::Fail, "hub", format!("{}: {e}", settings.common.hub_url), Some("check HUB_URL and NetworkPolicy egress to the Hub")),
                Err(_) => r.add(Status::Fail, "hub", format!("{}: no answer within 10s", settings.common.hub_url), None),
            },
        }
    }

    let defs = settings.agent_definitions_path.clone();
    let agents: Vec<(String, Result<AgentConfig, String>)> = match AgentConfig::list(&defs) {
        Ok(ids) => ids.into_iter().map(|id| { let c = AgentConfig::load(&defs, &id).map_err(|e| e.to_string()); (id, c) }).collect(),
        Err(_) => Vec::new(),
    };

    if all || args.check_agents {
        if !defs.exists() {
            let hint = if settings.agent_definitions_repo.is_some() { "raw-GitHub mode: AGENT_DEFINITIONS_REPO is set" } else { "check the git-sync sidecar and AGENT_DEFINITIONS_PATH (the link git-sync publishes)" };
            let status = if settings.agent_definitions_repo.is_some() { Status::Warn } else { Status::Fail };
            r.add(status, "agents", format!("{} does not exist", defs.display()), Some(hint));
        } else {
            let policy = match settings.agent_permissions_path.as_deref().map(Policy::load).transpose() {
                Ok(p) => p,
                Err(e) => {
                    r.add(Status::Fail, "agents", format!("permission policy: {e}"), Some("fix the ConfigMap agent-permissions"));
                    None
                }
            };
            match validate_dir(&defs, policy.as_ref()) {
                Err(e) => r.add(Status::Fail, "agents", e, None),
                Ok((ids, problems)) => {
                    for p in &problems {
                        let status = if p.severity == "error" { Status::Fail } else { Status::Warn };
                        let field = if p.field.is_empty() { String::new() } else { format!("{}: ", p.field) };
                        r.add(status, "agents", format!("{}: {}{}", p.file, field, p.message), Some("`botburrow agents validate DIR` lists every problem"));
                    }
                    for (id, cfg) in &agents {
                        if let Ok(cfg) = cfg
                            && let Ok(g) = Grants::from_agent(id, cfg) {
                                let eff = match &policy { Some(p) => p.effective(id, &g).0, None => g };
                                r.add(Status::Ok, "agents", format!("{id} ({}): effective grants [{}]", cfg.executor, eff.to_strings().join(", ")), None);
                            }
                    }
                    if ids.is_empty() {
                        r.add(Status::Warn, "agents", format!("no agents under {}", defs.join("agents").display()), None);
                    }
                }
            }
        }
    }

    if all || args.check_providers {
        for var in PROVIDER_KEY_VARS {
            if env.var(var).is_some() {
                r.add(Status::Ok, "providers", format!("{var} is set"), None);
            }
        }
        for (id, cfg) in &agents {
            let Ok(cfg) = cfg else { continue };
            let brains = std::iter::once((cfg.brain.provider.clone(), cfg.brain.api_key_env.clone()))
                .chain(cfg.brain.fallbacks.iter().map(|f| (f.provider.clone(), f.api_key_env.clone())));
            for (provider, key_env) in brains {
                let var = key_env.or_else(|| match provider.as_str() {
                    "anthropic" => Some("ANTHROPIC_API_KEY".into()),
                    "openai" => Some("OPENAI_API_KEY".into()),
                    "openrouter" => Some("OPENROUTER_API_KEY".into()),
                    _ => None,
                });
                match var {
                    Some(v) if env.var(&v).is_none() => r.add(Status::Fail, "providers", format!("{id}: {provider} needs {v}, which is not set"), Some("add it to the Secret botburrow-agents-secrets")),
                    Some(_) | None => r.add(Status::Ok, "providers", format!("{id}: {provider}/{} has its key", cfg.brain.model), None),
                }
            }
        }
    }

    if all || args.check_mcp {
        for (id, cfg) in &agents {
            let Ok(cfg) = cfg else { continue };
            if cfg.executor != "native" && KNOWN_TYPES.contains(&cfg.executor.as_str()) {
                let bin = match cfg.executor.as_str() { "claude-code" => "claude", other => other };
                if on_path(bin, env) {
                    r.add(Status::Ok, "mcp", format!("{id}: executor '{}' found ({bin})", cfg.executor), None);
                } else {
                    r.add(Status::Fail, "mcp", format!("Executor '{}' not available: '{bin}' not found on PATH", cfg.executor), Some("use the runner-cli image variant, or set the agent's type to native"));
                }
            }
            for entry in &cfg.capabilities.mcp_servers {
                let (name, program) = match entry {
                    McpServerEntry::Builtin(n) if n == "hub" => (n.clone(), "botburrow-hub-mcp".to_string()),
                    McpServerEntry::Builtin(n) => (n.clone(), "npx".to_string()),
                    McpServerEntry::Custom(c) => (c.name.clone(), c.command.clone()),
                };
                let exe_dir_has = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(&program).is_file())).unwrap_or(false);
                if on_path(&program, env) || exe_dir_has {
                    r.add(Status::Ok, "mcp", format!("{id}: server '{name}' can start ({program})"), None);
                } else {
                    r.add(Status::Fail, "mcp", format!("{id}: MCP server '{name}' cannot start: '{program}' not found on PATH"), Some("install it in the runner image, or mark the server optional"));
                }
            }
        }
    }

    r.print();
    if r.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// The process environment, for `main`.
pub fn process_env() -> ProcessEnv {
    ProcessEnv
}
