//! The MCP manager: starts an activation's stdio MCP servers (rmcp client over child processes),
//! exposes their tools as [`Tool`]s named `mcp_<server>_<tool>`, and kills every server's whole
//! process group when the activation ends.
//!
//! What it guarantees:
//! - A server starts only if the agent's *effective* grants allow it (see [`super::builtin`] for
//!   the built-in table; a custom entry names its `grant`, default `<name>:*` = any grant of that
//!   service). Refusals are logged (`mcp_server_skipped`) and counted, never errors.
//! - Each server gets a minimal environment: `PATH`, `HOME` (= the workspace), `LANG`, its own
//!   `env` entries, and only the credentials its grants unlock. The runner's other secrets
//!   (LLM keys, the Valkey URL, other tools' tokens) never reach it. A custom entry gets the
//!   tool credential of its grant's service (`grant: github:read` -> the GitHub token), but
//!   never the fleet's Hub key: `HUB_API_KEY` can act as any agent, so only the built-in `hub`
//!   server (our own `botburrow-hub-mcp`, acting as this one agent) receives it.
//! - A postgres grant unlocks only the URL of its own database (see [`ToolCredentials::database_url_for`]).
//! - Startup is bounded; a server that fails to start fails the activation with
//!   `MCP server 'github' failed to start: <reason>` unless its entry is `optional`.
//! - Tools a grant does not cover are not offered to the model, and a forged call by name is
//!   refused as an error result. Unknown tools of a built-in server count as write tools.
//! - A server that dies mid-activation turns its tool calls into error results.
//! - stderr of every server is drained to logs at debug (and its tail explains start failures).

use super::builtin;
use crate::tools::{Tool, ToolOutput, ToolSet, ToolSpec};
use async_trait::async_trait;
use botburrow_shared::agent::{CustomMcpServer, McpServerEntry};
use botburrow_shared::grants::{Grant, Grants};
use botburrow_shared::health::SharedRegistry;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::{EnvSource, Secret};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tracing::Instrument;

/// Why the MCP servers of an activation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A non-optional server did not start (spawn error, early exit, no answer, bad handshake).
    #[error("MCP server '{server}' failed to start: {reason}")]
    StartFailed {
        /// The server's name.
        server: String,
        /// What went wrong, with the tail of its stderr when there is one.
        reason: String,
    },
    /// A plain name in `capabilities.mcp_servers` that is not a built-in server.
    #[error(
        "unknown MCP server '{0}': built-in servers are github, brave, filesystem, postgres, hub"
    )]
    UnknownServer(String),
    /// Two entries share a name, so their tool names would collide.
    #[error("MCP server '{0}' is listed twice in capabilities.mcp_servers")]
    DuplicateServer(String),
    /// A custom entry's `grant` (or its default `<name>:*`) is not a valid grant.
    #[error("MCP server '{server}': invalid grant '{grant}': {reason}")]
    InvalidGrant {
        /// The server's name.
        server: String,
        /// The grant as written.
        grant: String,
        /// What is wrong.
        reason: String,
    },
}

/// Tool credentials the runner holds; each goes only to servers whose grants unlock it.
#[derive(Clone, Default)]
pub struct ToolCredentials {
    /// `GITHUB_PAT`, handed over as `GITHUB_PERSONAL_ACCESS_TOKEN` with a `github:` grant.
    pub github_pat: Option<Secret>,
    /// `BRAVE_API_KEY`, with `brave:search`.
    pub brave_api_key: Option<Secret>,
    /// `DATABASE_URL`: handed over for `postgres:*`, or for `postgres:<db>:...` when the
    /// database in its path is `<db>` and no `DATABASE_URL_<DB>` is set.
    pub database_url: Option<Secret>,
    /// `DATABASE_URL_<DB>` per database, keyed by `<DB>` (see [`database_env_key`]).
    pub database_urls: BTreeMap<String, Secret>,
    /// `HUB_URL`, for the built-in `hub` server with `hub:read`.
    pub hub_url: Option<String>,
    /// `HUB_API_KEY` (the fleet's key), only ever for the built-in `hub` server.
    pub hub_api_key: Option<Secret>,
}

/// Prefix of the per-database URL variables (`DATABASE_URL_SALES` for database `sales`).
pub const DATABASE_URL_PREFIX: &str = "DATABASE_URL_";

/// The `<DB>` of `DATABASE_URL_<DB>` for a database name: uppercased, every character outside
/// `[A-Z0-9]` replaced by `_` (`sales-eu` -> `SALES_EU`).
pub fn database_env_key(db: &str) -> String {
    db.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The database a postgres URL names in its path (`postgres://u@h:5432/sales?sslmode=require`
/// -> `sales`), percent-decoded; `None` when it names none or is not a URL.
pub fn url_database(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let first = parsed.path().trim_start_matches('/').split('/').next()?;
    let db = percent_encoding::percent_decode_str(first)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!db.is_empty()).then_some(db)
}

/// The URL the postgres server gets, and which database (`None` for `postgres:*`) it is for.
/// `Debug` shows the database, never the URL.
#[derive(Clone, Debug)]
pub struct PostgresCredential {
    /// The database the grant names (`None` = `postgres:*`, any database).
    pub database: Option<String>,
    /// The URL to connect with.
    pub url: Secret,
}

impl ToolCredentials {
    /// Reads `GITHUB_PAT`, `BRAVE_API_KEY`, `DATABASE_URL`, `HUB_URL`, `HUB_API_KEY`
    /// (the `BOTBURROW_` prefixed forms win, as in settings), and every `DATABASE_URL_<DB>`.
    /// The per-database variables are found by name in the process environment and their
    /// values read through `env`, so a test `env` must also be visible to the process, or set
    /// [`ToolCredentials::database_urls`] itself.
    pub fn from_env(env: &dyn EnvSource) -> Self {
        let get = |name: &str| {
            env.var(&format!("BOTBURROW_{name}"))
                .or_else(|| env.var(name))
        };
        let mut database_urls = BTreeMap::new();
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let bare = name.strip_prefix("BOTBURROW_").unwrap_or(name);
            if let Some(key) = bare.strip_prefix(DATABASE_URL_PREFIX)
                && !key.is_empty()
                && let Some(url) = get(bare)
            {
                database_urls.insert(key.to_string(), Secret::new(url));
            }
        }
        Self {
            github_pat: get("GITHUB_PAT").map(Secret::new),
            brave_api_key: get("BRAVE_API_KEY").map(Secret::new),
            database_url: get("DATABASE_URL").map(Secret::new),
            database_urls,
            hub_url: get("HUB_URL").map(|u| u.trim_end_matches('/').to_string()),
            hub_api_key: get("HUB_API_KEY").map(Secret::new),
        }
    }

    /// The URL a postgres grant on database `db` unlocks (`None` = `postgres:*`):
    /// `DATABASE_URL_<DB>` when set; else `DATABASE_URL`, but only when the database in its
    /// path is exactly `db` (or the grant is `postgres:*`); else nothing.
    pub fn database_url_for(&self, db: Option<&str>) -> Option<&Secret> {
        match db {
            None => self.database_url.as_ref(),
            Some(db) => self.database_urls.get(&database_env_key(db)).or_else(|| {
                self.database_url
                    .as_ref()
                    .filter(|u| url_database(u.expose()).as_deref() == Some(db))
            }),
        }
    }

    /// The one database URL the postgres grants in `grants` unlock. `postgres:*` wins and means
    /// `DATABASE_URL`. Otherwise every `postgres:<db>:...` grant is resolved with
    /// [`ToolCredentials::database_url_for`]; grants whose database has no URL are skipped, and
    /// grants that resolve to different URLs are an error (one server connects to one database).
    /// The error names the grants and the variables that would satisfy them.
    pub fn postgres_credential(&self, grants: &Grants) -> Result<PostgresCredential, String> {
        let pg: Vec<&Grant> = grants
            .iter()
            .filter(|g| g.service() == "postgres")
            .collect();
        if pg.is_empty() {
            return Err("no postgres grant".to_string());
        }
        if pg.iter().any(|g| g.scope() == "*") {
            return self
                .database_url
                .clone()
                .map(|url| PostgresCredential {
                    database: None,
                    url,
                })
                .ok_or_else(|| {
                    "no database URL for the grant postgres:*: DATABASE_URL is not set in the runner's environment"
                        .to_string()
                });
        }
        let mut found: Vec<(String, &Grant, &Secret)> = Vec::new();
        let mut missing = Vec::new();
        for g in pg {
            let scope = g.scope();
            let db = scope.split(':').next().unwrap_or_default().to_string();
            match self.database_url_for(Some(&db)) {
                Some(url) => found.push((db, g, url)),
                None => missing.push((db, g)),
            }
        }
        let Some((db, _, url)) = found.first() else {
            let wanted: Vec<String> = missing
                .iter()
                .map(|(db, g)| {
                    format!(
                        "{g} (set {DATABASE_URL_PREFIX}{}, or a DATABASE_URL whose database is '{db}')",
                        database_env_key(db)
                    )
                })
                .collect();
            return Err(format!(
                "no database URL for the grant {}",
                wanted.join(", ")
            ));
        };
        if let Some((_, other, _)) = found.iter().find(|(_, _, u)| u.expose() != url.expose()) {
            return Err(format!(
                "the grants {} and {other} are for different databases, and the built-in postgres server connects to one; declare one custom server per database, each with its own grant",
                found[0].1
            ));
        }
        Ok(PostgresCredential {
            database: Some(db.clone()),
            url: (*url).clone(),
        })
    }
}

impl std::fmt::Debug for ToolCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolCredentials")
            .field("github_pat", &self.github_pat.is_some())
            .field("brave_api_key", &self.brave_api_key.is_some())
            .field("database_url", &self.database_url.is_some())
            .field(
                "database_urls",
                &self.database_urls.keys().collect::<Vec<_>>(),
            )
            .field("hub_url", &self.hub_url)
            .field("hub_api_key", &self.hub_api_key.is_some())
            .finish()
    }
}

/// Labels of the MCP metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerOutcome {
    /// Server name (from the agent config; bounded by the fleet's configs).
    pub server: String,
    /// Starts: `started`, `failed`, `refused`. Calls: `ok`, `tool_error`, `error`, `refused`,
    /// `timeout`, `server_died`, `unavailable`.
    pub outcome: String,
}

/// `botburrow_mcp_tool_calls_total` and `botburrow_mcp_server_starts_total`.
#[derive(Clone, Default)]
pub struct McpMetrics {
    /// Tool calls by server and outcome.
    pub tool_calls: Family<ServerOutcome, Counter>,
    /// Server start attempts by server and outcome.
    pub server_starts: Family<ServerOutcome, Counter>,
}

impl McpMetrics {
    /// Creates the metrics and registers them into the process registry.
    pub fn new(registry: &SharedRegistry) -> Self {
        let m = Self::default();
        let mut reg = match registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        reg.register(
            "botburrow_mcp_tool_calls",
            "MCP tool calls by server and outcome",
            m.tool_calls.clone(),
        );
        reg.register(
            "botburrow_mcp_server_starts",
            "MCP server start attempts by server and outcome",
            m.server_starts.clone(),
        );
        m
    }

    fn call(&self, server: &str, outcome: &str) {
        self.tool_calls
            .get_or_create(&ServerOutcome {
                server: server.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    fn start(&self, server: &str, outcome: &str) {
        self.server_starts
            .get_or_create(&ServerOutcome {
                server: server.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Program (a name looked up on `PATH`, or a path).
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
}

/// Runner-wide MCP settings, shared by every activation.
#[derive(Clone, Debug)]
pub struct McpOptions {
    /// Credentials to hand out per grant.
    pub credentials: ToolCredentials,
    /// How long a server has to spawn, initialize and list its tools.
    pub startup_timeout: Duration,
    /// Bound of one tool call.
    pub call_timeout: Duration,
    /// Replacements for built-in commands (e.g. a preinstalled `mcp-server-filesystem` instead of
    /// `npx`); the per-server trailing argument (workspace, database URL) is still appended.
    pub builtin_commands: BTreeMap<String, CommandSpec>,
    /// `PATH` given to servers.
    pub path: String,
    /// `LANG` given to servers.
    pub lang: String,
    /// Metrics handles.
    pub metrics: McpMetrics,
}

impl std::fmt::Debug for McpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("McpMetrics")
    }
}

impl McpOptions {
    /// Options with the runner's environment (`PATH`, `LANG`, tool credentials) and defaults:
    /// 60 s startup (npx may download the package), 120 s per call.
    pub fn from_env(env: &dyn EnvSource, metrics: McpMetrics) -> Self {
        Self {
            credentials: ToolCredentials::from_env(env),
            startup_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(120),
            builtin_commands: BTreeMap::new(),
            path: env
                .var("PATH")
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            lang: env.var("LANG").unwrap_or_else(|| "C.UTF-8".into()),
            metrics,
        }
    }
}

/// One activation's view: who, where, with which effective grants, which servers.
#[derive(Debug, Clone, Copy)]
pub struct McpActivation<'a> {
    /// The agent (handed to the Hub server as `HUB_AGENT_ID`).
    pub agent_id: &'a AgentId,
    /// The activation's workspace: the servers' `HOME` and working directory.
    pub workspace: &'a Path,
    /// Effective grants (declared grants after the permission policy).
    pub grants: &'a Grants,
    /// `capabilities.mcp_servers`.
    pub servers: &'a [McpServerEntry],
}

/// How one server would be launched: used by the manager, and by CLI executors that write an
/// MCP config for their own client. Env values are [`Secret`]s so they never print.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Server name.
    pub name: String,
    /// Program.
    pub program: PathBuf,
    /// Arguments (may contain the database URL for `postgres`, so not logged).
    pub args: Vec<Secret>,
    /// The complete environment of the server.
    pub env: BTreeMap<String, Secret>,
    /// Whether a start failure is tolerated.
    pub optional: bool,
    /// Set when the server cannot be started at all (e.g. its credential is missing).
    pub unavailable: Option<String>,
    /// Decides per tool whether the grants allow calling it.
    gate: ToolGate,
}

#[derive(Debug, Clone)]
enum ToolGate {
    Builtin {
        server: String,
    },
    /// The built-in postgres server, connected to one database (`*` for `postgres:*`): its
    /// tools are checked against the grants on that database only.
    Postgres {
        database: String,
    },
    Custom {
        service: String,
        scopes: BTreeMap<String, String>,
    },
}

impl ToolGate {
    /// `Ok(())` if allowed, else the grant that would be needed.
    fn check(&self, tool: &str, grants: &Grants) -> Result<(), String> {
        match self {
            ToolGate::Builtin { server } => {
                if builtin::tool_allowed(server, tool, grants) {
                    Ok(())
                } else {
                    let access = builtin::tool_access(server, tool);
                    Err(match server.as_str() {
                        "brave" => "brave:search".to_string(),
                        "postgres" => format!("postgres:<db>:{}", access.as_str()),
                        _ => format!("{server}:{}", access.as_str()),
                    })
                }
            }
            ToolGate::Postgres { database } => {
                let access = builtin::tool_access("postgres", tool);
                let scope = format!("{database}:{}", access.as_str());
                if grants.allows("postgres", &scope) {
                    Ok(())
                } else {
                    Err(format!("postgres:{scope}"))
                }
            }
            ToolGate::Custom { service, scopes } => match scopes.get(tool) {
                None => Ok(()),
                Some(scope) if grants.allows(service, scope) => Ok(()),
                Some(scope) => Err(format!("{service}:{scope}")),
            },
        }
    }
}

/// `mcp_<server>_<tool>`, with characters outside `[a-zA-Z0-9_-]` replaced by `_` and cut to 64.
pub fn tool_name(server: &str, tool: &str) -> String {
    let raw = format!("mcp_{server}_{tool}");
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(64);
    s
}

fn unique_name(base: String, taken: &mut HashSet<String>) -> String {
    if taken.insert(base.clone()) {
        return base;
    }
    for n in 2.. {
        let suffix = format!("_{n}");
        let mut candidate = base.clone();
        candidate.truncate(64 - suffix.len());
        candidate.push_str(&suffix);
        if taken.insert(candidate.clone()) {
            return candidate;
        }
    }
    unreachable!("an unbounded counter always finds a free name")
}

/// The tool credential of `service` (`github`, `brave`) when the agent's grants unlock it.
/// Postgres and the Hub are handled by their own functions: the database URL depends on which
/// database is granted, and the Hub key goes to the built-in `hub` server only.
fn tool_credential_env(
    service: &str,
    grants: &Grants,
    creds: &ToolCredentials,
    env: &mut BTreeMap<String, Secret>,
) {
    match service {
        "github" if grants.allows("github", "read") => {
            if let Some(pat) = &creds.github_pat {
                env.insert("GITHUB_PERSONAL_ACCESS_TOKEN".into(), pat.clone());
            }
        }
        "brave" if grants.allows("brave", "search") => {
            if let Some(k) = &creds.brave_api_key {
                env.insert("BRAVE_API_KEY".into(), k.clone());
            }
        }
        _ => {}
    }
}

/// The environment of the built-in `hub` server (never of a custom one): `HUB_URL`, the fleet's
/// `HUB_API_KEY`, `HUB_AGENT_ID` and `HUB_GRANTS`, with which `botburrow-hub-mcp` acts as this
/// one agent and enforces the agent's hub grants itself.
fn hub_env(act: &McpActivation<'_>, creds: &ToolCredentials, env: &mut BTreeMap<String, Secret>) {
    let grants = act.grants;
    if !grants.allows("hub", "read") {
        return;
    }
    if let Some(u) = &creds.hub_url {
        env.insert("HUB_URL".into(), Secret::new(u.clone()));
    }
    if let Some(k) = &creds.hub_api_key {
        env.insert("HUB_API_KEY".into(), k.clone());
    }
    env.insert("HUB_AGENT_ID".into(), Secret::new(act.agent_id.as_str()));
    // The Hub server enforces the same grants itself (for CLI clients that list every tool).
    let hub: Vec<String> = grants
        .iter()
        .filter(|g| g.service() == "hub")
        .map(|g| g.to_string())
        .collect();
    env.insert("HUB_GRANTS".into(), Secret::new(hub.join(",")));
}

/// The database URL a custom server with postgres grant `grant` may get: for `postgres:*` the
/// same choice as the built-in server (over the agent's grants); for `postgres:<db>:...` the
/// URL of `<db>`, if the agent holds a grant on `<db>` at all.
fn custom_postgres_url(
    grant: &Grant,
    grants: &Grants,
    creds: &ToolCredentials,
) -> Result<Secret, String> {
    let scope = grant.scope();
    if scope == "*" {
        return creds.postgres_credential(grants).map(|c| c.url);
    }
    let db = scope.split(':').next().unwrap_or_default();
    if !grants.allows("postgres", &format!("{db}:read")) {
        return Err(format!("the agent holds no grant on database '{db}'"));
    }
    creds.database_url_for(Some(db)).cloned().ok_or_else(|| {
        format!(
            "no database URL for the grant {grant}: set {DATABASE_URL_PREFIX}{}, or a DATABASE_URL whose database is '{db}'",
            database_env_key(db)
        )
    })
}

/// Decides whether `entry` may start and how: `Ok(None)` when the grants refuse it (with the
/// grant it would need), `Err` for config errors.
pub fn launch_spec(
    opts: &McpOptions,
    act: &McpActivation<'_>,
    entry: &McpServerEntry,
) -> Result<Result<LaunchSpec, String>, McpError> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), Secret::new(opts.path.clone()));
    env.insert(
        "HOME".to_string(),
        Secret::new(act.workspace.to_string_lossy().into_owned()),
    );
    env.insert("LANG".to_string(), Secret::new(opts.lang.clone()));
    match entry {
        McpServerEntry::Builtin(name) => {
            let Some((default_program, default_args)) = builtin::default_command(name) else {
                return Err(McpError::UnknownServer(name.clone()));
            };
            if !builtin::may_start(name, act.grants) {
                return Ok(Err(builtin::required_grant(name).to_string()));
            }
            let (program, args) = match opts.builtin_commands.get(name) {
                Some(c) => (c.program.clone(), c.args.clone()),
                None => (default_program, default_args),
            };
            let mut args: Vec<Secret> = args.into_iter().map(Secret::new).collect();
            let mut unavailable = None;
            let mut gate = ToolGate::Builtin {
                server: name.clone(),
            };
            match name.as_str() {
                "filesystem" => {
                    args.push(Secret::new(act.workspace.to_string_lossy().into_owned()))
                }
                "postgres" => match opts.credentials.postgres_credential(act.grants) {
                    Ok(pg) => {
                        env.insert("DATABASE_URL".into(), pg.url.clone());
                        args.push(pg.url);
                        gate = ToolGate::Postgres {
                            database: pg.database.unwrap_or_else(|| "*".to_string()),
                        };
                    }
                    Err(reason) => unavailable = Some(reason),
                },
                "hub" => hub_env(act, &opts.credentials, &mut env),
                other => tool_credential_env(
                    builtin::service_of(other),
                    act.grants,
                    &opts.credentials,
                    &mut env,
                ),
            }
            Ok(Ok(LaunchSpec {
                name: name.clone(),
                program,
                args,
                env,
                optional: false,
                unavailable,
                gate,
            }))
        }
        McpServerEntry::Custom(c) => custom_spec(opts, act, c, env),
    }
}

fn custom_spec(
    opts: &McpOptions,
    act: &McpActivation<'_>,
    c: &CustomMcpServer,
    mut env: BTreeMap<String, Secret>,
) -> Result<Result<LaunchSpec, String>, McpError> {
    let grant_text = c.grant.clone().unwrap_or_else(|| format!("{}:*", c.name));
    let grant = Grant::parse(&grant_text).map_err(|reason| McpError::InvalidGrant {
        server: c.name.clone(),
        grant: grant_text.clone(),
        reason,
    })?;
    if !act.grants.allows_grant(&grant_text) {
        return Ok(Err(grant_text));
    }
    for (k, v) in &c.env {
        env.insert(k.clone(), Secret::new(v.clone()));
    }
    match grant.service() {
        // The fleet's Hub key can act as any agent: a custom command never gets it (nor the
        // other Hub variables); only the built-in `hub` server does.
        "hub" => {}
        "postgres" => match custom_postgres_url(&grant, act.grants, &opts.credentials) {
            Ok(url) => {
                env.insert("DATABASE_URL".into(), url);
            }
            Err(reason) => {
                tracing::warn!(agent_id = %act.agent_id, server = %c.name, grant = %grant, reason = %reason, "mcp_server_no_database_url");
            }
        },
        service => tool_credential_env(service, act.grants, &opts.credentials, &mut env),
    }
    Ok(Ok(LaunchSpec {
        name: c.name.clone(),
        program: PathBuf::from(&c.command),
        args: c.args.iter().cloned().map(Secret::new).collect(),
        env,
        optional: c.optional,
        unavailable: None,
        gate: ToolGate::Custom {
            service: grant.service().to_string(),
            scopes: c.tool_scopes.clone(),
        },
    }))
}

/// One running server.
struct ServerConn {
    name: String,
    pid: Option<u32>,
    peer: Peer<RoleClient>,
    service: Mutex<Option<RunningService<RoleClient, ()>>>,
    dead: AtomicBool,
    killed: AtomicBool,
}

impl ServerConn {
    fn kill_group(&self) {
        if self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        kill_group(self.pid);
    }

    fn mark_dead(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            tracing::warn!(server = %self.name, "mcp_server_exited");
        }
    }
}

fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // The server was started as the leader of its own process group, so this also reaches
    // the processes it started (npx -> node, shells, ...).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Kills a process group when dropped, unless disarmed (ownership passed to a [`ServerConn`]).
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

/// One MCP tool as the model sees it.
pub struct McpTool {
    spec: ToolSpec,
    server: Arc<ServerConn>,
    tool: String,
    /// `None` if the grants allow it, else the grant it needs.
    refused: Option<String>,
    call_timeout: Duration,
    metrics: McpMetrics,
}

impl McpTool {
    /// Whether the agent's grants allow calling it (only allowed tools are offered to the model).
    pub fn allowed(&self) -> bool {
        self.refused.is_none()
    }

    /// The server's name.
    pub fn server(&self) -> &str {
        &self.server.name
    }

    /// The tool's own name on its server.
    pub fn tool(&self) -> &str {
        &self.tool
    }
}

fn content_text(result: &CallToolResult) -> String {
    let mut parts = Vec::new();
    for block in &result.content {
        match block {
            ContentBlock::Text(t) => parts.push(t.text.clone()),
            ContentBlock::Image(i) => parts.push(format!("[image: {}]", i.mime_type)),
            ContentBlock::Audio(a) => parts.push(format!("[audio: {}]", a.mime_type)),
            ContentBlock::Resource(r) => match &r.resource {
                rmcp::model::ResourceContents::TextResourceContents { text, .. } => {
                    parts.push(text.clone())
                }
                rmcp::model::ResourceContents::BlobResourceContents { uri, .. } => {
                    parts.push(format!("[resource: {uri}]"))
                }
                #[allow(unreachable_patterns)]
                _ => parts.push("[resource]".to_string()),
            },
            ContentBlock::ResourceLink(l) => parts.push(format!("[resource link: {}]", l.uri)),
            #[allow(unreachable_patterns)]
            _ => parts.push("[unsupported content]".to_string()),
        }
    }
    if parts.is_empty()
        && let Some(s) = &result.structured_content
    {
        return s.to_string();
    }
    parts.join("\n")
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    async fn call(&self, args: serde_json::Value) -> ToolOutput {
        let server = &self.server.name;
        if let Some(grant) = &self.refused {
            self.metrics.call(server, "refused");
            tracing::warn!(server = %server, tool = %self.tool, needs = %grant, "mcp_tool_refused");
            return ToolOutput::error(format!(
                "Tool '{}' is not permitted: it needs the grant {grant}",
                self.spec.name
            ));
        }
        if self.server.dead.load(Ordering::SeqCst) || self.server.peer.is_transport_closed() {
            self.server.mark_dead();
            self.metrics.call(server, "unavailable");
            return ToolOutput::error(format!(
                "MCP server '{server}' is not running (it exited earlier)"
            ));
        }
        let arguments = match args {
            serde_json::Value::Object(m) => Some(m),
            serde_json::Value::Null => None,
            other => {
                self.metrics.call(server, "error");
                return ToolOutput::error(format!(
                    "Arguments for '{}' must be a JSON object, got {other}",
                    self.spec.name
                ));
            }
        };
        let mut params = CallToolRequestParams::new(self.tool.clone());
        params.arguments = arguments;
        match tokio::time::timeout(self.call_timeout, self.server.peer.call_tool(params)).await {
            Ok(Ok(result)) => {
                let is_error = result.is_error.unwrap_or(false);
                self.metrics
                    .call(server, if is_error { "tool_error" } else { "ok" });
                ToolOutput {
                    text: content_text(&result),
                    is_error,
                }
            }
            Ok(Err(ServiceError::McpError(e))) => {
                self.metrics.call(server, "error");
                ToolOutput::error(format!("MCP error from '{server}': {}", e.message))
            }
            Ok(Err(e)) => {
                if matches!(
                    e,
                    ServiceError::TransportClosed | ServiceError::TransportSend(_)
                ) || self.server.peer.is_transport_closed()
                {
                    self.server.mark_dead();
                    self.metrics.call(server, "server_died");
                    ToolOutput::error(format!(
                        "MCP server '{server}' exited during the call to '{}'",
                        self.tool
                    ))
                } else {
                    self.metrics.call(server, "error");
                    ToolOutput::error(format!("MCP call to {server}.{} failed: {e}", self.tool))
                }
            }
            Err(_) => {
                self.metrics.call(server, "timeout");
                ToolOutput::error(format!(
                    "MCP call to {server}.{} timed out after {}s",
                    self.tool,
                    self.call_timeout.as_secs()
                ))
            }
        }
    }
}

/// The running MCP servers of one activation. Dropping it kills every server's process group;
/// [`McpManager::shutdown`] does the same and also waits for the clients to close.
pub struct McpManager {
    servers: Vec<Arc<ServerConn>>,
    tools: Vec<Arc<McpTool>>,
}

struct Started {
    conn: Arc<ServerConn>,
    tools: Vec<rmcp::model::Tool>,
}

async fn start_server(
    spec: &LaunchSpec,
    workspace: &Path,
    startup_timeout: Duration,
) -> Result<Started, String> {
    if let Some(reason) = &spec.unavailable {
        return Err(reason.clone());
    }
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(spec.args.iter().map(Secret::expose))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v.expose())))
        .current_dir(workspace)
        .process_group(0)
        .kill_on_drop(true);
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run '{}': {e}", spec.program.display()))?;
    let pid = transport.id();
    // If this future is dropped (activation cancelled or timed out mid-start), the whole group
    // goes, not only the leader that rmcp's transport would kill.
    let mut guard = GroupGuard(pid);
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(VecDeque::new()));
    let drain = stderr.map(|stderr| {
        let tail = tail.clone();
        let name = spec.name.clone();
        // In the caller's span, so every stderr line carries the activation_id.
        tokio::spawn(
            async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(server = %name, line = %line, "mcp_server_stderr");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 5 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            }
            .in_current_span(),
        )
    });
    let handshake = async {
        let client = ().serve(transport).await.map_err(|e| match e {
            rmcp::service::ClientInitializeError::ExpectedInitResponse(None) => {
                "it exited (or closed stdout) before answering initialize".to_string()
            }
            other => format!("initialize failed: {other}"),
        })?;
        let tools = client
            .peer()
            .list_all_tools()
            .await
            .map_err(|e| format!("tools/list failed: {e}"))?;
        Ok::<_, String>((client, tools))
    };
    let outcome = match tokio::time::timeout(startup_timeout, handshake).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer to initialize and tools/list within {}s",
            startup_timeout.as_secs()
        )),
    };
    match outcome {
        Ok((client, tools)) => {
            guard.disarm();
            let conn = ServerConn {
                name: spec.name.clone(),
                pid,
                peer: client.peer().clone(),
                service: Mutex::new(Some(client)),
                dead: AtomicBool::new(false),
                killed: AtomicBool::new(false),
            };
            Ok(Started {
                conn: Arc::new(conn),
                tools,
            })
        }
        Err(reason) => {
            kill_group(pid);
            // The pipe closes once the group is gone; wait (bounded) for the last lines.
            if let Some(handle) = drain {
                let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
            }
            let tail = tail
                .lock()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            if tail.is_empty() {
                Err(reason)
            } else {
                Err(format!("{reason}; stderr: {tail}"))
            }
        }
    }
}

impl McpManager {
    /// A manager with no servers (agents without MCP servers).
    pub fn empty() -> Self {
        Self {
            servers: Vec::new(),
            tools: Vec::new(),
        }
    }

    /// Starts every server of `act` that its grants allow, concurrently, each within
    /// `opts.startup_timeout`. The first non-optional failure (in config order) stops the
    /// others and is returned.
    pub async fn start(opts: &McpOptions, act: McpActivation<'_>) -> Result<Self, McpError> {
        let mut seen = HashSet::new();
        let mut specs = Vec::new();
        for entry in act.servers {
            let name = entry.name().to_string();
            if !seen.insert(name.clone()) {
                return Err(McpError::DuplicateServer(name));
            }
            match launch_spec(opts, &act, entry)? {
                Ok(spec) => specs.push(spec),
                Err(needed) => {
                    opts.metrics.start(&name, "refused");
                    tracing::info!(agent_id = %act.agent_id, server = %name, needs = %needed, "mcp_server_skipped");
                }
            }
        }
        let results = futures::future::join_all(
            specs
                .iter()
                .map(|s| start_server(s, act.workspace, opts.startup_timeout)),
        )
        .await;

        let mut manager = Self::empty();
        let mut failure = None;
        let mut taken = HashSet::new();
        for (spec, result) in specs.iter().zip(results) {
            match result {
                Ok(started) => {
                    opts.metrics.start(&spec.name, "started");
                    tracing::info!(
                        agent_id = %act.agent_id,
                        server = %spec.name,
                        pid = started.conn.pid.unwrap_or_default(),
                        tools_count = started.tools.len(),
                        "mcp_server_started"
                    );
                    for t in started.tools {
                        let refused = spec.gate.check(&t.name, act.grants).err();
                        let name = unique_name(tool_name(&spec.name, &t.name), &mut taken);
                        let spec_out = ToolSpec {
                            name,
                            description: t.description.as_deref().unwrap_or_default().to_string(),
                            input_schema: serde_json::Value::Object((*t.input_schema).clone()),
                        };
                        manager.tools.push(Arc::new(McpTool {
                            spec: spec_out,
                            server: started.conn.clone(),
                            tool: t.name.to_string(),
                            refused,
                            call_timeout: opts.call_timeout,
                            metrics: opts.metrics.clone(),
                        }));
                    }
                    manager.servers.push(started.conn);
                }
                Err(reason) => {
                    opts.metrics.start(&spec.name, "failed");
                    tracing::warn!(
                        agent_id = %act.agent_id,
                        server = %spec.name,
                        optional = spec.optional,
                        reason = %reason,
                        "mcp_server_failed"
                    );
                    if !spec.optional && failure.is_none() {
                        failure = Some(McpError::StartFailed {
                            server: spec.name.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        match failure {
            Some(e) => {
                manager.shutdown().await;
                Err(e)
            }
            None => Ok(manager),
        }
    }

    /// The tools the agent may call (refused tools are left out), as [`Tool`]s.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools
            .iter()
            .filter(|t| t.allowed())
            .map(|t| t.clone() as Arc<dyn Tool>)
            .collect()
    }

    /// Adds the allowed tools to an activation's tool set.
    pub fn add_to(&self, set: &mut ToolSet) {
        for t in self.tools() {
            set.add(t);
        }
    }

    /// Calls a tool by its exposed name. A tool of a running server that the grants do not
    /// cover is refused as an error result; an unknown name is an error result too.
    pub async fn call(&self, name: &str, args: serde_json::Value) -> ToolOutput {
        match self.tools.iter().find(|t| t.spec.name == name) {
            Some(t) => t.call(args).await,
            None => ToolOutput::error(format!("Unknown tool: {name}")),
        }
    }

    /// Names of the servers that started.
    pub fn servers(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// The pid (= process group id) of a started server.
    pub fn pid(&self, server: &str) -> Option<u32> {
        self.servers
            .iter()
            .find(|s| s.name == server)
            .and_then(|s| s.pid)
    }

    /// Kills every server's process group and closes the clients (bounded).
    pub async fn shutdown(mut self) {
        for s in &self.servers {
            s.kill_group();
        }
        let services: Vec<_> = self
            .servers
            .iter()
            .filter_map(|s| s.service.lock().ok().and_then(|mut g| g.take()))
            .collect();
        for svc in services {
            let _ = tokio::time::timeout(Duration::from_secs(5), svc.cancel()).await;
        }
        self.tools.clear();
        self.servers.clear();
    }
}

impl Drop for McpManager {
    fn drop(&mut self) {
        for s in &self.servers {
            s.kill_group();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(list: &[&str]) -> Grants {
        Grants::parse("t", list).expect("valid")
    }

    fn creds(plain: Option<&str>, per_db: &[(&str, &str)]) -> ToolCredentials {
        ToolCredentials {
            database_url: plain.map(Secret::new),
            database_urls: per_db
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(*v)))
                .collect(),
            ..ToolCredentials::default()
        }
    }

    fn chosen(c: &ToolCredentials, grants: &[&str]) -> Result<(Option<String>, String), String> {
        c.postgres_credential(&g(grants))
            .map(|p| (p.database, p.url.expose().to_string()))
    }

    #[test]
    fn database_keys_and_url_databases() {
        assert_eq!(database_env_key("sales"), "SALES");
        assert_eq!(database_env_key("sales-eu.v2"), "SALES_EU_V2");
        assert_eq!(
            url_database("postgres://u:pw@db:5432/sales?sslmode=require").as_deref(),
            Some("sales")
        );
        assert_eq!(
            url_database("postgresql:///my%2Ddb").as_deref(),
            Some("my-db")
        );
        assert_eq!(url_database("postgres://u@db:5432"), None);
        assert_eq!(url_database("postgres://u@db:5432/"), None);
        assert_eq!(url_database("host=db dbname=sales"), None);
    }

    #[test]
    fn a_db_grant_gets_its_own_url_or_a_plain_url_only_for_that_db() {
        let sales_url = "postgres://u:pw@db/sales";
        let hr_url = "postgres://u:pw@db/hr";
        // Only a plain URL for another database: nothing for sales, and the error names the grant.
        let c = creds(Some(hr_url), &[]);
        let err = chosen(&c, &["postgres:sales:read"]).expect_err("no URL for sales");
        assert_eq!(
            err,
            "no database URL for the grant postgres:sales:read (set DATABASE_URL_SALES, or a DATABASE_URL whose database is 'sales')"
        );
        // The plain URL names the granted database: handed over.
        assert_eq!(
            chosen(&c, &["postgres:hr:read"]),
            Ok((Some("hr".into()), hr_url.into()))
        );
        // DATABASE_URL_<DB> wins over the plain URL, even when the plain one is for that db.
        let c = creds(Some(sales_url), &[("SALES", "postgres://ro@replica/sales")]);
        assert_eq!(
            chosen(&c, &["postgres:sales:write"]),
            Ok((Some("sales".into()), "postgres://ro@replica/sales".into()))
        );
        // Database names are folded to the variable's form.
        let c = creds(None, &[("SALES_EU", "postgres://db/sales-eu")]);
        assert_eq!(
            chosen(&c, &["postgres:sales-eu:read"]),
            Ok((Some("sales-eu".into()), "postgres://db/sales-eu".into()))
        );
        // postgres:* gets the plain URL whatever it names, and only the plain URL.
        let c = creds(Some(hr_url), &[("SALES", sales_url)]);
        assert_eq!(
            chosen(&c, &["postgres:*", "postgres:sales:read"]),
            Ok((None, hr_url.into()))
        );
        let c = creds(None, &[("SALES", sales_url)]);
        assert!(
            chosen(&c, &["postgres:*"])
                .expect_err("no plain URL")
                .contains("postgres:*")
        );
        // A grant without a URL is skipped when another one resolves.
        let c = creds(None, &[("SALES", sales_url)]);
        assert_eq!(
            chosen(&c, &["postgres:hr:read", "postgres:sales:read"]),
            Ok((Some("sales".into()), sales_url.into()))
        );
        // Two databases with URLs: one server cannot serve both.
        let c = creds(None, &[("SALES", sales_url), ("HR", hr_url)]);
        let err = chosen(&c, &["postgres:hr:read", "postgres:sales:read"]).expect_err("ambiguous");
        assert!(
            err.contains("postgres:hr:read") && err.contains("postgres:sales:read"),
            "{err}"
        );
        // Non-postgres grants never unlock a URL.
        assert!(chosen(&creds(Some(sales_url), &[]), &["github:*"]).is_err());
    }

    #[test]
    fn a_custom_db_grant_needs_an_agent_grant_on_that_db() {
        let c = creds(
            None,
            &[("SALES", "postgres://db/sales"), ("HR", "postgres://db/hr")],
        );
        let agent = g(&["postgres:hr:read"]);
        let wants_sales = Grant::parse("postgres:sales:*").expect("valid");
        assert!(custom_postgres_url(&wants_sales, &agent, &c).is_err());
        let wants_hr = Grant::parse("postgres:hr:read").expect("valid");
        assert_eq!(
            custom_postgres_url(&wants_hr, &agent, &c).map(|u| u.expose().to_string()),
            Ok("postgres://db/hr".to_string())
        );
    }

    #[test]
    fn the_postgres_gate_checks_the_connected_database() {
        let gate = ToolGate::Postgres {
            database: "hr".into(),
        };
        let grants = g(&["postgres:sales:write", "postgres:hr:read"]);
        assert!(gate.check("query", &grants).is_ok());
        assert_eq!(
            gate.check("drop_table", &grants),
            Err("postgres:hr:write".to_string())
        );
    }

    #[test]
    fn tool_names_are_sanitized_cut_and_unique() {
        assert_eq!(
            tool_name("github", "create_issue"),
            "mcp_github_create_issue"
        );
        assert_eq!(
            tool_name("my.server", "do thing/now"),
            "mcp_my_server_do_thing_now"
        );
        let long = tool_name("s", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        let mut taken = HashSet::new();
        let a = unique_name(long.clone(), &mut taken);
        let b = unique_name(long.clone(), &mut taken);
        let c = unique_name(long, &mut taken);
        assert_eq!(a.len(), 64);
        assert!(b.ends_with("_2") && b.len() == 64, "{b}");
        assert!(c.ends_with("_3"), "{c}");
    }
}
