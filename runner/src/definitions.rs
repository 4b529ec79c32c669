//! The agent definitions store: where an activation gets its [`AgentConfig`].
//!
//! Sources, chosen per lookup (so a git-sync sidecar that finishes its first clone after the runner
//! started is picked up without a restart):
//! - **Local** (`AGENT_DEFINITIONS_PATH` exists): a git-sync v4 link (a relative symlink that
//!   git-sync atomically renames onto a new `.worktrees/<sha>` directory per commit) or a plain
//!   directory. The link's *parent* directory is watched non-recursively with `notify` (a watch on
//!   the link itself follows it into the old worktree and dies when git-sync deletes it); on an
//!   event the link is re-resolved and, if its target changed, every known agent is reloaded. A slow
//!   periodic re-check is the safety net for missed events. A plain directory is watched
//!   recursively instead.
//! - **Raw GitHub** (the path does not exist and `AGENT_DEFINITIONS_REPO` is set):
//!   `{base}/{repo}/{branch}/agents/{id}/config.yaml` (+ `system-prompt.md`), the base injectable.
//!
//! Parsed configs are cached in process per reload generation, and mirrored to `cache:agent:{id}`
//! with the agent's `cache_ttl`: when that key expires or the coordinator's invalidation webhook
//! deletes it, the next lookup reads the source again. A definition is valid only if its grants
//! are too (`capabilities.grants` and each custom MCP server's `grant`, checked by
//! [`validate_grants`]), so a bad grant is caught at load, not when an activation starts. An agent
//! whose new definition is invalid keeps its last good config; the error is logged once per
//! reload and counted in `botburrow_agent_config_errors_total`.

use crate::kv::KvStore;
use crate::metrics::RunnerMetrics;
use botburrow_shared::agent::{AgentConfig, AgentConfigError};
use botburrow_shared::grants::validate_grants;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::{RunnerSettings, Secret};
use botburrow_shared::valkey;
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default base of raw GitHub file URLs.
pub const RAW_GITHUB_BASE: &str = "https://raw.githubusercontent.com";

/// Why a definition could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// Missing, unreadable or invalid definition (`Agent config not found: <path>` when missing).
    #[error(transparent)]
    Config(#[from] AgentConfigError),
    /// The agent id cannot name a directory (e.g. contains `/` or starts with `.`).
    #[error("invalid agent id '{0}'")]
    InvalidId(String),
    /// Raw-GitHub mode could not fetch a file.
    #[error("fetching {url} failed: {message}")]
    Fetch {
        /// The URL (never carries the token).
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl DefinitionError {
    /// Whether the definition simply does not exist (as opposed to being broken or unreachable).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DefinitionError::Config(AgentConfigError::NotFound { .. })
        )
    }
}

/// Where definitions come from and how often to re-check.
#[derive(Debug, Clone)]
pub struct DefinitionsConfig {
    /// git-sync link or plain directory holding `agents/<id>/`.
    pub path: PathBuf,
    /// `owner/repo` for raw-GitHub mode.
    pub repo: Option<String>,
    /// Branch for raw-GitHub mode.
    pub branch: String,
    /// Token for a private repo.
    pub github_token: Option<Secret>,
    /// Base of raw file URLs ([`RAW_GITHUB_BASE`]; tests point it at a local server).
    pub raw_base_url: String,
    /// Safety-net period for re-resolving the link without an event.
    pub recheck_interval: Duration,
    /// How long to let a burst of file events settle before re-resolving.
    pub debounce: Duration,
}

impl DefinitionsConfig {
    /// From the runner's settings, with the production defaults (30 s re-check, 50 ms debounce).
    pub fn from_settings(s: &RunnerSettings) -> Self {
        Self {
            path: s.agent_definitions_path.clone(),
            repo: s.agent_definitions_repo.clone(),
            branch: s.agent_definitions_branch.clone(),
            github_token: s.github_token.clone(),
            raw_base_url: RAW_GITHUB_BASE.to_string(),
            recheck_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(50),
        }
    }

    /// A local directory or link, with the default timings.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            repo: None,
            branch: "main".into(),
            github_token: None,
            raw_base_url: RAW_GITHUB_BASE.to_string(),
            recheck_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(50),
        }
    }
}

struct Entry {
    config: Arc<AgentConfig>,
    generation: u64,
    /// The generation whose load error was already logged and counted.
    error_reported: Option<u64>,
}

#[derive(Default)]
struct State {
    generation: u64,
    link_target: Option<PathBuf>,
    agents: HashMap<AgentId, Entry>,
}

/// The store; share it as `Arc<DefinitionStore>`.
pub struct DefinitionStore {
    cfg: DefinitionsConfig,
    kv: Arc<dyn KvStore>,
    metrics: RunnerMetrics,
    http: reqwest::Client,
    state: Mutex<State>,
}

enum Source {
    Local,
    Raw(String),
}

impl DefinitionStore {
    /// Builds a store; call [`DefinitionStore::spawn_watcher`] to get live reloads.
    pub fn new(cfg: DefinitionsConfig, kv: Arc<dyn KvStore>, metrics: RunnerMetrics) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let link_target = std::fs::read_link(&cfg.path).ok();
        Self {
            cfg,
            kv,
            metrics,
            http,
            state: Mutex::new(State {
                link_target,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Reload generation: increases every time the source changed (tests wait on it).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The commit the git-sync link points at (`basename(readlink(link))`), if it is a link.
    pub fn revision(&self) -> Option<String> {
        self.lock()
            .link_target
            .as_ref()
            .and_then(|t| t.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    }

    fn source(&self) -> Option<Source> {
        if self.cfg.path.exists() {
            Some(Source::Local)
        } else {
            self.cfg.repo.clone().map(Source::Raw)
        }
    }

    /// The agent's current config: the cached one while it is fresh, else re-read; the last good
    /// one when the new definition is invalid.
    pub async fn get(&self, agent: &AgentId) -> Result<Arc<AgentConfig>, DefinitionError> {
        let id = agent.as_str();
        if id.is_empty() || id.contains('/') || id.contains('\\') || id.starts_with('.') {
            return Err(DefinitionError::InvalidId(id.to_string()));
        }
        let (generation, cached) = {
            let st = self.lock();
            match st.agents.get(agent) {
                Some(e) if e.generation == st.generation && e.error_reported.is_none() => {
                    (st.generation, Some(e.config.clone()))
                }
                _ => (st.generation, None),
            }
        };
        if let Some(cached) = cached {
            // An expired or deleted cache key (TTL, invalidation webhook) forces a re-read;
            // a Valkey error keeps the in-process copy.
            match self.kv.exists(&valkey::agent_cache(agent)).await {
                Ok(false) => {}
                _ => return Ok(cached),
            }
        }
        self.refresh(agent, generation).await
    }

    async fn refresh(
        &self,
        agent: &AgentId,
        generation: u64,
    ) -> Result<Arc<AgentConfig>, DefinitionError> {
        match self.load(agent).await {
            Ok(cfg) => {
                let cfg = Arc::new(cfg);
                if let Ok(json) = serde_json::to_string(&*cfg) {
                    let ttl = Duration::from_secs(cfg.cache_ttl.max(1));
                    if let Err(e) = self
                        .kv
                        .set_ex(&valkey::agent_cache(agent), &json, ttl)
                        .await
                    {
                        tracing::warn!(agent_id = %agent, error = %e, "agent_config_cache_write_failed");
                    }
                }
                self.lock().agents.insert(
                    agent.clone(),
                    Entry {
                        config: cfg.clone(),
                        generation,
                        error_reported: None,
                    },
                );
                Ok(cfg)
            }
            Err(e) if e.is_not_found() => {
                self.lock().agents.remove(agent);
                Err(e)
            }
            Err(e) => {
                let mut st = self.lock();
                let revision = self.revision_locked(&st);
                let already = st
                    .agents
                    .get(agent)
                    .map(|x| x.error_reported == Some(generation))
                    .unwrap_or(false);
                if !already {
                    self.metrics.config_error(agent.as_str());
                }
                match st.agents.get_mut(agent) {
                    Some(entry) => {
                        if !already {
                            tracing::error!(agent_id = %agent, error = %e, revision = ?revision,
                                "agent_config_invalid_keeping_last_good");
                        }
                        entry.generation = generation;
                        entry.error_reported = Some(generation);
                        Ok(entry.config.clone())
                    }
                    None => {
                        tracing::error!(agent_id = %agent, error = %e, "agent_config_invalid");
                        Err(e)
                    }
                }
            }
        }
    }

    fn revision_locked(&self, st: &State) -> Option<String> {
        st.link_target
            .as_ref()
            .and_then(|t| t.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    }

    async fn load(&self, agent: &AgentId) -> Result<AgentConfig, DefinitionError> {
        let cfg = self.load_unchecked(agent).await?;
        validate_grants(&format!("agents/{agent}/config.yaml"), &cfg)?;
        Ok(cfg)
    }

    async fn load_unchecked(&self, agent: &AgentId) -> Result<AgentConfig, DefinitionError> {
        match self.source() {
            Some(Source::Local) => {
                let path = self.cfg.path.clone();
                let id = agent.as_str().to_string();
                let joined = tokio::task::spawn_blocking(move || load_local(&path, &id)).await;
                match joined {
                    Ok(r) => r.map_err(DefinitionError::from),
                    Err(e) => Err(DefinitionError::Fetch {
                        url: self.cfg.path.display().to_string(),
                        message: e.to_string(),
                    }),
                }
            }
            Some(Source::Raw(repo)) => self.load_raw(&repo, agent).await,
            None => Err(AgentConfigError::NotFound {
                path: self
                    .cfg
                    .path
                    .join("agents")
                    .join(agent.as_str())
                    .join("config.yaml"),
            }
            .into()),
        }
    }

    async fn fetch_raw(&self, url: &str) -> Result<Option<String>, DefinitionError> {
        let mut req = self.http.get(url);
        if let Some(token) = &self.cfg.github_token {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("token {}", token.expose()),
            );
        }
        let fail = |message: String| DefinitionError::Fetch {
            url: url.to_string(),
            message,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        resp.text()
            .await
            .map(Some)
            .map_err(|e| fail(e.without_url().to_string()))
    }

    async fn load_raw(&self, repo: &str, agent: &AgentId) -> Result<AgentConfig, DefinitionError> {
        let base = format!(
            "{}/{}/{}/agents/{}",
            self.cfg.raw_base_url.trim_end_matches('/'),
            repo,
            self.cfg.branch,
            agent
        );
        let config_url = format!("{base}/config.yaml");
        let Some(yaml) = self.fetch_raw(&config_url).await? else {
            return Err(AgentConfigError::NotFound {
                path: PathBuf::from(config_url),
            }
            .into());
        };
        let prompt = self
            .fetch_raw(&format!("{base}/system-prompt.md"))
            .await?
            .unwrap_or_default();
        Ok(AgentConfig::parse(
            &format!("agents/{agent}/config.yaml"),
            &yaml,
            agent.as_str(),
            prompt,
        )?)
    }

    /// Loads every agent of a local source once (startup), so broken definitions are logged and
    /// counted before any work arrives. Returns (loaded, failed).
    pub async fn preload(&self) -> (usize, usize) {
        if !matches!(self.source(), Some(Source::Local)) {
            return (0, 0);
        }
        let path = self.cfg.path.clone();
        let ids = tokio::task::spawn_blocking(move || {
            let root = std::fs::canonicalize(&path).unwrap_or(path);
            AgentConfig::list(&root).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let (mut ok, mut failed) = (0, 0);
        for id in ids {
            match self.get(&AgentId::new(id)).await {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        tracing::info!(agents = ok, invalid = failed, revision = ?self.revision(), "agent_definitions_loaded");
        (ok, failed)
    }

    /// `/ready`: the definitions can be read (the link resolves and has `agents/`, or raw mode is
    /// configured).
    pub async fn check_ready(&self) -> Result<(), String> {
        match self.source() {
            Some(Source::Local) => {
                let agents = self.cfg.path.join("agents");
                match tokio::fs::read_dir(&agents).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("{}: {e}", agents.display())),
                }
            }
            Some(Source::Raw(repo)) => {
                if repo.contains('/') {
                    Ok(())
                } else {
                    Err(format!("AGENT_DEFINITIONS_REPO '{repo}' is not owner/repo"))
                }
            }
            None => Err(format!(
                "{} does not exist and AGENT_DEFINITIONS_REPO is not set",
                self.cfg.path.display()
            )),
        }
    }

    /// Re-resolves the link; on a new target (or `force`, for plain directories) starts a new
    /// generation and eagerly reloads every known agent so invalid definitions are reported now.
    pub async fn recheck(&self, force: bool) -> bool {
        let target = std::fs::read_link(&self.cfg.path).ok();
        let (generation, agents) = {
            let mut st = self.lock();
            if !force && target == st.link_target {
                return false;
            }
            st.link_target = target;
            st.generation += 1;
            (st.generation, st.agents.keys().cloned().collect::<Vec<_>>())
        };
        tracing::info!(revision = ?self.revision(), generation, agents = agents.len(), "agent_definitions_changed");
        for agent in agents {
            // Errors are logged and counted inside; a missing agent is dropped from the cache.
            let _ = self.refresh(&agent, generation).await;
        }
        true
    }

    /// Starts watching the source; the watches are in place when this returns, and the task
    /// ends when `shutdown` is cancelled.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let path = self.cfg.path.clone();
        let mut watcher =
            match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if res.is_ok_and(|ev| concerns_definitions(&ev, &path)) {
                    let _ = tx.send(());
                }
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "agent_definitions_watch_unavailable");
                    None
                }
            };
        let mut watches = (false, false);
        if let Some(w) = watcher.as_mut() {
            self.ensure_watches(w, &mut watches.0, &mut watches.1);
        }
        let store = self.clone();
        tokio::spawn(async move { store.watch(watcher, watches, rx, shutdown).await })
    }

    async fn watch(
        self: Arc<Self>,
        mut watcher: Option<notify::RecommendedWatcher>,
        (mut watching_parent, mut watching_dir): (bool, bool),
        mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
        shutdown: CancellationToken,
    ) {
        let mut interval = tokio::time::interval(self.cfg.recheck_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(w) = watcher.as_mut() {
                self.ensure_watches(w, &mut watching_parent, &mut watching_dir);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => {
                    if ev.is_none() {
                        watcher = None;
                        continue;
                    }
                    tokio::time::sleep(self.cfg.debounce).await;
                    while rx.try_recv().is_ok() {}
                    let plain_dir = is_plain_dir(&self.cfg.path);
                    self.recheck(plain_dir).await;
                }
                _ = interval.tick() => {
                    self.recheck(false).await;
                }
            }
        }
    }

    fn ensure_watches(
        &self,
        w: &mut notify::RecommendedWatcher,
        parent_on: &mut bool,
        dir_on: &mut bool,
    ) {
        if !*parent_on && let Some(parent) = self.cfg.path.parent().filter(|p| p.is_dir()) {
            match w.watch(parent, RecursiveMode::NonRecursive) {
                Ok(()) => *parent_on = true,
                Err(e) => {
                    tracing::warn!(error = %e, dir = %parent.display(), "agent_definitions_watch_failed")
                }
            }
        }
        if !*dir_on && is_plain_dir(&self.cfg.path) {
            match w.watch(&self.cfg.path, RecursiveMode::Recursive) {
                Ok(()) => *dir_on = true,
                Err(e) => tracing::warn!(error = %e, "agent_definitions_watch_failed"),
            }
        }
    }
}

/// Whether a watch event can change the definitions: a change (not a mere read: the store's own
/// reads of a watched plain directory must not trigger reloads) of the definitions path itself
/// (the git-sync link being swapped) or of anything under it. Other entries of the link's parent
/// directory are ignored. Events without paths (a rescan after a queue overflow) count.
fn concerns_definitions(ev: &notify::Event, path: &Path) -> bool {
    if matches!(ev.kind, notify::EventKind::Access(_)) {
        return false;
    }
    ev.paths.is_empty() || ev.paths.iter().any(|p| p.starts_with(path))
}

fn is_plain_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

/// Reads from the link's current target; if the worktree vanished mid-read (git-sync deletes the
/// old one right after a flip) the link is resolved again and the read retried once.
fn load_local(path: &Path, agent: &str) -> Result<AgentConfig, AgentConfigError> {
    let mut last = None;
    for _ in 0..3 {
        let root = match std::fs::canonicalize(path) {
            Ok(r) => r,
            Err(_) => path.to_path_buf(),
        };
        match AgentConfig::load(&root, agent) {
            Ok(cfg) => return Ok(cfg),
            Err(e @ AgentConfigError::NotFound { .. }) | Err(e @ AgentConfigError::Io { .. }) => {
                let again = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
                if again == root {
                    return Err(match e {
                        AgentConfigError::NotFound { .. } => AgentConfigError::NotFound {
                            path: path.join("agents").join(agent).join("config.yaml"),
                        },
                        other => other,
                    });
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(AgentConfigError::NotFound {
        path: path.join("agents").join(agent).join("config.yaml"),
    }))
}
