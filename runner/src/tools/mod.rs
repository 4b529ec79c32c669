//! The tool abstraction the LLM loop sees: one trait for built-in Hub tools, sandbox tools and
//! MCP tools alike, and a [`ToolSet`] that keeps names unique. The built-in tools live in
//! [`sandbox`] (workspace file and shell tools) and [`hub`] (posting, search, threads).

pub mod hub;
pub mod sandbox;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Cuts a tool's text to [`sandbox::OUTPUT_LIMIT`] bytes (on a char boundary); says whether it cut.
pub(crate) fn sandbox_truncate(text: String) -> (String, bool) {
    sandbox::truncate(text, sandbox::OUTPUT_LIMIT)
}

/// Whether both LLM APIs accept a tool name: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What the model is told about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Unique name, `^[a-zA-Z0-9_-]{1,64}$` (both APIs accept this).
    pub name: String,
    /// One paragraph for the model.
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: serde_json::Value,
}

/// A tool's answer. Errors go back to the model as error results, never crash the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// Text shown to the model.
    pub text: String,
    /// Whether this is an error result.
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: false,
        }
    }
    /// An error result.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: true,
        }
    }
}

/// Something the model can call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Name, description and schema.
    fn spec(&self) -> ToolSpec;
    /// Runs the tool. Implementations bound their own time and never panic on bad arguments.
    async fn call(&self, args: serde_json::Value) -> ToolOutput;
}

/// The tools of one activation, with unique names (the first registration of a name wins, so
/// duplicates from overlapping grants are merged rather than sent twice to the API). Tools the
/// agent's grants withhold can be registered as refused: they are never offered to the model,
/// and a call by name (a forged call) gets the refusal as an error result.
#[derive(Clone, Default)]
pub struct ToolSet {
    tools: Vec<Arc<dyn Tool>>,
    /// Withheld tool names and the error result a call to one gets.
    refused: Vec<(String, String)>,
}

impl ToolSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool unless one with the same name is present or its name is one the LLM APIs
    /// refuse (which would fail every request of the activation); returns whether it was added.
    pub fn add(&mut self, tool: Arc<dyn Tool>) -> bool {
        let name = tool.spec().name;
        if !valid_tool_name(&name) {
            tracing::warn!(tool = %name, "tool name rejected: must match ^[a-zA-Z0-9_-]{{1,64}}$");
            return false;
        }
        if self.tools.iter().any(|t| t.spec().name == name) {
            tracing::debug!(tool = %name, "duplicate tool name merged");
            return false;
        }
        self.tools.push(tool);
        true
    }

    /// Withholds `name`: it is not offered, and calling it returns `reason` as an error result
    /// (unless a tool of that name is added, which then wins).
    pub fn refuse(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        let name = name.into();
        if !self.refused.iter().any(|(n, _)| *n == name) {
            self.refused.push((name, reason.into()));
        }
    }

    /// Specs for the model, in registration order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    /// Whether a tool of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.spec().name == name)
    }

    /// Calls a tool by name; a refused or unknown name is an error result for the model.
    pub async fn call(&self, name: &str, args: serde_json::Value) -> ToolOutput {
        match self.tools.iter().find(|t| t.spec().name == name) {
            Some(tool) => tool.call(args).await,
            None => match self.refused.iter().find(|(n, _)| n == name) {
                Some((_, reason)) => {
                    tracing::warn!(tool = %name, reason = %reason, "tool_refused");
                    ToolOutput::error(reason.clone())
                }
                None => ToolOutput::error(format!("Unknown tool: {name}")),
            },
        }
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(&'static str);

    #[async_trait]
    impl Tool for Echo {
        fn spec(&self) -> ToolSpec {
            ToolSpec {
                name: self.0.into(),
                description: "echo".into(),
                input_schema: serde_json::json!({"type":"object"}),
            }
        }
        async fn call(&self, args: serde_json::Value) -> ToolOutput {
            ToolOutput::ok(args.to_string())
        }
    }

    #[tokio::test]
    async fn names_stay_unique_and_unknown_tools_are_error_results() {
        let mut set = ToolSet::new();
        assert!(set.add(Arc::new(Echo("a"))));
        assert!(!set.add(Arc::new(Echo("a"))));
        assert!(set.add(Arc::new(Echo("b"))));
        assert!(
            !set.add(Arc::new(Echo("has.dot"))),
            "names the APIs refuse are not offered"
        );
        assert!(!set.add(Arc::new(Echo(""))));
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.call("a", serde_json::json!({"x":1})).await,
            ToolOutput::ok("{\"x\":1}")
        );
        assert!(set.call("zzz", serde_json::json!({})).await.is_error);

        set.refuse("c", "Tool 'c' is not permitted");
        assert_eq!(set.len(), 2, "a refused tool is not offered");
        assert!(!set.contains("c"));
        assert!(!set.specs().iter().any(|s| s.name == "c"));
        assert_eq!(
            set.call("c", serde_json::json!({})).await,
            ToolOutput::error("Tool 'c' is not permitted")
        );
    }
}
