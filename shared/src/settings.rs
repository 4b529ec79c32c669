//! Settings: every environment variable of design §3, parsed once into plain structs.
//!
//! Canonical names are unprefixed (`HUB_URL`); `BOTBURROW_<NAME>` is accepted as an alias and wins
//! when both are set. Parsing never stops at the first problem: every invalid or missing variable
//! is collected so an operator fixes them all in one go, and binaries exit with code 64
//! (`EX_USAGE`). [`SETTINGS`] is the single table of names; docs and manifests are checked
//! against it.

use crate::queue::QueueConfig;
use crate::work::RunnerMode;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Exit code for invalid settings (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: i32 = 64;

/// Which binary reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Coordinator and runner.
    Both,
    /// Coordinator only.
    Coordinator,
    /// Runner only.
    Runner,
}

/// One documented setting; the table drives docs, manifests checks and `doctor`.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    /// Canonical (unprefixed) name.
    pub name: &'static str,
    /// Other accepted names, lower precedence than the canonical ones.
    pub aliases: &'static [&'static str],
    /// The default, as an operator would write it; empty when there is none.
    pub default: &'static str,
    /// Which binary reads it.
    pub reader: Reader,
    /// Whether the value is a secret (never logged or printed).
    pub secret: bool,
    /// One line for the configuration reference.
    pub doc: &'static str,
}

macro_rules! spec {
    ($name:literal, [$($alias:literal),*], $default:literal, $reader:ident, $secret:literal, $doc:literal) => {
        SettingSpec { name: $name, aliases: &[$($alias),*], default: $default, reader: Reader::$reader, secret: $secret, doc: $doc }
    };
}

/// Every setting the binaries read. Provider keys and tool credentials are read by name on demand
/// (see [`PROVIDER_KEY_VARS`] and [`TOOL_CREDENTIAL_VARS`]).
pub const SETTINGS: &[SettingSpec] = &[
    spec!("HUB_URL", [], "", Both, false, "Hub base URL, without /api/v1 (required)"),
    spec!("HUB_API_KEY", [], "", Both, true, "Bearer key the fleet uses on the Hub"),
    spec!("VALKEY_URL", ["REDIS_URL"], "redis://127.0.0.1:6379", Both, true, "Valkey URL; rediss:// for TLS"),
    spec!("LOG_LEVEL", ["RUST_LOG"], "info", Both, false, "a level or tracing directives"),
    spec!("LOG_FORMAT", [], "json", Both, false, "json or text"),
    spec!("METRICS_PORT", [], "9090 (coordinator) / 9091 (runner)", Both, false, "health and metrics port"),
    spec!("SHUTDOWN_GRACE", [], "100", Both, false, "seconds to drain on SIGTERM"),
    spec!("POLL_INTERVAL", [], "30", Coordinator, false, "seconds between polls when the Hub has no long-poll"),
    spec!("LONG_POLL_TIMEOUT", [], "30", Coordinator, false, "timeout sent to /notifications/poll"),
    spec!("MIN_STALENESS_SECONDS", ["MIN_ACTIVATION_INTERVAL"], "900", Coordinator, false, "staleness for discovery work"),
    spec!("DISCOVERY_INTERVAL", [], "60", Coordinator, false, "seconds between stale-agent lookups"),
    spec!("LEADER_ELECTION", [], "auto", Coordinator, false, "kubernetes, valkey, none or auto"),
    spec!("LEASE_NAME", [], "botburrow-coordinator", Coordinator, false, "Lease / lock name"),
    spec!("POD_NAMESPACE", [], "default", Coordinator, false, "namespace of the Lease (downward API)"),
    spec!("POD_NAME", ["HOSTNAME"], "", Coordinator, false, "leader identity (downward API)"),
    spec!("CACHE_WEBHOOK_TOKEN", [], "", Coordinator, true, "Bearer token for POST /api/v1/cache/invalidate"),
    spec!("MAX_ATTEMPTS", [], "5", Both, false, "claims of one item before it is dead-lettered"),
    spec!("BACKOFF_THRESHOLD", [], "5", Both, false, "consecutive failures of an agent that open its circuit breaker"),
    spec!("BACKOFF_BASE_SECONDS", [], "60", Both, false, "first backoff (s) of an agent; doubles per further failure"),
    spec!("BACKOFF_MAX_SECONDS", [], "3600", Both, false, "longest backoff (s) of an agent; at least BACKOFF_BASE_SECONDS"),
    spec!("FAILURE_DECAY_SECONDS", [], "3600", Both, false, "a failure this long (s) after the previous one restarts the count"),
    spec!("RUNNER_MODE", [], "hybrid", Runner, false, "notification, exploration or hybrid"),
    spec!("RUNNER_ID", ["HOSTNAME"], "", Runner, false, "unique runner id"),
    spec!("MAX_CONCURRENT_ACTIVATIONS", [], "1", Runner, false, "activations run at once"),
    spec!("ACTIVATION_TIMEOUT", [], "300", Runner, false, "hard deadline (s) of one activation"),
    spec!("MAX_ITERATIONS", [], "10", Runner, false, "default LLM turn cap"),
    spec!("AGENT_DEFINITIONS_PATH", [], "/configs/agent-definitions", Runner, false, "git-sync link or plain directory"),
    spec!("AGENT_DEFINITIONS_REPO", [], "", Runner, false, "owner/repo for raw-GitHub mode"),
    spec!("AGENT_DEFINITIONS_BRANCH", [], "main", Runner, false, "branch for raw-GitHub mode"),
    spec!("GITHUB_TOKEN", [], "", Runner, true, "token for a private definitions repo"),
    spec!("AGENT_PERMISSIONS_PATH", [], "", Runner, false, "permission policy YAML (ConfigMap agent-permissions)"),
    spec!("WORKSPACE_ROOT", [], "/workspaces", Runner, false, "per-activation workspaces"),
    spec!("LLM_PRICES_PATH", [], "", Runner, false, "YAML/JSON price table overriding built-in prices"),
];

/// Provider API keys the runner reads by name (agents may name others in `brain.api_key_env`).
pub const PROVIDER_KEY_VARS: &[&str] = &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"];

/// Tool credentials the runner hands only to the MCP servers an agent's grants allow.
pub const TOOL_CREDENTIAL_VARS: &[&str] = &["GITHUB_PAT", "BRAVE_API_KEY", "DATABASE_URL"];

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The raw value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Removes a password from a URL (`redis://:pw@host` → `redis://:***@host`) for logs and doctor.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Where settings come from: the process environment, or a map in tests.
pub trait EnvSource {
    /// The value of a variable, if set and non-empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.trim().is_empty())
    }
}

impl EnvSource for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|s| s.to_string()).filter(|v| !v.trim().is_empty())
    }
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The variable as the operator set it (e.g. `BOTBURROW_POLL_INTERVAL`).
    pub variable: String,
    /// What is wrong with it.
    pub message: String,
}

/// All invalid settings found in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    /// Every problem, in table order.
    pub problems: Vec<SettingProblem>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid settings ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

impl SettingsError {
    /// Whether a problem names this variable (tests and doctor use it).
    pub fn names(&self, variable: &str) -> bool {
        self.problems.iter().any(|p| p.variable == variable)
    }
}

/// Reads variables with alias precedence, collecting problems instead of failing fast.
struct Lookup<'a> {
    env: &'a dyn EnvSource,
    problems: Vec<SettingProblem>,
}

impl<'a> Lookup<'a> {
    fn new(env: &'a dyn EnvSource) -> Self {
        Self { env, problems: Vec::new() }
    }

    /// Returns (variable actually used, value). Order: `BOTBURROW_NAME`, `NAME`, then each alias
    /// (`BOTBURROW_ALIAS`, `ALIAS`).
    fn raw(&self, name: &str) -> Option<(String, String)> {
        let spec = SETTINGS.iter().find(|s| s.name == name);
        let mut names = vec![name];
        if let Some(spec) = spec {
            names.extend(spec.aliases.iter().copied());
        }
        for n in names {
            for candidate in [format!("BOTBURROW_{n}"), n.to_string()] {
                if let Some(v) = self.env.var(&candidate) {
                    return Some((candidate, v.trim().to_string()));
                }
            }
        }
        None
    }

    fn string(&self, name: &str) -> Option<String> {
        self.raw(name).map(|(_, v)| v)
    }

    fn required(&mut self, name: &str) -> String {
        match self.raw(name) {
            Some((_, v)) => v,
            None => {
                self.problems.push(SettingProblem {
                    variable: name.to_string(),
                    message: "is required but not set".into(),
                });
                String::new()
            }
        }
    }

    fn parsed<T: FromStr>(&mut self, name: &str, default: T, what: &str) -> T
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => default,
            Some((var, v)) => match v.parse::<T>() {
                Ok(x) => x,
                Err(e) => {
                    self.problems.push(SettingProblem {
                        variable: var,
                        message: format!("'{v}' is not {what}: {e}"),
                    });
                    default
                }
            },
        }
    }

    fn seconds(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(self.parsed(name, default, "a whole number of seconds"))
    }

    fn positive(&mut self, name: &str, default: u32) -> u32 {
        let v = self.parsed(name, default, "a positive whole number");
        if v == 0 {
            let var = self.raw(name).map(|(n, _)| n).unwrap_or_else(|| name.to_string());
            self.problems.push(SettingProblem { variable: var, message: "must be at least 1".into() });
            return default;
        }
        v
    }

    fn positive_seconds(&mut self, name: &str, default: u32) -> Duration {
        Duration::from_secs(u64::from(self.positive(name, default)))
    }

    fn finish<T>(self, value: T) -> Result<T, SettingsError> {
        if self.problems.is_empty() { Ok(value) } else { Err(SettingsError { problems: self.problems }) }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (the default, for log pipelines).
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "text" | "pretty" => Ok(LogFormat::Text),
            other => Err(format!("unknown log format '{other}' (expected json or text)")),
        }
    }
}

/// How the coordinator elects its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaderElection {
    /// Kubernetes when running in a cluster, otherwise Valkey.
    #[default]
    Auto,
    /// A `coordination.k8s.io/v1` Lease.
    Kubernetes,
    /// A `SET NX PX` lock in Valkey.
    Valkey,
    /// Always leader (single coordinator, local use).
    None,
}

impl FromStr for LeaderElection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "kubernetes" | "k8s" | "lease" => Ok(Self::Kubernetes),
            "valkey" | "redis" => Ok(Self::Valkey),
            "none" | "off" => Ok(Self::None),
            other => Err(format!("unknown leader election '{other}' (expected auto, kubernetes, valkey or none)")),
        }
    }
}

/// Settings read by every process.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// Hub base URL without `/api/v1`, trailing slash removed.
    pub hub_url: String,
    /// The fleet's Hub key, if any.
    pub hub_api_key: Option<Secret>,
    /// Valkey URL (may carry a password, hence secret).
    pub valkey_url: Secret,
    /// A level or tracing directives.
    pub log_level: String,
    /// JSON or text logs.
    pub log_format: LogFormat,
    /// Health and metrics port.
    pub metrics_port: u16,
    /// How long to drain on SIGTERM.
    pub shutdown_grace: Duration,
    /// Claims of one item before it is dead-lettered.
    pub max_attempts: u32,
    /// Consecutive failures of an agent that open its circuit breaker.
    pub backoff_threshold: u32,
    /// Backoff at exactly `backoff_threshold` failures; doubles per further failure.
    pub backoff_base: Duration,
    /// Upper bound of one backoff (never below `backoff_base`).
    pub backoff_max: Duration,
    /// A failure this long after the previous one restarts the count.
    pub failure_decay: Duration,
}

impl CommonSettings {
    fn read(l: &mut Lookup<'_>, default_port: u16) -> Self {
        let hub_url = l.required("HUB_URL");
        let scheme_ok = hub_url.starts_with("http://") || hub_url.starts_with("https://");
        if !hub_url.is_empty() && !scheme_ok {
            l.problems.push(SettingProblem {
                variable: "HUB_URL".into(),
                message: format!("'{hub_url}' must start with http:// or https://"),
            });
        }
        let valkey_url = l.string("VALKEY_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        if !(valkey_url.starts_with("redis://")
            || valkey_url.starts_with("rediss://")
            || valkey_url.starts_with("valkey://")
            || valkey_url.starts_with("valkeys://"))
        {
            l.problems.push(SettingProblem {
                variable: "VALKEY_URL".into(),
                message: "must start with redis:// or rediss://".into(),
            });
        }
        let s = Self {
            hub_url: hub_url.trim_end_matches('/').to_string(),
            hub_api_key: l.string("HUB_API_KEY").map(Secret::new),
            valkey_url: Secret::new(valkey_url),
            log_level: l.string("LOG_LEVEL").unwrap_or_else(|| "info".into()),
            log_format: l.parsed("LOG_FORMAT", LogFormat::Json, "a log format"),
            metrics_port: l.parsed("METRICS_PORT", default_port, "a port number"),
            shutdown_grace: l.seconds("SHUTDOWN_GRACE", 100),
            max_attempts: l.positive("MAX_ATTEMPTS", 5),
            backoff_threshold: l.positive("BACKOFF_THRESHOLD", 5),
            backoff_base: l.positive_seconds("BACKOFF_BASE_SECONDS", 60),
            backoff_max: l.positive_seconds("BACKOFF_MAX_SECONDS", 3600),
            failure_decay: l.positive_seconds("FAILURE_DECAY_SECONDS", 3600),
        };
        // A cap below the first backoff would silently override BACKOFF_BASE_SECONDS. Checked only
        // when both parsed, naming the one the operator set (the other is at its default).
        let unparsed = l.problems.iter().any(|p| {
            p.variable.ends_with("BACKOFF_BASE_SECONDS") || p.variable.ends_with("BACKOFF_MAX_SECONDS")
        });
        if !unparsed && s.backoff_max < s.backoff_base {
            let variable = l
                .raw("BACKOFF_MAX_SECONDS")
                .or_else(|| l.raw("BACKOFF_BASE_SECONDS"))
                .map(|(n, _)| n)
                .unwrap_or_else(|| "BACKOFF_MAX_SECONDS".to_string());
            l.problems.push(SettingProblem {
                variable,
                message: format!(
                    "the longest backoff ({} s) is below the first one, BACKOFF_BASE_SECONDS ({} s)",
                    s.backoff_max.as_secs(),
                    s.backoff_base.as_secs()
                ),
            });
        }
        s
    }

    /// The work queue's tunables from these settings (dead-lettering and the per-agent circuit
    /// breaker); everything else keeps [`QueueConfig`]'s defaults.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            max_attempts: self.max_attempts,
            failure_threshold: self.backoff_threshold,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            failure_decay: self.failure_decay,
            ..QueueConfig::default()
        }
    }
}

/// Everything the coordinator reads.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Shared settings.
    pub common: CommonSettings,
    /// Fallback poll period when the Hub has no long-poll.
    pub poll_interval: Duration,
    /// `timeout` sent to `/notifications/poll`.
    pub long_poll_timeout: Duration,
    /// Staleness that makes an agent due for discovery.
    pub min_staleness: Duration,
    /// How often stale agents are looked up.
    pub discovery_interval: Duration,
    /// Election backend.
    pub leader_election: LeaderElection,
    /// Lease (or lock) name.
    pub lease_name: String,
    /// Lease namespace.
    pub pod_namespace: String,
    /// This candidate's identity.
    pub pod_name: String,
    /// Token for the cache webhook; `None` disables it.
    pub cache_webhook_token: Option<Secret>,
}

impl CoordinatorSettings {
    /// Parses the coordinator's settings, reporting every problem at once.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let mut l = Lookup::new(env);
        let common = CommonSettings::read(&mut l, 9090);
        let s = Self {
            common,
            poll_interval: l.seconds("POLL_INTERVAL", 30),
            long_poll_timeout: l.seconds("LONG_POLL_TIMEOUT", 30),
            min_staleness: l.seconds("MIN_STALENESS_SECONDS", 900),
            discovery_interval: l.seconds("DISCOVERY_INTERVAL", 60),
            leader_election: l.parsed("LEADER_ELECTION", LeaderElection::Auto, "a leader election mode"),
            lease_name: l.string("LEASE_NAME").unwrap_or_else(|| "botburrow-coordinator".into()),
            pod_namespace: l.string("POD_NAMESPACE").unwrap_or_else(|| "default".into()),
            pod_name: l.string("POD_NAME").unwrap_or_else(|| format!("coordinator-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])),
            cache_webhook_token: l.string("CACHE_WEBHOOK_TOKEN").map(Secret::new),
        };
        l.finish(s)
    }
}

/// Everything the runner reads.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Shared settings.
    pub common: CommonSettings,
    /// Which work this runner claims.
    pub mode: RunnerMode,
    /// Unique runner id.
    pub runner_id: String,
    /// Activations run at once.
    pub max_concurrent_activations: u32,
    /// Hard deadline of one activation.
    pub activation_timeout: Duration,
    /// Default LLM turn cap.
    pub max_iterations: u32,
    /// git-sync link or plain directory holding `agents/<id>/`.
    pub agent_definitions_path: PathBuf,
    /// `owner/repo` for raw-GitHub mode.
    pub agent_definitions_repo: Option<String>,
    /// Branch for raw-GitHub mode.
    pub agent_definitions_branch: String,
    /// Token for a private definitions repo.
    pub github_token: Option<Secret>,
    /// Permission policy file, if mounted.
    pub agent_permissions_path: Option<PathBuf>,
    /// Root of per-activation workspaces.
    pub workspace_root: PathBuf,
    /// Optional price table file.
    pub llm_prices_path: Option<PathBuf>,
}

impl RunnerSettings {
    /// Parses the runner's settings, reporting every problem at once.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, SettingsError> {
        let mut l = Lookup::new(env);
        let common = CommonSettings::read(&mut l, 9091);
        let s = Self {
            common,
            mode: l.parsed("RUNNER_MODE", RunnerMode::Hybrid, "a runner mode"),
            runner_id: l.string("RUNNER_ID").unwrap_or_else(|| format!("runner-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])),
            max_concurrent_activations: l.positive("MAX_CONCURRENT_ACTIVATIONS", 1),
            activation_timeout: l.seconds("ACTIVATION_TIMEOUT", 300),
            max_iterations: l.positive("MAX_ITERATIONS", 10),
            agent_definitions_path: l.string("AGENT_DEFINITIONS_PATH").unwrap_or_else(|| "/configs/agent-definitions".into()).into(),
            agent_definitions_repo: l.string("AGENT_DEFINITIONS_REPO"),
            agent_definitions_branch: l.string("AGENT_DEFINITIONS_BRANCH").unwrap_or_else(|| "main".into()),
            github_token: l.string("GITHUB_TOKEN").map(Secret::new),
            agent_permissions_path: l.string("AGENT_PERMISSIONS_PATH").map(PathBuf::from),
            workspace_root: l.string("WORKSPACE_ROOT").unwrap_or_else(|| "/workspaces".into()).into(),
            llm_prices_path: l.string("LLM_PRICES_PATH").map(PathBuf::from),
        };
        l.finish(s)
    }
}

/// Parses settings or prints every problem to stderr and exits with code 64. For `main` only.
pub fn load_or_exit<T>(parse: impl FnOnce(&dyn EnvSource) -> Result<T, SettingsError>) -> T {
    match parse(&ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// The configuration reference table (Markdown), generated from [`SETTINGS`] so the docs cannot
/// drift: `docs/configuration.md` embeds it and a test compares the two.
pub fn markdown_table() -> String {
    let mut out = String::from("| name | aliases | default | read by | secret | meaning |\n|---|---|---|---|---|---|\n");
    for s in SETTINGS {
        let aliases = if s.aliases.is_empty() {
            String::new()
        } else {
            s.aliases.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
        };
        let default = if s.default.is_empty() { "—".to_string() } else { format!("`{}`", s.default) };
        let reader = match s.reader {
            Reader::Both => "coordinator, runner",
            Reader::Coordinator => "coordinator",
            Reader::Runner => "runner",
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            s.name,
            aliases,
            default,
            reader,
            if s.secret { "yes" } else { "" },
            s.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_apply_when_only_hub_url_is_set() {
        let s = RunnerSettings::from_env(&env(&[("HUB_URL", "http://hub:8000/")])).expect("valid");
        assert_eq!(s.common.hub_url, "http://hub:8000");
        assert_eq!(s.common.valkey_url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(s.common.metrics_port, 9091);
        assert_eq!(s.mode, RunnerMode::Hybrid);
        assert_eq!(s.max_concurrent_activations, 1);
        assert_eq!(s.activation_timeout, Duration::from_secs(300));
        assert_eq!(s.max_iterations, 10);
        let c = CoordinatorSettings::from_env(&env(&[("HUB_URL", "http://hub")])).expect("valid");
        assert_eq!(c.common.metrics_port, 9090);
        assert_eq!(c.min_staleness, Duration::from_secs(900));
        assert_eq!(c.leader_election, LeaderElection::Auto);
    }

    #[test]
    fn prefixed_alias_wins_and_aliases_work() {
        let s = CoordinatorSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("BOTBURROW_HUB_URL", "http://b"),
            ("REDIS_URL", "redis://r:1"),
            ("MIN_ACTIVATION_INTERVAL", "120"),
        ]))
        .expect("valid");
        assert_eq!(s.common.hub_url, "http://b");
        assert_eq!(s.common.valkey_url.expose(), "redis://r:1");
        assert_eq!(s.min_staleness, Duration::from_secs(120));
        // The canonical name beats its alias.
        let s = CoordinatorSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("VALKEY_URL", "redis://v:1"),
            ("REDIS_URL", "redis://r:1"),
        ]))
        .expect("valid");
        assert_eq!(s.common.valkey_url.expose(), "redis://v:1");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_the_variable() {
        let err = RunnerSettings::from_env(&env(&[
            ("POLL_INTERVAL", "x"),
            ("MAX_CONCURRENT_ACTIVATIONS", "many"),
            ("BOTBURROW_ACTIVATION_TIMEOUT", "-3"),
            ("RUNNER_MODE", "turbo"),
        ]))
        .expect_err("an error");
        assert!(err.names("HUB_URL"), "{err}");
        assert!(err.names("MAX_CONCURRENT_ACTIVATIONS"), "{err}");
        assert!(err.names("BOTBURROW_ACTIVATION_TIMEOUT"), "{err}");
        assert!(err.names("RUNNER_MODE"), "{err}");
        assert_eq!(err.problems.len(), 4, "{err}");
        let text = err.to_string();
        assert!(text.contains("turbo"));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = CoordinatorSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("HUB_API_KEY", "botburrow_agent_supersecret"),
            ("CACHE_WEBHOOK_TOKEN", "tok-secret"),
            ("VALKEY_URL", "redis://:pw-secret@v:1"),
        ]))
        .expect("valid");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(!dbg.contains("tok-secret"), "{dbg}");
        assert!(!dbg.contains("pw-secret"), "{dbg}");
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn circuit_breaker_settings_default_to_the_queue_defaults_and_are_read() {
        let s = CoordinatorSettings::from_env(&env(&[("HUB_URL", "http://a")])).expect("valid");
        assert_eq!(s.common.queue_config(), QueueConfig::default());
        let s = RunnerSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("MAX_ATTEMPTS", "7"),
            ("BACKOFF_THRESHOLD", "3"),
            ("BOTBURROW_BACKOFF_BASE_SECONDS", "10"),
            ("BACKOFF_MAX_SECONDS", "600"),
            ("FAILURE_DECAY_SECONDS", "120"),
        ]))
        .expect("valid");
        let q = s.common.queue_config();
        assert_eq!(q.max_attempts, 7);
        assert_eq!(q.failure_threshold, 3);
        assert_eq!(q.backoff_base, Duration::from_secs(10));
        assert_eq!(q.backoff_max, Duration::from_secs(600));
        assert_eq!(q.failure_decay, Duration::from_secs(120));
        assert_eq!(q.command_timeout, QueueConfig::default().command_timeout);
        assert_eq!(q.backoff_for(4), Some(Duration::from_secs(20)));
    }

    #[test]
    fn bad_circuit_breaker_settings_are_all_reported_naming_the_variable() {
        let err = CoordinatorSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("BACKOFF_THRESHOLD", "0"),
            ("BACKOFF_BASE_SECONDS", "a minute"),
            ("BOTBURROW_BACKOFF_MAX_SECONDS", "-1"),
            ("FAILURE_DECAY_SECONDS", "1h"),
        ]))
        .expect_err("four bad values");
        assert!(err.names("BACKOFF_THRESHOLD"), "{err}");
        assert!(err.names("BACKOFF_BASE_SECONDS"), "{err}");
        assert!(err.names("BOTBURROW_BACKOFF_MAX_SECONDS"), "{err}");
        assert!(err.names("FAILURE_DECAY_SECONDS"), "{err}");
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(err.to_string().contains("a minute"), "{err}");
        for zero in ["BACKOFF_BASE_SECONDS", "BACKOFF_MAX_SECONDS", "FAILURE_DECAY_SECONDS"] {
            let err = RunnerSettings::from_env(&env(&[("HUB_URL", "http://a"), (zero, "0")])).expect_err("zero");
            assert!(err.names(zero), "{zero}: {err}");
            assert_eq!(err.problems.len(), 1, "{err}");
        }
    }

    #[test]
    fn a_longest_backoff_below_the_first_is_rejected() {
        let err = RunnerSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("BACKOFF_BASE_SECONDS", "120"),
            ("BACKOFF_MAX_SECONDS", "60"),
        ]))
        .expect_err("max below base");
        assert!(err.names("BACKOFF_MAX_SECONDS"), "{err}");
        assert_eq!(err.problems.len(), 1, "{err}");
        // only the base was set: the message names it, not the untouched default
        let err = RunnerSettings::from_env(&env(&[("HUB_URL", "http://a"), ("BACKOFF_BASE_SECONDS", "7200")]))
            .expect_err("base above the default max");
        assert!(err.names("BACKOFF_BASE_SECONDS"), "{err}");
        let ok = RunnerSettings::from_env(&env(&[
            ("HUB_URL", "http://a"),
            ("BACKOFF_BASE_SECONDS", "60"),
            ("BACKOFF_MAX_SECONDS", "60"),
        ]));
        assert!(ok.is_ok(), "equal bounds are fine: {:?}", ok.err());
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        let err = RunnerSettings::from_env(&env(&[("HUB_URL", "http://a"), ("MAX_CONCURRENT_ACTIVATIONS", "0")]))
            .expect_err("an error");
        assert!(err.names("MAX_CONCURRENT_ACTIVATIONS"));
    }
}
