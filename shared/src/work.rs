//! Work items and the vocabulary around them: task types, priorities and runner modes (design §4).

use crate::ids::{AgentId, WorkItemId};
use serde::{Deserialize, Serialize};

/// What an activation does: answer the inbox, or look for something to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    /// Unread notifications (mentions, replies).
    Inbox,
    /// A stale agent browsing its feed.
    Discovery,
}

impl TaskType {
    /// The wire and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Inbox => "inbox",
            TaskType::Discovery => "discovery",
        }
    }
}

/// Which list an item waits in. Claims take strictly from `High` before `Normal` before `Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Inbox work.
    High,
    /// Discovery work.
    Normal,
    /// Retries and backfill.
    Low,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The wire and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!("unknown priority '{other}' (expected high, normal or low)")),
        }
    }
}

/// What a runner pool is for (`RUNNER_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunnerMode {
    /// Inbox work only.
    Notification,
    /// Discovery work only.
    Exploration,
    /// Both, inbox first.
    #[default]
    Hybrid,
}

impl RunnerMode {
    /// Whether a runner in this mode may claim work of this type.
    pub fn allows(self, task: TaskType) -> bool {
        match self {
            RunnerMode::Notification => task == TaskType::Inbox,
            RunnerMode::Exploration => task == TaskType::Discovery,
            RunnerMode::Hybrid => true,
        }
    }

    /// The priority lists this mode claims from, highest first. Inbox work is always `High`,
    /// discovery `Normal`; retries may land in `Low`, which every mode reads but a claim
    /// re-checks the task type there.
    pub fn priorities(self) -> &'static [Priority] {
        match self {
            RunnerMode::Notification => &[Priority::High, Priority::Low],
            RunnerMode::Exploration => &[Priority::Normal, Priority::Low],
            RunnerMode::Hybrid => &[Priority::High, Priority::Normal, Priority::Low],
        }
    }

    /// The label used in settings, heartbeats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerMode::Notification => "notification",
            RunnerMode::Exploration => "exploration",
            RunnerMode::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for RunnerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "notification" => Ok(RunnerMode::Notification),
            "exploration" => Ok(RunnerMode::Exploration),
            "hybrid" => Ok(RunnerMode::Hybrid),
            other => Err(format!(
                "unknown runner mode '{other}' (expected notification, exploration or hybrid)"
            )),
        }
    }
}

fn default_priority() -> Priority {
    Priority::Normal
}

fn now_epoch() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1_000_000.0
}

/// One unit of work: activate `agent_id` for `task_type`. Serialized as JSON into the queue lists;
/// unknown fields are ignored so older and newer fleets can share a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Stable across retries: idempotency keys for Hub posts derive from it.
    #[serde(default = "WorkItemId::generate")]
    pub id: WorkItemId,
    /// The Hub id of the agent to activate.
    pub agent_id: AgentId,
    /// The agent's display or config name (informational).
    #[serde(default)]
    pub agent_name: String,
    /// Inbox or discovery.
    pub task_type: TaskType,
    /// Which list it goes to.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Unread notifications the Hub reported when it was enqueued.
    #[serde(default)]
    pub inbox_count: u32,
    /// How many times it has been claimed before (0 for a fresh item).
    #[serde(default)]
    pub attempt: u32,
    /// Epoch seconds (float) when it was first enqueued.
    #[serde(default = "now_epoch")]
    pub created_at: f64,
    /// The error of the previous attempt, if it was retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A queue entry that is not a valid work item.
#[derive(Debug, thiserror::Error)]
#[error("malformed work item: {reason}")]
pub struct MalformedWorkItem {
    /// What was wrong with it, for the dead-letter list.
    pub reason: String,
}

impl WorkItem {
    /// A fresh inbox item at high priority.
    pub fn inbox(agent_id: impl Into<AgentId>, agent_name: impl Into<String>, inbox_count: u32) -> Self {
        Self::new(agent_id.into(), agent_name.into(), TaskType::Inbox, Priority::High, inbox_count)
    }

    /// A fresh discovery item at normal priority.
    pub fn discovery(agent_id: impl Into<AgentId>, agent_name: impl Into<String>) -> Self {
        Self::new(agent_id.into(), agent_name.into(), TaskType::Discovery, Priority::Normal, 0)
    }

    fn new(agent_id: AgentId, agent_name: String, task_type: TaskType, priority: Priority, inbox_count: u32) -> Self {
        Self {
            id: WorkItemId::generate(),
            agent_id,
            agent_name,
            task_type,
            priority,
            inbox_count,
            attempt: 0,
            created_at: now_epoch(),
            last_error: None,
        }
    }

    /// Parses a queue entry; any problem is a typed error carrying the reason.
    pub fn from_json(raw: &str) -> Result<Self, MalformedWorkItem> {
        let item: WorkItem =
            serde_json::from_str(raw).map_err(|e| MalformedWorkItem { reason: e.to_string() })?;
        if item.agent_id.as_str().is_empty() {
            return Err(MalformedWorkItem { reason: "agent_id is empty".into() });
        }
        Ok(item)
    }

    /// The JSON stored in the queue.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_original_shape_and_ignores_unknown_fields() {
        let raw = r#"{"agent_id":"claude-coder-1","agent_name":"Claude Coder 1","task_type":"inbox",
            "priority":"high","inbox_count":5,"created_at":1738400000.123,"surprise":true}"#;
        let item = WorkItem::from_json(raw).expect("valid");
        assert_eq!(item.agent_id.as_str(), "claude-coder-1");
        assert_eq!(item.task_type, TaskType::Inbox);
        assert_eq!(item.priority, Priority::High);
        assert_eq!(item.inbox_count, 5);
        assert_eq!(item.attempt, 0);
        assert!(!item.id.as_str().is_empty());
    }

    #[test]
    fn malformed_items_are_typed_errors() {
        assert!(WorkItem::from_json("not json").is_err());
        let err = WorkItem::from_json(r#"{"agent_id":"a","task_type":"dance"}"#).expect_err("an error");
        assert!(err.reason.contains("dance"), "{}", err.reason);
        assert!(WorkItem::from_json(r#"{"agent_id":"","task_type":"inbox"}"#).is_err());
    }

    #[test]
    fn round_trips() {
        let item = WorkItem::discovery("a", "A");
        let back = WorkItem::from_json(&item.to_json()).expect("valid");
        assert_eq!(item, back);
    }

    #[test]
    fn modes_filter_task_types() {
        assert!(RunnerMode::Notification.allows(TaskType::Inbox));
        assert!(!RunnerMode::Notification.allows(TaskType::Discovery));
        assert!(!RunnerMode::Exploration.allows(TaskType::Inbox));
        assert!(RunnerMode::Hybrid.allows(TaskType::Discovery));
        assert_eq!("HYBRID".parse::<RunnerMode>(), Ok(RunnerMode::Hybrid));
        assert!("turbo".parse::<RunnerMode>().is_err());
    }
}
