//! The cluster's permission policy (`AGENT_PERMISSIONS_PATH`, ConfigMap `agent-permissions`):
//! which grants each agent may actually use, whatever its own config declares, and a
//! [`PolicyStore`] that reloads the file when it changes, without a restart.
//!
//! File format (YAML); `allowed`/`denied` may also be spelled `allowed_grants`/`denied_grants`:
//!
//! ```yaml
//! default:
//!   allowed: [hub:read, hub:write]
//!   denied: [aws:*, postgres:*]
//! agents:
//!   claude-coder-1:
//!     allowed: [github:*, hub:*, brave:search]
//!     denied: [postgres:write]
//! ```
//!
//! Agents may also be listed at the top level (`claude-coder-1: {allowed: ...}`), as the
//! original ConfigMap did. An agent's entry replaces the default field by field: a missing
//! `allowed` or `denied` falls back to the default's. A missing `allowed` means "no limit".
//!
//! Patterns are globs over canonical grant strings (`github:*`, `postgres:*:read`; aliases such
//! as `fs:` are folded first). Effective grants = declared grants that match an allowed pattern
//! (when there is an allowed list) and no denied pattern. A declared wildcard of a known service
//! that is not wholly permitted is narrowed to its permitted concrete scopes (`github:*` with
//! `github:write` denied becomes `github:read`); a `write` grant whose implied `read` is denied
//! is dropped too, so deny always wins. On reload, an empty file is ignored (it is the
//! truncated instant of an in-place rewrite), so an operator clears a policy by writing rules
//! that allow everything, not by emptying the file.

use crate::grants::{Grant, Grants, canonical_service};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a policy could not be loaded or watched.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: cannot read: {message}", path.display())]
    Io {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Not valid YAML of the expected shape.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A pattern is not a valid glob.
    #[error("{}: {scope}: invalid pattern '{pattern}': {message}", path.display())]
    Pattern {
        /// The policy file.
        path: PathBuf,
        /// `default` or the agent id.
        scope: String,
        /// The pattern as written.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// The directory watch could not be set up.
    #[error("{}: cannot watch: {message}", path.display())]
    Watch {
        /// The directory watched.
        path: PathBuf,
        /// The notify error.
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawRule {
    #[serde(default, alias = "allowed_grants")]
    allowed: Option<Vec<String>>,
    #[serde(default, alias = "denied_grants")]
    denied: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    allowed: Option<Vec<Pattern>>,
    denied: Option<Vec<Pattern>>,
}

/// One parsed policy. The empty policy (no file) permits every declared grant.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    default: Rule,
    agents: BTreeMap<String, Rule>,
}

/// Folds a service alias at the front of a pattern (`fs:*` -> `filesystem:*`).
fn canonical_pattern(p: &str) -> String {
    let p = p.trim();
    match p.split_once(':') {
        Some((svc, rest)) => format!("{}:{rest}", canonical_service(&svc.to_ascii_lowercase())),
        None => p.to_string(),
    }
}

fn compile(
    path: &Path,
    scope: &str,
    list: Option<Vec<String>>,
) -> Result<Option<Vec<Pattern>>, PolicyError> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::with_capacity(list.len());
    for raw in list {
        let text = canonical_pattern(&raw);
        let glob = Glob::new(&text).map_err(|e| PolicyError::Pattern {
            path: path.to_path_buf(),
            scope: scope.to_string(),
            pattern: raw.clone(),
            message: e.kind().to_string(),
        })?;
        out.push(Pattern {
            text,
            matcher: glob.compile_matcher(),
        });
    }
    Ok(Some(out))
}

fn any_match(patterns: &[Pattern], grant: &str) -> bool {
    patterns
        .iter()
        .any(|p| p.matcher.is_match(grant) || p.text == grant)
}

impl Policy {
    /// Parses a policy text; `path` labels errors.
    pub fn parse(path: &Path, yaml: &str) -> Result<Self, PolicyError> {
        let parse_err = |message: String| PolicyError::Parse {
            path: path.to_path_buf(),
            message,
        };
        if yaml.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: serde_json::Value =
            serde_norway::from_str(yaml).map_err(|e| parse_err(e.to_string()))?;
        let map = match value {
            serde_json::Value::Null => return Ok(Self::default()),
            serde_json::Value::Object(m) => m,
            _ => {
                return Err(parse_err(
                    "expected a mapping with `default` and `agents`".into(),
                ));
            }
        };
        let rule = |key: &str, v: serde_json::Value| -> Result<RawRule, PolicyError> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let field = e.path().to_string();
                let at = if field == "." {
                    key.to_string()
                } else {
                    format!("{key}.{field}")
                };
                parse_err(format!("{at}: {}", e.inner()))
            })
        };
        let mut policy = Policy::default();
        for (key, v) in map {
            match key.as_str() {
                "default" => {
                    let r = rule("default", v)?;
                    policy.default = Rule {
                        allowed: compile(path, "default", r.allowed)?,
                        denied: compile(path, "default", r.denied)?,
                    };
                }
                "agents" => {
                    let agents = match v {
                        serde_json::Value::Object(m) => m,
                        serde_json::Value::Null => Default::default(),
                        _ => {
                            return Err(parse_err(
                                "agents: expected a mapping of agent id to rules".into(),
                            ));
                        }
                    };
                    for (agent, v) in agents {
                        let r = rule(&format!("agents.{agent}"), v)?;
                        let compiled = Rule {
                            allowed: compile(path, &agent, r.allowed)?,
                            denied: compile(path, &agent, r.denied)?,
                        };
                        policy.agents.insert(agent, compiled);
                    }
                }
                agent => {
                    let r = rule(agent, v)?;
                    let compiled = Rule {
                        allowed: compile(path, agent, r.allowed)?,
                        denied: compile(path, agent, r.denied)?,
                    };
                    policy.agents.insert(agent.to_string(), compiled);
                }
            }
        }
        Ok(policy)
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    fn rule_for(&self, agent: &str) -> (Option<&[Pattern]>, Option<&[Pattern]>) {
        let specific = self.agents.get(agent);
        let allowed = specific
            .and_then(|r| r.allowed.as_deref())
            .or(self.default.allowed.as_deref());
        let denied = specific
            .and_then(|r| r.denied.as_deref())
            .or(self.default.denied.as_deref());
        (allowed, denied)
    }

    fn permits(
        &self,
        allowed: Option<&[Pattern]>,
        denied: Option<&[Pattern]>,
        grant: &Grant,
    ) -> bool {
        let text = grant.to_string();
        if denied.is_some_and(|d| any_match(d, &text)) {
            return false;
        }
        if text.ends_with(":write") {
            let read = format!("{}read", &text[..text.len() - "write".len()]);
            if denied.is_some_and(|d| any_match(d, &read)) {
                return false;
            }
        }
        if grant.is_wildcard() {
            // A wildcard holds every narrower grant, so any deny pattern reaching into it
            // (`github:write` under `github:*`) rules the wildcard out; `effective` then keeps
            // the permitted concrete scopes of a known service.
            let prefix = text.trim_end_matches('*');
            if denied.is_some_and(|d| {
                d.iter()
                    .any(|p| p.text.starts_with(prefix) || p.text.starts_with('*'))
            }) {
                return false;
            }
        }
        allowed.is_none_or(|a| any_match(a, &text))
    }

    /// The grants `agent` may use: `declared` minus denied, limited to allowed (see module docs).
    /// Returns the effective set and the declared grants that were dropped or narrowed.
    pub fn effective(&self, agent: &str, declared: &Grants) -> (Grants, Vec<String>) {
        let (allowed, denied) = self.rule_for(agent);
        let mut keep = Vec::new();
        let mut dropped = Vec::new();
        for grant in declared.iter() {
            if self.permits(allowed, denied, grant) {
                keep.push(grant.clone());
                continue;
            }
            dropped.push(grant.to_string());
            // Narrow a wildcard of a known service to what the policy permits.
            keep.extend(
                grant
                    .expand()
                    .into_iter()
                    .filter(|g| self.permits(allowed, denied, g)),
            );
        }
        (Grants::from_grants(keep), dropped)
    }
}

/// The current policy, reloaded from its file on change. Cheap to clone; every clone sees reloads.
#[derive(Clone)]
pub struct PolicyStore {
    rx: tokio::sync::watch::Receiver<Arc<Policy>>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    _watcher: Option<Arc<notify::RecommendedWatcher>>,
}

impl PolicyStore {
    /// A store with a fixed policy and no file (no `AGENT_PERMISSIONS_PATH`: every declared grant is kept).
    pub fn fixed(policy: Policy) -> Self {
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(policy));
        Self {
            rx,
            last_error: Default::default(),
            _watcher: None,
        }
    }

    /// Loads `path` and watches its parent directory, reloading on any change there (ConfigMap
    /// updates swap a `..data` symlink, so the file itself is never written in place). A reload
    /// that fails to read or parse keeps the last good policy and logs `policy_reload_failed`.
    /// The first load must succeed.
    pub fn open(path: &Path) -> Result<Self, PolicyError> {
        use notify::Watcher;
        let path = path.to_path_buf();
        let initial = Policy::load(&path)?;
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(initial));
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut last_text = std::fs::read_to_string(&path).ok();
        let file = path.clone();
        let last_error: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let error_slot = last_error.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            if res.is_err() {
                return;
            }
            let text = match std::fs::read_to_string(&file) {
                // An in-place rewrite truncates first; an empty read is that instant, not a
                // policy (reloading it would briefly permit everything).
                Ok(t) if t.trim().is_empty() => return,
                Ok(t) => t,
                Err(e) => {
                    // Mid-swap or removed: keep what we have.
                    tracing::debug!(path = %file.display(), error = %e, "policy file not readable yet");
                    return;
                }
            };
            if last_text.as_deref() == Some(text.as_str()) {
                return;
            }
            match Policy::parse(&file, &text) {
                Ok(p) => {
                    last_text = Some(text);
                    if let Ok(mut slot) = error_slot.lock() {
                        *slot = None;
                    }
                    tx.send_replace(Arc::new(p));
                    tracing::info!(path = %file.display(), "policy_reloaded");
                }
                Err(e) => {
                    last_text = Some(text);
                    tracing::warn!(error = %e, "policy_reload_failed");
                    if let Ok(mut slot) = error_slot.lock() {
                        *slot = Some(e.to_string());
                    }
                }
            }
        };
        let mut watcher = notify::recommended_watcher(handler).map_err(|e| PolicyError::Watch {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| PolicyError::Watch {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            rx,
            last_error,
            _watcher: Some(Arc::new(watcher)),
        })
    }

    /// Opens the store for an optional path (`None` = no policy: every declared grant is kept).
    pub fn from_setting(path: Option<&Path>) -> Result<Self, PolicyError> {
        match path {
            Some(p) => Self::open(p),
            None => Ok(Self::fixed(Policy::default())),
        }
    }

    /// The error of the latest reload attempt, if it failed (cleared by the next good reload);
    /// the last good policy stays in force meanwhile.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The policy as of now.
    pub fn current(&self) -> Arc<Policy> {
        self.rx.borrow().clone()
    }

    /// Effective grants of an agent under the current policy; logs each dropped grant.
    pub fn effective(&self, agent: &str, declared: &Grants) -> Grants {
        let (grants, dropped) = self.current().effective(agent, declared);
        for g in dropped {
            tracing::warn!(agent_id = %agent, grant = %g, "grant_denied_by_policy");
        }
        grants
    }

    /// Waits until the policy changes (for components that cache effective grants).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(list: &[&str]) -> Grants {
        Grants::parse("t", list).expect("valid")
    }

    const ORIGINAL: &str = r#"
claude-coder-1:
  allowed: ["github:*", "hub:*", "brave:search"]
  denied: ["aws:*", "postgres:write"]
research-agent:
  allowed_grants: ["github:read", "hub:*", "brave:search"]
  denied_grants: ["github:write", "aws:*", "postgres:*"]
default:
  allowed: ["hub:read", "hub:write"]
  denied: ["aws:*", "postgres:*"]
"#;

    #[test]
    fn original_configmap_shape_applies() {
        let p = Policy::parse(Path::new("permissions.yaml"), ORIGINAL).expect("valid");
        let declared = grants(&[
            "github:*",
            "hub:write",
            "brave:search",
            "postgres:sales:read",
            "aws:s3:read:b",
        ]);
        let (eff, dropped) = p.effective("research-agent", &declared);
        assert_eq!(
            eff.to_strings(),
            vec!["brave:search", "github:read", "hub:write"]
        );
        assert!(dropped.contains(&"github:*".to_string()));
        let (eff, _) = p.effective("someone-else", &declared);
        assert_eq!(eff.to_strings(), vec!["hub:write"]);
        let (eff, _) = p.effective("claude-coder-1", &grants(&["fs:read", "github:write"]));
        assert_eq!(eff.to_strings(), vec!["github:write"]);
    }

    #[test]
    fn deny_wins_over_implied_read() {
        let p =
            Policy::parse(Path::new("p"), "default: {denied: [\"github:read\"]}").expect("valid");
        let (eff, _) = p.effective("a", &grants(&["github:write", "hub:read"]));
        assert_eq!(eff.to_strings(), vec!["hub:read"]);
    }

    #[test]
    fn empty_policy_keeps_everything_and_bad_policy_is_named() {
        let p = Policy::parse(Path::new("p"), "").expect("empty");
        let declared = grants(&["github:*", "x:y"]);
        assert_eq!(p.effective("a", &declared).0, declared);
        let err = Policy::parse(Path::new("perm.yaml"), "default: {allowed: 3}").expect_err("bad");
        assert!(
            err.to_string().starts_with("perm.yaml: default.allowed:"),
            "{err}"
        );
        let err = Policy::parse(Path::new("perm.yaml"), "agents: {a: {denied: [\"[\"]}}")
            .expect_err("bad");
        assert!(err.to_string().contains("invalid pattern '['"), "{err}");
    }
}
