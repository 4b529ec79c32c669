//! The agent definition model: `agents/<id>/config.yaml` plus `agents/<id>/system-prompt.md`.
//!
//! Lenient about what is missing (every section and field has the original's default), strict
//! about what is wrong: a value of the wrong type is an error naming the file and the field path,
//! e.g. `agents/x/config.yaml: brain.temperature: invalid type: string "hot", expected a number`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why an agent definition could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// No `config.yaml` for that agent.
    #[error("Agent config not found: {}", path.display())]
    NotFound {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("{file}: cannot read: {message}")]
    Io {
        /// File label (relative path).
        file: String,
        /// The I/O error.
        message: String,
    },
    /// Not YAML at all.
    #[error("{file}: invalid YAML: {message}")]
    Yaml {
        /// File label.
        file: String,
        /// Parser message with line and column.
        message: String,
    },
    /// YAML, but a field has the wrong shape.
    #[error("{file}: {field}: {message}")]
    Field {
        /// File label.
        file: String,
        /// Dotted field path, e.g. `brain.temperature` or `capabilities.grants[1]`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl AgentConfigError {
    /// The field path, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            AgentConfigError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn d_type() -> String {
    "claude-code".into()
}
fn d_cache_ttl() -> u64 {
    300
}
fn d_model() -> String {
    "claude-sonnet-4-20250514".into()
}
fn d_provider() -> String {
    "anthropic".into()
}
fn d_temperature() -> f64 {
    0.7
}
fn d_max_tokens() -> u32 {
    4096
}
fn d_true() -> bool {
    true
}
fn d_shell_timeout() -> u64 {
    120
}
fn d_frequency() -> String {
    "staleness".into()
}
fn d_confidence() -> f64 {
    0.7
}
fn d_daily_posts() -> u32 {
    5
}
fn d_daily_comments() -> u32 {
    50
}
fn d_per_thread() -> u32 {
    3
}
fn d_interval() -> u64 {
    60
}
fn d_memory_mb() -> u32 {
    100
}
fn d_strategy() -> String {
    "embedding_search".into()
}
fn d_items() -> u32 {
    10
}

/// A whole agent definition as the runner uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Hub name; defaults to the directory name.
    pub name: String,
    /// Executor: `native`, `claude-code`, `goose`, `aider`, `opencode`.
    #[serde(rename = "type")]
    pub executor: String,
    /// Definition version (informational).
    pub version: Option<String>,
    /// Human-facing name.
    pub display_name: Option<String>,
    /// What the agent is for.
    pub description: Option<String>,
    /// Seconds the parsed config may be cached in `cache:agent:{id}`.
    pub cache_ttl: u64,
    /// Model settings.
    pub brain: Brain,
    /// What the agent may do.
    pub capabilities: Capabilities,
    /// What it looks for in discovery.
    pub interests: Interests,
    /// How it behaves.
    pub behavior: Behavior,
    /// Memory settings (declared; not used by the runner yet).
    pub memory: Memory,
    /// Legacy network section; `enabled: false` withholds file and shell tools.
    pub network: Network,
    /// Contents of `system-prompt.md` ("" when missing).
    pub system_prompt: String,
    /// Deprecated: the original's R2 bucket path. Accepted (a string, default `""`) so existing
    /// definitions keep loading; nothing reads it.
    pub r2_path: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            executor: d_type(),
            version: None,
            display_name: None,
            description: None,
            cache_ttl: d_cache_ttl(),
            brain: Brain::default(),
            capabilities: Capabilities::default(),
            interests: Interests::default(),
            behavior: Behavior::default(),
            memory: Memory::default(),
            network: Network::default(),
            system_prompt: String::new(),
            r2_path: String::new(),
        }
    }
}

/// LLM settings of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Brain {
    /// Model id as the provider names it.
    pub model: String,
    /// `anthropic`, `openai`, `openrouter`, `vllm`, `ollama` (the last three speak Chat Completions).
    pub provider: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Output token cap per request.
    pub max_tokens: u32,
    /// Base URL following each SDK's convention (OpenAI-compatible includes `/v1`).
    pub api_base: Option<String>,
    /// Env var holding the key (default per provider).
    pub api_key_env: Option<String>,
    /// Ordered fallbacks tried on retryable failure.
    pub fallbacks: Vec<FallbackBrain>,
    /// Requests per minute allowed to this provider from one runner.
    pub rpm: Option<u32>,
    /// Tokens per minute allowed to this provider from one runner.
    pub tpm: Option<u32>,
}

impl Default for Brain {
    fn default() -> Self {
        Self {
            model: d_model(),
            provider: d_provider(),
            temperature: d_temperature(),
            max_tokens: d_max_tokens(),
            api_base: None,
            api_key_env: None,
            fallbacks: Vec::new(),
            rpm: None,
            tpm: None,
        }
    }
}

/// One entry of `brain.fallbacks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackBrain {
    /// Provider name.
    pub provider: String,
    /// Model id.
    pub model: String,
    /// Optional base URL.
    #[serde(default)]
    pub api_base: Option<String>,
    /// Optional key variable.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// What an agent may do.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// `service:scope` grants, e.g. `hub:write`, `github:read`.
    pub grants: Vec<String>,
    /// Skill names (declared).
    pub skills: Vec<String>,
    /// MCP servers: built-in names or custom entries.
    pub mcp_servers: Vec<McpServerEntry>,
    /// Shell tool policy.
    pub shell: Shell,
    /// Spawning settings (declared).
    pub spawning: Spawning,
}

/// An entry of `capabilities.mcp_servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum McpServerEntry {
    /// A built-in server by name: `github`, `brave`, `filesystem`, `postgres`, `hub`.
    Builtin(String),
    /// An agent's own server.
    Custom(CustomMcpServer),
}

impl McpServerEntry {
    /// The server name used in tool names (`mcp_<name>_<tool>`).
    pub fn name(&self) -> &str {
        match self {
            McpServerEntry::Builtin(n) => n,
            McpServerEntry::Custom(c) => &c.name,
        }
    }
}

/// A custom stdio MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomMcpServer {
    /// Server name.
    pub name: String,
    /// Program to run.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment (plain values; secrets come from grants).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// When true, a failure to start is logged and the activation goes on without it.
    #[serde(default)]
    pub optional: bool,
    /// The grant that unlocks this server (default `<name>:*`).
    #[serde(default)]
    pub grant: Option<String>,
    /// Per-tool scopes (`read` / `write`); tools not listed follow the server's grant.
    #[serde(default)]
    pub tool_scopes: BTreeMap<String, String>,
}

/// Shell tool policy (`capabilities.shell`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shell {
    /// Whether `Bash` is offered at all.
    pub enabled: bool,
    /// First words allowed (empty = any not blocked).
    pub allowed_commands: Vec<String>,
    /// Substrings or regexes that refuse a command.
    pub blocked_patterns: Vec<String>,
    /// Per-command timeout.
    pub timeout_seconds: u64,
}

impl Default for Shell {
    fn default() -> Self {
        Self { enabled: false, allowed_commands: Vec::new(), blocked_patterns: Vec::new(), timeout_seconds: d_shell_timeout() }
    }
}

/// Spawning settings (declared only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Spawning {
    /// May propose new agents.
    pub can_propose: bool,
    /// Templates it may use.
    pub allowed_templates: Vec<String>,
}

/// Discovery interests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Interests {
    /// Topics (prompt hints).
    pub topics: Vec<String>,
    /// Communities to read (default `m/general`).
    pub communities: Vec<String>,
    /// Keywords to match.
    pub keywords: Vec<String>,
    /// Agents to follow.
    pub follow_agents: Vec<String>,
}

/// How an agent behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behavior {
    /// Answer mentions.
    pub respond_to_mentions: bool,
    /// Answer replies to its posts.
    pub respond_to_replies: bool,
    /// Answer direct messages.
    pub respond_to_dms: bool,
    /// LLM turn cap; `None` or 0 uses `MAX_ITERATIONS`.
    pub max_iterations: Option<u32>,
    /// May start new threads.
    pub can_create_posts: bool,
    /// Legacy daily post cap (prompt only).
    pub max_daily_posts: u32,
    /// Legacy daily comment cap (prompt only).
    pub max_daily_comments: u32,
    /// Discovery settings.
    pub discovery: Discovery,
    /// Enforced discovery limits.
    pub limits: Limits,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            respond_to_mentions: true,
            respond_to_replies: true,
            respond_to_dms: true,
            max_iterations: None,
            can_create_posts: true,
            max_daily_posts: d_daily_posts(),
            max_daily_comments: d_daily_comments(),
            discovery: Discovery::default(),
            limits: Limits::default(),
        }
    }
}

/// `behavior.discovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Discovery {
    /// Whether discovery is on.
    pub enabled: bool,
    /// `staleness`, `hourly`, ...
    pub frequency: String,
    /// Answer questions it finds.
    pub respond_to_questions: bool,
    /// Join discussions it finds.
    pub respond_to_discussions: bool,
    /// Confidence threshold.
    pub min_confidence: f64,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            enabled: false,
            frequency: d_frequency(),
            respond_to_questions: false,
            respond_to_discussions: false,
            min_confidence: d_confidence(),
        }
    }
}

/// `behavior.limits`: enforced per agent per UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// New posts per day.
    pub max_daily_posts: u32,
    /// Comments per day.
    pub max_daily_comments: u32,
    /// Replies in one thread.
    pub max_responses_per_thread: u32,
    /// Seconds between two posts or comments.
    pub min_interval_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_daily_posts: d_daily_posts(),
            max_daily_comments: d_daily_comments(),
            max_responses_per_thread: d_per_thread(),
            min_interval_seconds: d_interval(),
        }
    }
}

/// `memory` (declared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// On or off.
    pub enabled: bool,
    /// What to remember.
    pub remember: Remember,
    /// Size cap.
    pub max_size_mb: u32,
    /// Retrieval settings.
    pub retrieval: Retrieval,
}

impl Default for Memory {
    fn default() -> Self {
        Self { enabled: false, remember: Remember::default(), max_size_mb: d_memory_mb(), retrieval: Retrieval::default() }
    }
}

/// `memory.remember`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Remember {
    /// People to remember conversations with.
    pub conversations_with: Vec<String>,
    /// Remember projects.
    pub projects_worked_on: bool,
    /// Remember decisions.
    pub decisions_made: bool,
    /// Remember feedback.
    pub feedback_received: bool,
}

/// `memory.retrieval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retrieval {
    /// Strategy name.
    pub strategy: String,
    /// Items per prompt.
    pub max_context_items: u32,
    /// Threshold.
    pub relevance_threshold: f64,
}

impl Default for Retrieval {
    fn default() -> Self {
        Self { strategy: d_strategy(), max_context_items: d_items(), relevance_threshold: d_confidence() }
    }
}

/// Legacy `network` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// When false, file and shell tools are withheld.
    pub enabled: bool,
    /// Allowed hosts (declared).
    pub allowed_hosts: Vec<String>,
    /// Blocked hosts (declared).
    pub blocked_hosts: Vec<String>,
}

impl Default for Network {
    fn default() -> Self {
        Self { enabled: d_true(), allowed_hosts: Vec::new(), blocked_hosts: Vec::new() }
    }
}

fn friendly(message: &str) -> String {
    let mut m = message.to_string();
    for (from, to) in [
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(from, to);
    }
    m
}

impl AgentConfig {
    /// Parses a `config.yaml` text. `file` labels errors; `default_name` fills a missing `name`.
    pub fn parse(file: &str, yaml: &str, default_name: &str, system_prompt: String) -> Result<Self, AgentConfigError> {
        let value: serde_json::Value = if yaml.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_norway::from_str(yaml)
                .map_err(|e| AgentConfigError::Yaml { file: file.to_string(), message: e.to_string() })?
        };
        let value = match value {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            serde_json::Value::Object(map) => serde_json::Value::Object(map),
            other => {
                return Err(AgentConfigError::Field {
                    file: file.to_string(),
                    field: "(root)".into(),
                    message: format!("expected a mapping, found {}", json_kind(&other)),
                });
            }
        };
        let mut cfg: AgentConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            AgentConfigError::Field { file: file.to_string(), field, message: friendly(&e.inner().to_string()) }
        })?;
        if cfg.name.trim().is_empty() {
            cfg.name = default_name.to_string();
        }
        cfg.system_prompt = system_prompt;
        Ok(cfg)
    }

    /// Loads `<root>/agents/<id>/config.yaml` and its optional `system-prompt.md`.
    pub fn load(root: &Path, agent_id: &str) -> Result<Self, AgentConfigError> {
        let dir = root.join("agents").join(agent_id);
        let config_path = dir.join("config.yaml");
        let label = format!("agents/{agent_id}/config.yaml");
        let yaml = match std::fs::read_to_string(&config_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentConfigError::NotFound { path: config_path });
            }
            Err(e) => return Err(AgentConfigError::Io { file: label, message: e.to_string() }),
        };
        let prompt = match std::fs::read_to_string(dir.join("system-prompt.md")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(AgentConfigError::Io {
                    file: format!("agents/{agent_id}/system-prompt.md"),
                    message: e.to_string(),
                });
            }
        };
        Self::parse(&label, &yaml, agent_id, prompt)
    }

    /// Agent ids under `<root>/agents` that have a `config.yaml`, sorted.
    pub fn list(root: &Path) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(root.join("agents"))? {
            let entry = entry?;
            if entry.path().join("config.yaml").is_file()
                && let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_string());
                }
        }
        out.sort();
        Ok(out)
    }

    /// The LLM turn cap, given the runner's default.
    pub fn max_iterations(&self, default: u32) -> u32 {
        match self.behavior.max_iterations {
            Some(n) if n > 0 => n,
            _ => default,
        }
    }

    /// Communities for discovery (default `m/general`).
    pub fn discovery_communities(&self) -> Vec<String> {
        if self.interests.communities.is_empty() {
            vec!["m/general".to_string()]
        } else {
            self.interests.communities.clone()
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_the_original_defaults() {
        let cfg = AgentConfig::parse("agents/a/config.yaml", "brain: {model: m}", "a", String::new()).expect("ok");
        assert_eq!(cfg.name, "a");
        assert_eq!(cfg.executor, "claude-code");
        assert_eq!(cfg.cache_ttl, 300);
        assert_eq!(cfg.brain.provider, "anthropic");
        assert_eq!(cfg.brain.temperature, 0.7);
        assert_eq!(cfg.brain.max_tokens, 4096);
        assert!(cfg.behavior.respond_to_mentions && cfg.behavior.respond_to_replies && cfg.behavior.respond_to_dms);
        assert_eq!(cfg.behavior.limits.max_responses_per_thread, 3);
        assert_eq!(cfg.behavior.limits.min_interval_seconds, 60);
        assert_eq!(cfg.capabilities.shell.timeout_seconds, 120);
        assert!(!cfg.capabilities.shell.enabled);
        assert!(cfg.network.enabled);
        assert_eq!(cfg.max_iterations(10), 10);
        assert_eq!(cfg.discovery_communities(), vec!["m/general"]);
        assert_eq!(cfg.r2_path, "");
        let legacy = AgentConfig::parse("f", "r2_path: agents/a\n", "a", String::new()).expect("deprecated field accepted");
        assert_eq!(legacy.r2_path, "agents/a");
        let empty = AgentConfig::parse("f", "", "b", String::new()).expect("empty is fine");
        assert_eq!(empty.brain.model, "claude-sonnet-4-20250514");
    }

    #[test]
    fn wrong_types_name_file_and_field() {
        let err = AgentConfig::parse("agents/x/config.yaml", "brain:\n  temperature: hot\n", "x", String::new())
            .expect_err("an error");
        assert_eq!(err.field(), Some("brain.temperature"));
        let text = err.to_string();
        assert!(text.starts_with("agents/x/config.yaml: brain.temperature:"), "{text}");
        assert!(text.contains("expected a number"), "{text}");

        let err = AgentConfig::parse("f.yaml", "capabilities:\n  grants: [hub:read, 3]\n", "x", String::new())
            .expect_err("an error");
        assert_eq!(err.field(), Some("capabilities.grants[1]"), "{err}");

        let err = AgentConfig::parse("f.yaml", "behavior: {respond_to_mentions: maybe}", "x", String::new()).expect_err("an error");
        assert_eq!(err.field(), Some("behavior.respond_to_mentions"), "{err}");

        let err = AgentConfig::parse("f.yaml", "name: [unclosed", "x", String::new()).expect_err("an error");
        assert!(matches!(err, AgentConfigError::Yaml { .. }), "{err}");
        let err = AgentConfig::parse("f.yaml", "- a list", "x", String::new()).expect_err("an error");
        assert_eq!(err.field(), Some("(root)"));
    }

    #[test]
    fn full_schema_example_parses() {
        let yaml = r#"
version: "1.0.0"
name: full-schema-agent
type: native
cache_ttl: 180
brain: {provider: openai, model: gpt-4o-mini, api_base: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY, temperature: 0.7, max_tokens: 4096}
capabilities:
  grants: [github:read, hub:write]
  skills: [hub-post, test-skill]
  mcp_servers: [github, {name: custom-mcp, command: python, args: ["-m","custom_mcp"], env: {CUSTOM_VAR: value}}]
  shell: {enabled: true, allowed_commands: [git, python], blocked_patterns: ["rm -rf"], timeout_seconds: 300}
  spawning: {can_propose: true, allowed_templates: [code-specialist, researcher]}
interests: {topics: [python], communities: [m/code-help], keywords: [bug], follow_agents: [other-agent]}
behavior: {respond_to_dms: false, max_iterations: 20, discovery: {enabled: true, frequency: hourly, min_confidence: 0.8},
           limits: {max_responses_per_thread: 5, min_interval_seconds: 30}}
memory: {enabled: true, remember: {conversations_with: [user1], projects_worked_on: true}, max_size_mb: 200,
         retrieval: {strategy: embedding_search, max_context_items: 15}}
"#;
        let cfg = AgentConfig::parse("f", yaml, "x", "prompt".into()).expect("ok");
        assert_eq!(cfg.name, "full-schema-agent");
        assert_eq!(cfg.executor, "native");
        assert_eq!(cfg.capabilities.mcp_servers.len(), 2);
        assert_eq!(cfg.capabilities.mcp_servers[1].name(), "custom-mcp");
        assert!(!cfg.behavior.respond_to_dms);
        assert_eq!(cfg.max_iterations(10), 20);
        assert_eq!(cfg.behavior.limits.max_daily_posts, 5);
        assert_eq!(cfg.system_prompt, "prompt");
    }

    #[test]
    fn load_reports_missing_agent_with_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = AgentConfig::load(dir.path(), "ghost").expect_err("an error");
        assert!(err.to_string().starts_with("Agent config not found: "), "{err}");
        assert!(err.to_string().ends_with("agents/ghost/config.yaml"), "{err}");
    }
}
