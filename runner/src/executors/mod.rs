//! CLI executors: agents of `type: claude-code | goose | aider | opencode` run one activation by
//! invoking that coding CLI headless, the way its current documentation specifies, instead of the
//! in-process tool loop (`native`, which the runner handles itself).
//!
//! This module owns the [`Executor`] trait, the request/outcome types, the registry
//! ([`executor_for`]), the shared launch pipeline ([`CliExecutor`]: resolve the binary on `PATH`,
//! write the per-run config into a private scratch directory, spawn with a minimal environment in
//! the workspace, enforce the deadline on the whole process group, parse usage) and the per-CLI
//! flavours in the submodules. Each CLI gets the Hub MCP server (`botburrow-hub-mcp`) attached
//! where it supports MCP, so the agent can post; aider has no MCP, so its final text is returned
//! for the runner to post.
//!
//! Environment given to a CLI: `PATH`, `HOME` (= the workspace), `LANG`, the one provider key its
//! brain needs (under the name the CLI reads), and a few non-secret switches of that CLI. Nothing
//! else of the runner's environment leaks through; the Hub key reaches only the Hub MCP server.

pub mod aider;
pub mod claude_code;
pub mod goose;
pub mod opencode;
pub mod process;

use async_trait::async_trait;
use botburrow_shared::agent::AgentConfig;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::Secret;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// LLM turn cap given to a CLI when the agent sets none (the design's `MAX_ITERATIONS` default).
pub const DEFAULT_MAX_TURNS: u32 = 10;

/// File name of the Hub MCP server binary, looked up next to the runner or on `PATH`.
pub const HUB_MCP_BINARY: &str = "botburrow-hub-mcp";

/// Why a CLI activation did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The CLI's program is not installed (checked at startup and on every activation).
    #[error("Executor '{executor}' not available: '{binary}' not found on PATH")]
    NotAvailable {
        /// Executor kind, e.g. `claude-code`.
        executor: String,
        /// Program name (or override path) that was looked for.
        binary: String,
    },
    /// The activation deadline passed; the CLI's whole process group was killed.
    #[error("executor killed at the activation deadline")]
    Timeout,
    /// The activation was cancelled (force-stop or shutdown); the process group was killed.
    #[error("executor cancelled")]
    Cancelled,
    /// The CLI exited non-zero, or reported an error in its machine-readable result.
    #[error("executor failed (exit code {}): {stderr_tail}", exit_code.map_or_else(|| "none".to_string(), |c| c.to_string()))]
    Failed {
        /// Exit code; `None` when it died from a signal.
        exit_code: Option<i32>,
        /// Last part of its stderr (or error message), with every credential value redacted.
        stderr_tail: String,
    },
    /// The CLI exited 0 but its output is not in the documented format.
    #[error("cannot parse executor output: {0}")]
    Parse(String),
    /// Preparing the run (scratch directory, config files) or spawning failed.
    #[error("executor I/O error: {0}")]
    Io(String),
}

/// How the CLI reaches the Hub MCP server (stdio), so the agent can post as itself.
#[derive(Debug, Clone)]
pub struct HubMcpSpec {
    /// Path of `botburrow-hub-mcp` (see [`locate_hub_mcp_binary`]).
    pub binary: PathBuf,
    /// Hub base URL (`HUB_URL` of the server).
    pub hub_url: String,
    /// The agent's own Hub key (`HUB_API_KEY` of the server).
    pub hub_api_key: Option<Secret>,
    /// The agent's id (`HUB_AGENT_ID` of the server).
    pub agent_id: AgentId,
}

/// One activation handed to an executor.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The agent's definition (brain, capabilities, limits).
    pub agent: AgentConfig,
    /// The system prompt the runner composed.
    pub system_prompt: String,
    /// The task prompt (names the post/comment to answer).
    pub prompt: String,
    /// The activation's workspace: the CLI's cwd and `HOME`.
    pub workspace: PathBuf,
    /// Hard deadline of the activation; the process group is killed at this instant.
    pub deadline: Instant,
    /// Fires on force-stop or shutdown; kills the process group.
    pub cancel: CancellationToken,
    /// The Hub MCP server to attach.
    pub hub: HubMcpSpec,
    /// Credentials this agent is granted (already filtered); only the provider key is passed on.
    pub credentials: BTreeMap<String, Secret>,
}

/// What a CLI activation produced, normalised across CLIs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutcome {
    /// The CLI's final answer; the runner posts it when `posted_via_mcp` is false.
    pub final_text: String,
    /// Input tokens (including cache reads/writes where the CLI reports them).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in USD when the CLI reports one.
    pub cost_usd: Option<f64>,
    /// Model the CLI reports (else the configured one when known).
    pub model: Option<String>,
    /// Whether the output shows a Hub post made through the MCP server.
    pub posted_via_mcp: bool,
}

/// Runs one activation through an external coding CLI.
#[async_trait]
pub trait Executor: Send + Sync {
    /// The executor kind as written in `type:` (e.g. `claude-code`).
    fn name(&self) -> &'static str;
    /// Whether the CLI's program can be found; the error text is what operators see.
    fn check_available(&self) -> Result<(), ExecutorError>;
    /// Runs the activation to completion, the deadline, or cancellation.
    async fn run(&self, req: ExecRequest) -> Result<ExecOutcome, ExecutorError>;
}

/// Knobs of the launch pipeline; [`ExecutorOptions::from_env`] is what production uses.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Program name or path; `None` uses the CLI's documented name (`claude`, `goose`, ...).
    pub program: Option<OsString>,
    /// `PATH` used both to find the program and as the child's `PATH`; `None` uses the runner's.
    pub search_path: Option<OsString>,
    /// Grace between SIGTERM and SIGKILL of the process group.
    pub kill_grace: Duration,
    /// Bytes of stdout kept for parsing (tail).
    pub stdout_cap: usize,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            program: None,
            search_path: None,
            kill_grace: Duration::from_secs(5),
            stdout_cap: 8 << 20,
        }
    }
}

impl ExecutorOptions {
    /// Reads the program override (e.g. `BOTBURROW_CLAUDE_BIN`) from the process environment.
    pub fn from_env(bin_env_var: &str) -> Self {
        let program = std::env::var_os(bin_env_var).filter(|v| !v.is_empty());
        Self {
            program,
            ..Self::default()
        }
    }

    fn path_value(&self) -> OsString {
        self.search_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
    }
}

/// A fully built command line: what the CLI will be started with.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Resolved program path.
    pub program: PathBuf,
    /// Arguments (no secrets: argv is visible to every local user).
    pub args: Vec<String>,
    /// The complete environment (the child's environment is cleared first).
    pub env: BTreeMap<String, Secret>,
    /// Working directory (the workspace).
    pub cwd: PathBuf,
}

impl Invocation {
    /// Whether `flag` appears in the arguments.
    pub fn has(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }
    /// The argument following `flag`, if any.
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }
}

/// What a flavour's `prepare` gets besides the request.
#[derive(Debug, Clone)]
pub struct PrepareContext {
    /// Resolved program.
    pub program: PathBuf,
    /// Private (0700) directory for config files; deleted after the run, outside the workspace.
    pub scratch: PathBuf,
    /// The minimal base environment: `PATH`, `HOME`, `LANG`.
    pub base_env: BTreeMap<String, Secret>,
}

/// A flavour's reading of the CLI's stdout.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The normalised outcome.
    pub outcome: ExecOutcome,
    /// An error the CLI reported in its result although it exited 0.
    pub reported_error: Option<String>,
}

/// What differs between CLIs: names, how to build the invocation, how to read the output.
pub trait CliFlavor: Send + Sync + 'static {
    /// Executor kind (`claude-code`).
    const KIND: &'static str;
    /// Documented program name (`claude`).
    const PROGRAM: &'static str;
    /// Env var overriding the program (`BOTBURROW_CLAUDE_BIN`).
    const BIN_ENV: &'static str;
    /// Builds argv/env and writes any config files into `ctx.scratch`.
    fn prepare(req: &ExecRequest, ctx: &PrepareContext) -> Result<Invocation, ExecutorError>;
    /// Reads the CLI's stdout (the complete captured tail).
    fn parse(stdout: &str) -> Result<Parsed, ExecutorError>;
}

/// The launch pipeline shared by every CLI flavour.
pub struct CliExecutor<F: CliFlavor> {
    options: ExecutorOptions,
    _flavor: std::marker::PhantomData<fn() -> F>,
}

impl<F: CliFlavor> CliExecutor<F> {
    /// An executor with explicit options (tests point `search_path` at fake CLIs).
    pub fn with_options(options: ExecutorOptions) -> Self {
        Self {
            options,
            _flavor: std::marker::PhantomData,
        }
    }

    /// An executor configured from the process environment (`BOTBURROW_<CLI>_BIN`).
    pub fn from_env() -> Self {
        Self::with_options(ExecutorOptions::from_env(F::BIN_ENV))
    }

    fn program_name(&self) -> OsString {
        self.options
            .program
            .clone()
            .unwrap_or_else(|| F::PROGRAM.into())
    }

    /// Finds the program: a value with a `/` is a path, anything else is looked up on `PATH`.
    pub fn resolve_program(&self) -> Result<PathBuf, ExecutorError> {
        let name = self.program_name();
        let not_available = || ExecutorError::NotAvailable {
            executor: F::KIND.to_string(),
            binary: name.to_string_lossy().into_owned(),
        };
        let as_path = Path::new(&name);
        if as_path.components().count() > 1 || name.to_string_lossy().contains('/') {
            return if is_executable(as_path) {
                Ok(as_path.to_path_buf())
            } else {
                Err(not_available())
            };
        }
        std::env::split_paths(&self.options.path_value())
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join(&name))
            .find(|p| is_executable(p))
            .ok_or_else(not_available)
    }

    /// Builds the invocation for `req` without running it (writes config files into `scratch`).
    pub fn prepare(&self, req: &ExecRequest, scratch: &Path) -> Result<Invocation, ExecutorError> {
        let program = self.resolve_program()?;
        let mut base_env = BTreeMap::new();
        base_env.insert(
            "PATH".to_string(),
            Secret::new(self.options.path_value().to_string_lossy().into_owned()),
        );
        base_env.insert(
            "HOME".to_string(),
            Secret::new(req.workspace.to_string_lossy().into_owned()),
        );
        let lang = std::env::var("LANG")
            .ok()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "C.UTF-8".into());
        base_env.insert("LANG".to_string(), Secret::new(lang));
        let ctx = PrepareContext {
            program,
            scratch: scratch.to_path_buf(),
            base_env,
        };
        F::prepare(req, &ctx)
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[async_trait]
impl<F: CliFlavor> Executor for CliExecutor<F> {
    fn name(&self) -> &'static str {
        F::KIND
    }

    fn check_available(&self) -> Result<(), ExecutorError> {
        self.resolve_program().map(|_| ())
    }

    async fn run(&self, req: ExecRequest) -> Result<ExecOutcome, ExecutorError> {
        let result = self.run_inner(&req).await;
        if let Err(e) = &result {
            // The activation logs `executor_error` with its context; this is the detail line.
            tracing::debug!(executor = F::KIND, agent_id = %req.hub.agent_id, error = %e, "executor_failed");
        }
        result
    }
}

impl<F: CliFlavor> CliExecutor<F> {
    async fn run_inner(&self, req: &ExecRequest) -> Result<ExecOutcome, ExecutorError> {
        let scratch = tempfile::Builder::new()
            .prefix("botburrow-exec-")
            .tempdir()
            .map_err(|e| ExecutorError::Io(format!("cannot create scratch directory: {e}")))?;
        if !req.workspace.is_dir() {
            return Err(ExecutorError::Io(format!(
                "workspace {} is not a directory",
                req.workspace.display()
            )));
        }
        let inv = self.prepare(req, scratch.path())?;
        if !req.hub.binary.is_file() && F::KIND != aider::Aider::KIND {
            tracing::warn!(executor = F::KIND, binary = %req.hub.binary.display(), "hub MCP server binary not found; the CLI cannot post");
        }
        let mut cmd = tokio::process::Command::new(&inv.program);
        cmd.args(&inv.args).env_clear().current_dir(&inv.cwd);
        for (k, v) in &inv.env {
            cmd.env(k, v.expose());
        }
        let limits = process::Limits {
            deadline: req.deadline,
            kill_grace: self.options.kill_grace,
            stdout_cap: self.options.stdout_cap,
            stderr_cap: 64 << 10,
        };
        tracing::debug!(executor = F::KIND, agent_id = %req.hub.agent_id, program = %inv.program.display(), "executor_started");
        let secrets: Vec<&str> = req
            .credentials
            .values()
            .chain(req.hub.hub_api_key.iter())
            .map(Secret::expose)
            .collect();
        let output = match process::run_bounded(cmd, limits, &req.cancel).await {
            Ok(o) => o,
            Err(process::ProcessError::Timeout { .. }) => return Err(ExecutorError::Timeout),
            Err(process::ProcessError::Cancelled { .. }) => return Err(ExecutorError::Cancelled),
            Err(process::ProcessError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                // Removed since the lookup: not available. Still there: its interpreter (`#!`)
                // is missing, which deserves its own message.
                self.resolve_program()?;
                return Err(ExecutorError::Io(format!(
                    "cannot start {}: {source} (is its #! interpreter installed?)",
                    inv.program.display()
                )));
            }
            Err(e) => return Err(ExecutorError::Io(redact(&e.to_string(), &secrets))),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let code = output.status.and_then(|s| s.code());
        if !output.status.is_some_and(|s| s.success()) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let source = if stderr.trim().is_empty() {
                stdout.as_ref()
            } else {
                stderr.as_ref()
            };
            return Err(ExecutorError::Failed {
                exit_code: code,
                stderr_tail: redact(&tail(source, 2000), &secrets),
            });
        }
        let mut parsed = F::parse(&stdout)?;
        if let Some(err) = parsed.reported_error {
            return Err(ExecutorError::Failed {
                exit_code: code,
                stderr_tail: redact(&tail(&err, 2000), &secrets),
            });
        }
        parsed.outcome.final_text = redact(parsed.outcome.final_text.trim(), &secrets);
        if parsed.outcome.model.is_none() {
            parsed.outcome.model = Some(req.agent.brain.model.clone());
        }
        tracing::debug!(
            executor = F::KIND,
            agent_id = %req.hub.agent_id,
            input_tokens = parsed.outcome.input_tokens,
            output_tokens = parsed.outcome.output_tokens,
            posted_via_mcp = parsed.outcome.posted_via_mcp,
            "executor_completed"
        );
        Ok(parsed.outcome)
    }
}

/// The last `max_chars` characters of `s` (on a char boundary).
fn tail(s: &str, max_chars: usize) -> String {
    let s = s.trim_end();
    let count = s.chars().count();
    if count <= max_chars {
        s.to_string()
    } else {
        s.chars().skip(count - max_chars).collect()
    }
}

/// Replaces every secret value (of a plausible length) in `text` with `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 6 {
            out = out.replace(s, "<redacted>");
        }
    }
    out
}

/// The environment variable a CLI reads for `provider`'s key (OpenAI-compatible servers use
/// OpenAI's); `None` for providers that need no key (ollama).
pub fn provider_key_var(provider: &str) -> Option<&'static str> {
    match provider {
        "anthropic" => Some("ANTHROPIC_API_KEY"),
        "openai" | "vllm" => Some("OPENAI_API_KEY"),
        "openrouter" => Some("OPENROUTER_API_KEY"),
        _ => None,
    }
}

/// The provider key the agent's brain needs, as `(name the CLI reads, value)`: taken from the
/// granted credentials under `brain.api_key_env` (or the provider's default name).
pub fn provider_key(req: &ExecRequest) -> Option<(&'static str, Secret)> {
    let var = provider_key_var(&req.agent.brain.provider)?;
    let source = req.agent.brain.api_key_env.as_deref().unwrap_or(var);
    req.credentials.get(source).map(|v| (var, v.clone()))
}

/// The agent's `hub:` grants as the Hub MCP server's `HUB_GRANTS` value (comma-separated), so a
/// CLI agent gets exactly the Hub tools a native agent would (`hub:read` cannot post). Invalid
/// grants fail closed: no Hub tool at all.
pub fn hub_grants(agent: &AgentConfig) -> String {
    match botburrow_shared::grants::Grants::from_agent("capabilities.grants", agent) {
        Ok(grants) => grants
            .iter()
            .filter(|g| g.service() == "hub")
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(","),
        Err(e) => {
            tracing::warn!(agent = %agent.name, error = %e, "invalid grants; the Hub MCP server gets none");
            String::new()
        }
    }
}

/// The environment of the Hub MCP server: `HUB_URL`, `HUB_API_KEY` (if any), `HUB_AGENT_ID` and
/// `HUB_GRANTS` (the agent's hub grants; the server hides tools they do not cover).
pub fn hub_server_env(hub: &HubMcpSpec, agent: &AgentConfig) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("HUB_URL".to_string(), hub.hub_url.clone());
    if let Some(key) = &hub.hub_api_key {
        env.insert("HUB_API_KEY".to_string(), key.expose().to_string());
    }
    env.insert("HUB_AGENT_ID".to_string(), hub.agent_id.to_string());
    env.insert("HUB_GRANTS".to_string(), hub_grants(agent));
    env
}

/// Writes a file readable only by the runner's user (it may hold the agent's Hub key).
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), ExecutorError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| ExecutorError::Io(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(contents)
        .map_err(|e| ExecutorError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Where `botburrow-hub-mcp` is: next to the current executable, else on `PATH`, else the bare
/// name (the CLI will then report that it cannot start it).
pub fn locate_hub_mcp_binary() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join(HUB_MCP_BINARY);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(HUB_MCP_BINARY))
                .find(|p| is_executable(p))
        })
        .unwrap_or_else(|| PathBuf::from(HUB_MCP_BINARY))
}

/// The executor for an agent `type`, configured from the environment; `None` for `native` (run
/// in-process by the runner) and unknown kinds.
pub fn executor_for(kind: &str) -> Option<Box<dyn Executor>> {
    let bin_env = match kind {
        claude_code::ClaudeCode::KIND => claude_code::ClaudeCode::BIN_ENV,
        goose::Goose::KIND => goose::Goose::BIN_ENV,
        aider::Aider::KIND => aider::Aider::BIN_ENV,
        opencode::OpenCode::KIND => opencode::OpenCode::BIN_ENV,
        _ => return None,
    };
    executor_with(kind, ExecutorOptions::from_env(bin_env))
}

/// The executor for an agent `type` with explicit options (tests, embedding).
pub fn executor_with(kind: &str, options: ExecutorOptions) -> Option<Box<dyn Executor>> {
    match kind {
        claude_code::ClaudeCode::KIND => Some(Box::new(
            CliExecutor::<claude_code::ClaudeCode>::with_options(options),
        )),
        goose::Goose::KIND => Some(Box::new(CliExecutor::<goose::Goose>::with_options(options))),
        aider::Aider::KIND => Some(Box::new(CliExecutor::<aider::Aider>::with_options(options))),
        opencode::OpenCode::KIND => Some(Box::new(
            CliExecutor::<opencode::OpenCode>::with_options(options),
        )),
        _ => None,
    }
}

/// The executor kinds this module provides.
pub const CLI_KINDS: &[&str] = &["claude-code", "goose", "aider", "opencode"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_and_tail() {
        assert_eq!(
            redact("key sk-abcdef123 leaked", &["sk-abcdef123"]),
            "key <redacted> leaked"
        );
        assert_eq!(redact("short ab", &["ab"]), "short ab");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab\n", 3), "ab");
    }

    #[test]
    fn registry_knows_the_cli_kinds_only() {
        for k in CLI_KINDS {
            assert_eq!(executor_for(k).map(|e| e.name()), Some(*k));
        }
        assert!(executor_for("native").is_none());
        assert!(executor_for("bogus").is_none());
    }

    #[test]
    fn provider_keys_follow_the_cli_names() {
        assert_eq!(provider_key_var("anthropic"), Some("ANTHROPIC_API_KEY"));
        assert_eq!(provider_key_var("vllm"), Some("OPENAI_API_KEY"));
        assert_eq!(provider_key_var("ollama"), None);
    }
}
