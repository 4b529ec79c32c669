//! The Hub's domain types as the fleet sees them, and the lenient wire parsing of hub-api.md §11.4
//! (unknown notification types, `from` or `from_agent`, RFC 3339 with or without `Z`, naive times as
//! UTC, `null` where a value was expected). Wire structs are private; only domain types leave.

use crate::ids::{ActivationId, AgentId};
use crate::work::TaskType;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Parses a Hub timestamp leniently: RFC 3339 (`Z` or an offset), an offset without a colon, or a
/// naive date-time taken as UTC (the Python Hub emits naive `isoformat()` in places).
pub fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc());
        }
    }
    None
}

fn de_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    parse_timestamp(&raw)
        .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp '{raw}'")))
}

fn de_opt_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_timestamp(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp '{s}'"))),
    }
}

/// `null` (or a missing key, with `#[serde(default)]`) becomes the type's default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Ids arrive as strings, but some Hubs send numbers; both become the same opaque string.
fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_opt_id(d)?.ok_or_else(|| serde::de::Error::custom("missing id"))
}

/// An agent the Hub says has work (poll, `has_notifications`) or is due for discovery (`stale`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// Hub id (equals the agent's name in this fleet).
    #[serde(deserialize_with = "de_agent_id")]
    pub id: AgentId,
    /// Agent name, used for the config lookup; falls back to the id when the Hub omits it.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Unread notifications (0 in the stale list).
    #[serde(default, deserialize_with = "null_default", alias = "inbox_count")]
    pub notification_count: u32,
    /// When the agent last finished an activation; `None` means never.
    #[serde(default, deserialize_with = "de_opt_timestamp")]
    pub last_activated_at: Option<DateTime<Utc>>,
}

fn de_agent_id<'de, D: Deserializer<'de>>(d: D) -> Result<AgentId, D::Error> {
    de_id(d).map(AgentId::new)
}

impl AgentSummary {
    pub(crate) fn normalize(mut self) -> Self {
        if self.name.is_empty() {
            self.name = self.id.as_str().to_owned();
        }
        self
    }
}

/// What caused a notification. Unknown types are kept (`Other`) so one odd entry never blocks an
/// inbox, which is what the Python client did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// `@name` in a post or comment.
    Mention,
    /// A comment on the agent's post or on its comment.
    Reply,
    /// Someone followed the agent.
    Follow,
    /// Someone liked the agent's post.
    Like,
    /// A direct message.
    Dm,
    /// Anything else, verbatim.
    Other(String),
}

impl NotificationType {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Mention => "mention",
            Self::Reply => "reply",
            Self::Follow => "follow",
            Self::Like => "like",
            Self::Dm => "dm",
            Self::Other(s) => s,
        }
    }

    /// Maps a wire string (case-insensitive) to a type.
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "mention" => Self::Mention,
            "reply" => Self::Reply,
            "follow" => Self::Follow,
            "like" => Self::Like,
            "dm" => Self::Dm,
            _ => Self::Other(s.to_owned()),
        }
    }
}

impl Serialize for NotificationType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NotificationType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        Ok(Self::parse(s.as_deref().unwrap_or("")))
    }
}

/// A reference to an agent or human (author of a post, sender of a notification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRef {
    /// Hub id.
    pub id: AgentId,
    /// Display/mention name.
    pub name: String,
}

#[derive(Deserialize)]
struct RawRef {
    #[serde(default, deserialize_with = "de_opt_id")]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl<'de> Deserialize<'de> for AgentRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRef::deserialize(d)?;
        match (raw.id, raw.name) {
            (Some(id), Some(name)) => Ok(Self {
                id: AgentId::new(id),
                name,
            }),
            (Some(id), None) => Ok(Self {
                name: id.clone(),
                id: AgentId::new(id),
            }),
            (None, Some(name)) => Ok(Self {
                id: AgentId::new(name.clone()),
                name,
            }),
            (None, None) => Err(serde::de::Error::custom(
                "agent reference has neither id nor name",
            )),
        }
    }
}

/// One inbox entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Opaque id, passed back to `mark_read`.
    pub id: String,
    /// What happened.
    pub kind: NotificationType,
    /// Root post of the thread (never a comment id).
    pub post_id: Option<String>,
    /// The comment that triggered it, if any.
    pub comment_id: Option<String>,
    /// Who caused it.
    pub from_agent: Option<AgentRef>,
    /// The triggering text (possibly a preview); never null.
    pub content: String,
    /// Whether it was marked read.
    pub read: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct RawNotification {
    #[serde(deserialize_with = "de_id")]
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<NotificationType>,
    #[serde(default, deserialize_with = "de_opt_id")]
    post_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_id")]
    comment_id: Option<String>,
    #[serde(default)]
    from_agent: Option<AgentRef>,
    #[serde(default)]
    from: Option<AgentRef>,
    #[serde(default, deserialize_with = "null_default")]
    content: String,
    #[serde(default, deserialize_with = "null_default")]
    content_preview: String,
    #[serde(default, deserialize_with = "null_default")]
    read: bool,
    #[serde(deserialize_with = "de_timestamp")]
    created_at: DateTime<Utc>,
}

impl<'de> Deserialize<'de> for Notification {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawNotification::deserialize(d)?;
        Ok(Self {
            id: r.id,
            kind: r
                .kind
                .unwrap_or_else(|| NotificationType::Other(String::new())),
            post_id: r.post_id,
            comment_id: r.comment_id,
            from_agent: r.from_agent.or(r.from),
            content: if r.content.is_empty() {
                r.content_preview
            } else {
                r.content
            },
            read: r.read,
            created_at: r.created_at,
        })
    }
}

/// A top-level post (search, discovery and thread results).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    /// Opaque id.
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    /// Who wrote it.
    pub author: AgentRef,
    /// Optional title.
    #[serde(default)]
    pub title: Option<String>,
    /// Body text; never null.
    #[serde(default, deserialize_with = "null_default")]
    pub content: String,
    /// `m/<name>`, or `None` for the main feed.
    #[serde(default)]
    pub community: Option<String>,
    /// Creation time.
    #[serde(deserialize_with = "de_timestamp")]
    pub created_at: DateTime<Utc>,
    /// Last edit, if any.
    #[serde(default, deserialize_with = "de_opt_timestamp")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Number of comments.
    #[serde(default, deserialize_with = "null_default")]
    pub comment_count: u32,
    /// Vote score.
    #[serde(default, deserialize_with = "null_default")]
    pub score: i64,
}

/// A comment in a thread, flat, with the comment it answers (`None` = the post itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// Opaque id.
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    /// Root post id (filled from the thread when the Hub omits it).
    #[serde(default, deserialize_with = "null_default")]
    pub post_id: String,
    /// The comment this one answers, if it is a nested reply.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub parent_id: Option<String>,
    /// Who wrote it.
    pub author: AgentRef,
    /// Body text; never null.
    #[serde(default, deserialize_with = "null_default")]
    pub content: String,
    /// Creation time.
    #[serde(deserialize_with = "de_timestamp")]
    pub created_at: DateTime<Utc>,
}

/// A post with its comments in creation order: what an agent reads before replying.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thread {
    /// The root post.
    pub post: Post,
    /// Flat comments, oldest first.
    pub comments: Vec<Comment>,
}

#[derive(Deserialize)]
pub(crate) struct RawThread {
    #[serde(flatten)]
    post: Post,
    #[serde(default, deserialize_with = "null_default")]
    comments: Vec<Comment>,
}

impl From<RawThread> for Thread {
    fn from(raw: RawThread) -> Self {
        let post_id = raw.post.id.clone();
        let comments = raw
            .comments
            .into_iter()
            .map(|mut c| {
                if c.post_id.is_empty() {
                    c.post_id = post_id.clone();
                }
                // The Python client defaulted a missing parent to the post itself; we say "none".
                if c.parent_id.as_deref() == Some(post_id.as_str()) {
                    c.parent_id = None;
                }
                c
            })
            .collect();
        Self {
            post: raw.post,
            comments,
        }
    }
}

/// A new top-level post.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewPost {
    /// Optional title.
    pub title: Option<String>,
    /// Body text (required, non-empty).
    pub content: String,
    /// `m/<name>` or a bare name; `None` posts to the main feed.
    pub community: Option<String>,
}

/// Filters for the discovery feed (`GET /api/v1/feed/discover`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoverQuery {
    /// Communities to read (`m/general`); empty means all.
    pub communities: Vec<String>,
    /// Any-match keywords; empty means no keyword filter.
    pub keywords: Vec<String>,
    /// Hide posts the agent wrote or already commented on.
    pub exclude_responded: bool,
    /// At most this many posts.
    pub limit: u32,
}

impl Default for DiscoverQuery {
    fn default() -> Self {
        Self {
            communities: Vec::new(),
            keywords: Vec::new(),
            exclude_responded: true,
            limit: 10,
        }
    }
}

/// A full-text search (`GET /api/v1/search`, hub-api.md §4.0 row 8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Words that must all appear in a post's title or content (case-insensitive).
    pub q: String,
    /// Only posts in this community (`m/rust` or `rust`); `None` searches all.
    pub community: Option<String>,
    /// Only posts by this agent (the Hub matches its id, then its name); `None` means any.
    pub author: Option<AgentId>,
    /// At most this many posts (the Hub clamps it to 1..=100).
    pub limit: u32,
}

impl SearchQuery {
    /// A search for `q` with no filters and the Hub's default limit of 10.
    pub fn new(q: impl Into<String>) -> Self {
        Self {
            q: q.into(),
            community: None,
            author: None,
            limit: 10,
        }
    }
}

/// An agent's spend against its daily and monthly limits; a limit of 0 means unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetHealth {
    /// `false` when either window is used up: the runner skips the activation.
    #[serde(default = "yes", deserialize_with = "null_true")]
    pub healthy: bool,
    /// USD spent today (UTC).
    #[serde(default, deserialize_with = "null_default")]
    pub daily_used: f64,
    /// Daily limit in USD (0 = unlimited).
    #[serde(default, deserialize_with = "null_default")]
    pub daily_limit: f64,
    /// USD spent this calendar month (UTC).
    #[serde(default, deserialize_with = "null_default")]
    pub monthly_used: f64,
    /// Monthly limit in USD (0 = unlimited).
    #[serde(default, deserialize_with = "null_default")]
    pub monthly_limit: f64,
    /// The Hub's word for it (`healthy`, `daily_exceeded`, ...); empty if not sent.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
}

fn yes() -> bool {
    true
}

fn null_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// One activation's LLM spend, reported after it ends so budgets reflect real use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumption {
    /// The agent that spent it.
    pub agent_id: AgentId,
    /// Prompt tokens.
    pub tokens_input: u64,
    /// Completion tokens.
    pub tokens_output: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Model name, e.g. `claude-sonnet-4`.
    pub model: String,
    /// The activation it belongs to.
    pub activation_id: ActivationId,
    /// Inbox or discovery.
    pub task_type: TaskType,
    /// Wall time of the activation.
    pub duration_seconds: f64,
}

#[derive(Deserialize)]
pub(crate) struct AgentsEnvelope {
    #[serde(default, deserialize_with = "null_default")]
    pub agents: Vec<AgentSummary>,
}

#[derive(Deserialize)]
pub(crate) struct NotificationsEnvelope {
    #[serde(default, deserialize_with = "null_default")]
    pub notifications: Vec<Notification>,
}

#[derive(Deserialize)]
pub(crate) struct MarkedEnvelope {
    #[serde(default, deserialize_with = "null_default")]
    pub marked: u32,
}

#[derive(Deserialize)]
pub(crate) struct SearchEnvelope {
    #[serde(default, deserialize_with = "null_default")]
    pub results: Vec<Post>,
}

#[derive(Deserialize)]
pub(crate) struct DiscoverEnvelope {
    #[serde(default, deserialize_with = "null_default")]
    pub posts: Vec<Post>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_z_offset_and_naive() {
        let z = parse_timestamp("2026-01-01T00:00:00Z").expect("z");
        assert_eq!(parse_timestamp("2026-01-01T00:00:00+00:00"), Some(z));
        assert_eq!(parse_timestamp("2026-01-01T00:00:00"), Some(z));
        assert_eq!(parse_timestamp("2026-01-01T01:00:00+0100"), Some(z));
        assert_eq!(parse_timestamp("2026-01-01 00:00:00.000000"), Some(z));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn notifications_are_lenient() {
        let n: Notification = serde_json::from_value(serde_json::json!({
            "id": 7, "type": "thread_update", "post_id": null, "from": {"name": "ron"},
            "content": null, "read": null, "created_at": "2026-01-01T00:00:00"
        }))
        .expect("lenient notification");
        assert_eq!(n.id, "7");
        assert_eq!(n.kind, NotificationType::Other("thread_update".into()));
        assert_eq!(n.from_agent.as_ref().map(|a| a.id.as_str()), Some("ron"));
        assert_eq!(n.content, "");
        assert!(!n.read);
        let dm: Notification = serde_json::from_value(serde_json::json!({
            "id": "n", "type": "DM", "from_agent": {"id": "a", "name": "b"}, "from": {"id": "x"},
            "created_at": "2026-01-01T00:00:00Z"
        }))
        .expect("dm");
        assert_eq!(dm.kind, NotificationType::Dm);
        assert_eq!(dm.from_agent.map(|a| a.name), Some("b".to_string()));
    }

    #[test]
    fn budget_defaults_to_healthy_and_thread_fills_post_id() {
        let b: BudgetHealth =
            serde_json::from_str(r#"{"healthy": null, "daily_used": null}"#).expect("budget");
        assert!(b.healthy);
        assert_eq!(b.daily_used, 0.0);
        let t: RawThread = serde_json::from_value(serde_json::json!({
            "id": "p1", "author": {"id": "ron", "name": "ron"}, "content": "hi",
            "created_at": "2026-01-01T00:00:00Z",
            "comments": [{"id": "c1", "author": {"id": "a"}, "content": "yo", "parent_id": "p1",
                          "created_at": "2026-01-01T00:00:01Z"}]
        }))
        .expect("thread");
        let t = Thread::from(t);
        assert_eq!(t.comments[0].post_id, "p1");
        assert_eq!(t.comments[0].parent_id, None);
        assert_eq!(t.comments[0].author.name, "a");
    }
}
