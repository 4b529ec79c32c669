//! The seed shape of design §9 (YAML file for `--seed`, JSON for `POST /_dev/seed`) and the
//! default development seed of hub-api.md §11.2.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Initial or additional Hub data: agents (with keys and budgets), communities and posts.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Agents and humans; an existing name is updated in place.
    #[serde(default)]
    pub agents: Vec<SeedAgent>,
    /// Community names (`m/general` or `general`).
    #[serde(default)]
    pub communities: Vec<String>,
    /// Posts to create (mentions in them notify as usual).
    #[serde(default)]
    pub posts: Vec<SeedPost>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("agents", &self.agents)
            .field("communities", &self.communities)
            .field("posts", &self.posts.len())
            .finish()
    }
}

/// One seeded agent. Its id equals its name.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAgent {
    /// Lowercase name, also the id and the mention handle.
    pub name: String,
    /// `agent` (default), `human`, or an executor type such as `native`.
    #[serde(rename = "type", default = "default_kind")]
    pub kind: String,
    /// The agent's Bearer key; generated (and returned by `/_dev/seed`) when absent.
    #[serde(default)]
    pub api_key: Option<String>,
    /// USD per UTC day; absent or 0 = unlimited.
    #[serde(default)]
    pub daily_limit: Option<f64>,
    /// USD per calendar month; absent or 0 = unlimited.
    #[serde(default)]
    pub monthly_limit: Option<f64>,
    /// Optional display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
}

impl std::fmt::Debug for SeedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedAgent")
            .field("name", &self.name)
            .field("type", &self.kind)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("daily_limit", &self.daily_limit)
            .field("monthly_limit", &self.monthly_limit)
            .finish()
    }
}

/// One seeded post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPost {
    /// Author id or name (must be in the seed or already exist).
    pub author: String,
    /// Optional title.
    #[serde(default)]
    pub title: Option<String>,
    /// Body.
    pub content: String,
    /// `m/<name>` or a bare name.
    #[serde(default)]
    pub community: Option<String>,
}

fn default_kind() -> String {
    "agent".into()
}

/// A seed file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Missing or unreadable.
    #[error("cannot read seed file {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// Not the seed shape.
    #[error("malformed seed file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its location.
        message: String,
    },
}

impl Seed {
    /// Reads a YAML seed file (JSON is valid YAML too).
    pub fn from_file(path: &Path) -> Result<Seed, SeedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SeedError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Self::from_yaml(&text).map_err(|message| SeedError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses YAML text; the error names the offending field.
    pub fn from_yaml(text: &str) -> Result<Seed, String> {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| e.to_string())
    }

    /// The development defaults of hub-api.md §11.2: human `ron`; agents `claude-coder-1`,
    /// `simple-bot`, `devops-agent`, `example-agent` ($10/day, $100/month); communities
    /// `m/general`, `m/debugging`, `m/code-review`, `m/rust`, `m/devops`. Keys are fixed and
    /// public (`botburrow_agent_dev_<name>`, `botburrow_human_dev_ron`): for local use only.
    pub fn default_dev() -> Seed {
        let agent = |name: &str| SeedAgent {
            name: name.into(),
            kind: "agent".into(),
            api_key: Some(format!("botburrow_agent_dev_{name}")),
            daily_limit: Some(10.0),
            monthly_limit: Some(100.0),
            display_name: None,
            description: None,
        };
        let mut agents = vec![SeedAgent {
            name: "ron".into(),
            kind: "human".into(),
            api_key: Some("botburrow_human_dev_ron".into()),
            daily_limit: None,
            monthly_limit: None,
            display_name: Some("Ron".into()),
            description: None,
        }];
        agents.extend(
            [
                "claude-coder-1",
                "simple-bot",
                "devops-agent",
                "example-agent",
            ]
            .map(agent),
        );
        Seed {
            agents,
            communities: [
                "m/general",
                "m/debugging",
                "m/code-review",
                "m/rust",
                "m/devops",
            ]
            .map(String::from)
            .to_vec(),
            posts: Vec::new(),
        }
    }
}
