//! The one grant model of the fleet: what an agent's `capabilities.grants` say, how they are
//! parsed and validated, and how a request (`service`, `scope`) is checked against them.
//!
//! A grant is `service:scope` (or `service:<resource>:scope` for per-resource services such as
//! `postgres:<db>:read`). Shapes accepted:
//!
//! | service | scopes |
//! |---|---|
//! | `hub` | `read`, `write`, `*` |
//! | `github` | `read`, `write`, `*` |
//! | `filesystem` (alias `fs`) | `read`, `write`, `*` |
//! | `brave` (alias `brave-search`) | `search`, `*` |
//! | `postgres` | `<db>:read`, `<db>:write`, `<db>:*`, `*` |
//! | any other name (custom MCP servers, `arxiv`, `aws`, ...) | one or more `[A-Za-z0-9._-]` segments, or `*` |
//!
//! Rules: `service:*` holds every scope of the service (and every resource below it);
//! `write` implies `read` (hub, github, filesystem, postgres and custom services alike).
//! Aliases are folded at parse time, so `fs:read` and `filesystem:read` are the same grant.
//! Anything else (no scope, empty segments, odd characters, `hub:delete`) is a config error
//! naming the agent file and the grant.
//!
//! The gating helpers for the Hub tools live here too ([`HubAction`]), so the runner's built-in
//! `hub_*` tools and the automatic reply are decided in one place.

use crate::agent::{AgentConfig, AgentConfigError, McpServerEntry};
use std::collections::BTreeSet;
use std::fmt;

/// Why a grant string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The grant does not have an accepted shape.
    #[error("{file}: capabilities.grants: invalid grant '{grant}': {reason}")]
    Invalid {
        /// The agent file the grant came from (e.g. `agents/x/config.yaml`).
        file: String,
        /// The grant exactly as written.
        grant: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Folds documented aliases onto the canonical service name.
pub fn canonical_service(service: &str) -> &str {
    match service {
        "fs" => "filesystem",
        "brave-search" => "brave",
        other => other,
    }
}

/// Scopes a known service accepts; `None` for services this table does not know (custom ones).
fn known_scopes(service: &str) -> Option<&'static [&'static str]> {
    match service {
        "hub" | "github" | "filesystem" => Some(&["read", "write"]),
        "brave" => Some(&["search"]),
        _ => None,
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// One validated grant, in canonical form (aliases folded).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    service: String,
    /// Scope segments after the service, e.g. `["read"]` or `["mydb", "read"]` or `["*"]`.
    scope: Vec<String>,
}

impl Grant {
    /// Parses one grant; the error's `file` is left empty (see [`Grants::parse`] for the labelled form).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut parts = text.split(':');
        let service = parts.next().unwrap_or_default();
        if service.is_empty() {
            return Err("expected service:scope, e.g. hub:read".into());
        }
        if !valid_segment(service) || service.starts_with(['-', '.']) {
            return Err(format!(
                "service name '{service}' may only use letters, digits, '_', '-' and '.'"
            ));
        }
        let service = canonical_service(&service.to_ascii_lowercase()).to_string();
        let scope: Vec<String> = parts.map(str::to_string).collect();
        if scope.is_empty() {
            return Err("expected service:scope, e.g. hub:read".into());
        }
        for (i, seg) in scope.iter().enumerate() {
            if seg == "*" {
                if i + 1 != scope.len() {
                    return Err("'*' may only be the last part".into());
                }
            } else if !valid_segment(seg) {
                return Err(format!(
                    "scope part '{seg}' may only use letters, digits, '_', '-' and '.'"
                ));
            }
        }
        let wild = scope.len() == 1 && scope[0] == "*";
        if !wild {
            if let Some(allowed) = known_scopes(&service) {
                if scope.len() != 1 || !allowed.contains(&scope[0].as_str()) {
                    return Err(format!(
                        "{service} grants are {service}:{} or {service}:*",
                        allowed.join(&*format!(", {service}:"))
                    ));
                }
            } else if service == "postgres" {
                let ok = scope.len() == 2
                    && matches!(scope[1].as_str(), "read" | "write" | "*")
                    && scope[0] != "*";
                if !ok {
                    return Err("postgres grants are postgres:<db>:read, postgres:<db>:write, postgres:<db>:* or postgres:*".into());
                }
            }
        }
        Ok(Self { service, scope })
    }

    /// The canonical service name (`filesystem` for `fs:*`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The scope part, joined with `:` (`read`, `mydb:read`, `*`).
    pub fn scope(&self) -> String {
        self.scope.join(":")
    }

    /// Whether this grant holds `service:scope` (scope may have several `:` parts).
    pub fn covers(&self, service: &str, scope: &str) -> bool {
        if canonical_service(service) != self.service {
            return false;
        }
        let want: Vec<&str> = scope.split(':').collect();
        for (i, have) in self.scope.iter().enumerate() {
            if have == "*" {
                return true;
            }
            let Some(w) = want.get(i) else { return false };
            let last = i + 1 == self.scope.len() && i + 1 == want.len();
            let same = have == w || (last && have == "write" && *w == "read");
            if !same {
                return false;
            }
        }
        self.scope.len() == want.len()
    }

    /// Whether this grant is of a form that can only be resolved for known services (`svc:*`).
    pub fn is_wildcard(&self) -> bool {
        self.scope.last().is_some_and(|s| s == "*")
    }

    /// The concrete grants a wildcard stands for, when the service's scopes are known
    /// (`github:*` -> `github:read`, `github:write`); empty otherwise.
    pub fn expand(&self) -> Vec<Grant> {
        if !self.is_wildcard() || self.scope.len() != 1 {
            return Vec::new();
        }
        known_scopes(&self.service)
            .map(|scopes| {
                scopes
                    .iter()
                    .map(|s| Grant {
                        service: self.service.clone(),
                        scope: vec![(*s).to_string()],
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.scope.join(":"))
    }
}

impl std::str::FromStr for Grant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Grant::parse(s)
    }
}

/// A set of grants (declared or effective) with the checks the runner needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    set: BTreeSet<Grant>,
}

impl Grants {
    /// Parses every grant of an agent; `file` labels the error (`agents/x/config.yaml`).
    pub fn parse<S: AsRef<str>>(file: &str, grants: &[S]) -> Result<Self, GrantError> {
        let mut set = BTreeSet::new();
        for g in grants {
            let g = g.as_ref();
            let grant = Grant::parse(g).map_err(|reason| GrantError::Invalid {
                file: file.to_string(),
                grant: g.to_string(),
                reason,
            })?;
            set.insert(grant);
        }
        Ok(Self { set })
    }

    /// The grants of an agent definition; `file` labels errors.
    pub fn from_agent(file: &str, agent: &crate::agent::AgentConfig) -> Result<Self, GrantError> {
        Self::parse(file, &agent.capabilities.grants)
    }

    /// A set from already-validated grants.
    pub fn from_grants(grants: impl IntoIterator<Item = Grant>) -> Self {
        Self {
            set: grants.into_iter().collect(),
        }
    }

    /// Whether any grant holds `service:scope` (`allows("postgres", "mydb:read")`).
    pub fn allows(&self, service: &str, scope: &str) -> bool {
        self.set.iter().any(|g| g.covers(service, scope))
    }

    /// Whether any grant names the service at all (any scope).
    pub fn has_service(&self, service: &str) -> bool {
        let service = canonical_service(service);
        self.set.iter().any(|g| g.service == service)
    }

    /// Whether the grant `text` (itself a `service:scope`) is held; false when `text` is malformed.
    pub fn allows_grant(&self, text: &str) -> bool {
        match Grant::parse(text) {
            Ok(want) => {
                if want.is_wildcard() {
                    // `x:*` asked for: any grant of the service is enough to run it, but every
                    // concrete scope must then be checked per call.
                    self.set.iter().any(|g| g.service == want.service)
                } else {
                    self.allows(&want.service, &want.scope())
                }
            }
            Err(_) => false,
        }
    }

    /// Postgres databases readable under these grants (`None` in the set means `postgres:*`).
    pub fn postgres_read_databases(&self) -> Vec<Option<String>> {
        self.set
            .iter()
            .filter(|g| g.service == "postgres")
            .map(|g| {
                if g.scope[0] == "*" {
                    None
                } else {
                    Some(g.scope[0].clone())
                }
            })
            .collect()
    }

    /// The grants, sorted, in canonical form.
    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.set.iter()
    }

    /// Number of grants.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Canonical strings, for logs and prompts (grants are not secrets).
    pub fn to_strings(&self) -> Vec<String> {
        self.set.iter().map(Grant::to_string).collect()
    }

    /// Whether the agent may perform a Hub action (see [`HubAction`]).
    pub fn allows_hub(&self, action: HubAction) -> bool {
        self.allows("hub", action.scope())
    }
}

/// What a Hub tool (or the runner on the agent's behalf) does, and so which grant it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubAction {
    /// `hub_search`, `hub_get_thread`, `hub_get_notifications`: needs `hub:read` (or write, or `*`).
    Read,
    /// `hub_post` and the automatic final-text reply: needs `hub:write` (or `*`).
    Write,
}

impl HubAction {
    /// The scope the action needs.
    pub fn scope(self) -> &'static str {
        match self {
            HubAction::Read => "read",
            HubAction::Write => "write",
        }
    }

    /// The action of a Hub tool by its name; `None` for names that are not Hub tools.
    pub fn of_tool(tool: &str) -> Option<Self> {
        match tool {
            "hub_search" | "hub_get_thread" | "hub_get_notifications" => Some(HubAction::Read),
            "hub_post" => Some(HubAction::Write),
            _ => None,
        }
    }
}

/// A tool's access level, for the per-tool scope tables of MCP servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads.
    Read,
    /// Changes something (the default for anything not known to be a read).
    Write,
}

impl Access {
    /// `read` / `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Checks every grant of a definition, as an activation would: each of `capabilities.grants`,
/// and each custom MCP server's `grant` (default `<name>:*`). The error names `file`, the field
/// and the grant, e.g. `agents/x/config.yaml: capabilities.grants[1]: invalid grant 'hub:delete':
/// hub grants are hub:read, hub:write or hub:*`. It is the first of [`grant_errors`].
pub fn validate_grants(file: &str, cfg: &AgentConfig) -> Result<(), AgentConfigError> {
    match grant_errors(file, cfg).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every invalid grant of a definition, in file order: `capabilities.grants` first, then each
/// custom MCP server's `grant` (a server without one is checked as `<name>:*`, reported on its
/// `name`). Each is an [`AgentConfigError::Field`] naming `file`, the field path (e.g.
/// `capabilities.mcp_servers[0].grant`) and the grant. Used by the runner's definitions store
/// (first error only) and by `botburrow agents validate` (all of them), so both judge a
/// definition alike.
pub fn grant_errors(file: &str, cfg: &AgentConfig) -> Vec<AgentConfigError> {
    let mut errors = Vec::new();
    let mut check = |field: String, text: &str| {
        if let Err(reason) = Grant::parse(text) {
            errors.push(AgentConfigError::Field {
                file: file.to_string(),
                field,
                message: format!("invalid grant '{text}': {reason}"),
            });
        }
    };
    for (i, text) in cfg.capabilities.grants.iter().enumerate() {
        check(format!("capabilities.grants[{i}]"), text);
    }
    for (i, entry) in cfg.capabilities.mcp_servers.iter().enumerate() {
        let McpServerEntry::Custom(c) = entry else {
            continue;
        };
        match &c.grant {
            Some(g) => check(format!("capabilities.mcp_servers[{i}].grant"), g),
            None => check(
                format!("capabilities.mcp_servers[{i}].name"),
                &format!("{}:*", c.name),
            ),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_fold_and_wildcards_cover() {
        let g = Grants::parse("f", &["fs:read", "github:*", "postgres:sales:read"]).expect("valid");
        assert!(g.allows("filesystem", "read"));
        assert!(g.allows("fs", "read"));
        assert!(!g.allows("filesystem", "write"));
        assert!(g.allows("github", "write"));
        assert!(g.allows("postgres", "sales:read"));
        assert!(!g.allows("postgres", "hr:read"));
        assert!(!g.allows("postgres", "sales:write"));
        assert_eq!(
            g.to_strings(),
            vec!["filesystem:read", "github:*", "postgres:sales:read"]
        );
    }

    #[test]
    fn write_implies_read_but_not_the_reverse() {
        let g = Grants::parse("f", &["hub:write", "github:read"]).expect("valid");
        assert!(g.allows_hub(HubAction::Read));
        assert!(g.allows_hub(HubAction::Write));
        assert!(g.allows("github", "read"));
        assert!(!g.allows("github", "write"));
        let r = Grants::parse("f", &["hub:read"]).expect("valid");
        assert!(!r.allows_hub(HubAction::Write));
    }

    #[test]
    fn bad_shapes_name_file_and_grant() {
        for bad in [
            "github",
            "hub:delete",
            "brave:read",
            "postgres:read",
            "a b:read",
            "x:",
            ":read",
            "x:*:y",
            "postgres:*:read",
        ] {
            let err =
                Grants::parse("agents/x/config.yaml", &["hub:read", bad]).expect_err("invalid");
            let text = err.to_string();
            assert!(
                text.starts_with("agents/x/config.yaml: capabilities.grants: invalid grant '"),
                "{text}"
            );
            assert!(text.contains(&format!("'{bad}'")), "{text}");
        }
        assert!(
            Grants::parse("f", &["arxiv:read", "kubernetes:*", "aws:s3:read:bucket-1"]).is_ok()
        );
    }

    #[test]
    fn wildcard_expands_for_known_services_only() {
        let g = Grant::parse("github:*").expect("valid");
        assert_eq!(
            g.expand().iter().map(Grant::to_string).collect::<Vec<_>>(),
            vec!["github:read", "github:write"]
        );
        assert!(Grant::parse("arxiv:*").expect("valid").expand().is_empty());
    }
}
