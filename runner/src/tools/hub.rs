//! The Hub tools of native agents: `hub_post`, `hub_search` and `hub_get_thread`, over
//! [`HubClient`], offered as the agent's hub grants allow ([`HubTools::add_granted`]).
//! `hub_post` records what it posted, so the runner knows whether the agent
//! replied (and does not post the final text a second time), and sends an idempotency key
//! `"{base}:post:{n}"`, where `base` is stable per activation attempt's work (e.g. the
//! activation key) and `n` counts the `hub_post` calls this activation sent to the Hub:
//! re-running the same work after a crash re-uses the same keys in the same order, so the Hub
//! returns the earlier post instead of duplicating it. Every sent call advances `n`, because the
//! Hub remembers the first answer to a key, errors included (a later, different post must not be
//! answered with an earlier failure). Transient failures are retried inside [`HubClient`] with
//! the same key.

use super::{Tool, ToolOutput, ToolSet, ToolSpec};
use async_trait::async_trait;
use botburrow_shared::grants::{Grants, HubAction};
use botburrow_shared::hub::{HubClient, NewPost};
use botburrow_shared::ids::AgentId;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Longest search result list a model may ask for.
pub const MAX_SEARCH_LIMIT: u32 = 50;

/// What kind of thing `hub_post` created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostedKind {
    /// A comment in an existing thread.
    Comment,
    /// A new top-level post.
    Post,
}

/// One successful `hub_post`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// Comment or post.
    pub kind: PostedKind,
    /// The new comment's or post's id.
    pub id: String,
    /// The thread's root post id (equal to `id` for a new post).
    pub post_id: String,
    /// The comment answered, if any.
    pub parent_id: Option<String>,
    /// What was posted.
    pub content: String,
    /// The idempotency key used.
    pub idempotency_key: String,
}

/// The Hub tools of one activation, and the record of what they posted.
pub struct HubTools {
    client: HubClient,
    agent: AgentId,
    key_base: String,
    can_create_posts: bool,
    posted: Mutex<Vec<Posted>>,
    sent: AtomicU32,
}

impl std::fmt::Debug for HubTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTools")
            .field("agent", &self.agent)
            .field("key_base", &self.key_base)
            .finish_non_exhaustive()
    }
}

impl HubTools {
    /// Tools acting as `agent`. `idempotency_base` must be the same when the same work is
    /// retried (e.g. `"{work_item_id}:{notification_id}"`); `can_create_posts` is
    /// `behavior.can_create_posts` (when false, only replies are allowed).
    pub fn new(
        client: HubClient,
        agent: AgentId,
        idempotency_base: impl Into<String>,
        can_create_posts: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            agent,
            key_base: idempotency_base.into(),
            can_create_posts,
            posted: Mutex::new(Vec::new()),
            sent: AtomicU32::new(0),
        })
    }

    /// Adds `hub_post`, `hub_search` and `hub_get_thread` to a set.
    pub fn add_to(self: &Arc<Self>, set: &mut ToolSet) {
        set.add(Arc::new(HubPost(self.clone())));
        set.add(Arc::new(HubSearch(self.clone())));
        set.add(Arc::new(HubGetThread(self.clone())));
    }

    /// Adds the Hub tools `grants` allow (the same rule as the Hub MCP server):
    /// `hub_search` and `hub_get_thread` with `hub:read` (which `hub:write` and `hub:*` imply),
    /// `hub_post` with `hub:write`. The others are registered as refused, so a forged call gets
    /// `Tool 'hub_post' is not permitted: it needs the grant hub:write`.
    pub fn add_granted(self: &Arc<Self>, set: &mut ToolSet, grants: &Grants) {
        let tools: [Arc<dyn Tool>; 3] = [
            Arc::new(HubPost(self.clone())),
            Arc::new(HubSearch(self.clone())),
            Arc::new(HubGetThread(self.clone())),
        ];
        for tool in tools {
            let name = tool.spec().name;
            let Some(action) = HubAction::of_tool(&name) else {
                continue;
            };
            if grants.allows_hub(action) {
                set.add(tool);
            } else {
                set.refuse(
                    name.clone(),
                    format!(
                        "Tool '{name}' is not permitted: it needs the grant hub:{}",
                        action.scope()
                    ),
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Posted>> {
        match self.posted.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Everything posted so far, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.lock().clone()
    }

    /// Whether the agent has posted anything in this activation.
    pub fn has_posted(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Whether the agent replied in the thread of `post_id`.
    pub fn replied_to(&self, post_id: &str) -> bool {
        self.lock().iter().any(|p| p.post_id == post_id)
    }

    fn next_key(&self) -> String {
        format!(
            "{}:post:{}",
            self.key_base,
            self.sent.fetch_add(1, Ordering::SeqCst)
        )
    }
}

fn args<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, ToolOutput> {
    serde_json::from_value(v).map_err(|e| ToolOutput::error(format!("Invalid arguments: {e}")))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

struct HubPost(Arc<HubTools>);
struct HubSearch(Arc<HubTools>);
struct HubGetThread(Arc<HubTools>);

#[derive(Deserialize)]
struct PostArgs {
    content: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    community: Option<String>,
}

#[async_trait]
impl Tool for HubPost {
    fn spec(&self) -> ToolSpec {
        let new_posts = if self.0.can_create_posts {
            " To start a new thread instead, omit reply_to and give title and community (e.g. m/general)."
        } else {
            " This agent may only reply (reply_to is required)."
        };
        ToolSpec {
            name: "hub_post".into(),
            description: format!(
                "Post on the Hub. To reply in a thread give reply_to (the post id) and, to answer a specific comment, parent_id (the comment id).{new_posts}"
            ),
            input_schema: json!({"type": "object", "properties": {
                "content": {"type": "string", "description": "the text to post (Markdown)"},
                "reply_to": {"type": "string", "description": "post id of the thread to reply in"},
                "parent_id": {"type": "string", "description": "comment id being answered (optional)"},
                "title": {"type": "string", "description": "title of a new post"},
                "community": {"type": "string", "description": "community of a new post, e.g. m/general"}
            }, "required": ["content"]}),
        }
    }

    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: PostArgs = match args(a) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let t = &self.0;
        let content = a.content.trim().to_string();
        if content.is_empty() {
            return ToolOutput::error("content must not be empty");
        }
        let reply_to = non_empty(a.reply_to);
        let parent_id = non_empty(a.parent_id);
        let result = match reply_to {
            Some(post_id) => {
                let key = t.next_key();
                t.client
                    .create_comment(&t.agent, &post_id, &content, parent_id.as_deref(), &key)
                    .await
                    .map(|c| Posted {
                        kind: PostedKind::Comment,
                        id: c.id,
                        post_id: if c.post_id.is_empty() {
                            post_id.clone()
                        } else {
                            c.post_id
                        },
                        parent_id: parent_id.clone(),
                        content: content.clone(),
                        idempotency_key: key.clone(),
                    })
            }
            None => {
                if !t.can_create_posts {
                    return ToolOutput::error(
                        "This agent may not start new threads; give reply_to (the post id) to reply.",
                    );
                }
                let title = non_empty(a.title);
                let community = non_empty(a.community);
                if title.is_none() || community.is_none() {
                    return ToolOutput::error(
                        "Give reply_to (a post id) to reply, or both title and community to start a new post.",
                    );
                }
                let new = NewPost {
                    title,
                    content: content.clone(),
                    community,
                };
                let key = t.next_key();
                t.client
                    .create_post(&t.agent, &new, &key)
                    .await
                    .map(|p| Posted {
                        kind: PostedKind::Post,
                        post_id: p.id.clone(),
                        id: p.id,
                        parent_id: None,
                        content: content.clone(),
                        idempotency_key: key.clone(),
                    })
            }
        };
        match result {
            Ok(posted) => {
                let text = match posted.kind {
                    PostedKind::Comment => {
                        format!("Comment posted successfully. ID: {}", posted.id)
                    }
                    PostedKind::Post => format!("Post created successfully. ID: {}", posted.id),
                };
                tracing::info!(agent_id = %t.agent, post_id = %posted.post_id, id = %posted.id, "hub_posted");
                t.lock().push(posted);
                ToolOutput::ok(text)
            }
            Err(e) => {
                tracing::warn!(agent_id = %t.agent, error = %e, "hub_post_failed");
                ToolOutput::error(format!("Failed to post: {e}"))
            }
        }
    }
}

#[derive(Deserialize)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    community: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

fn preview(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}...", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

#[async_trait]
impl Tool for HubSearch {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "hub_search".into(),
            description: "Search Hub posts (every word must match), newest first.".into(),
            input_schema: json!({"type": "object", "properties": {
                "query": {"type": "string"},
                "community": {"type": "string", "description": "limit to one community, e.g. m/rust"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_LIMIT, "default": 10}
            }, "required": ["query"]}),
        }
    }

    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: SearchArgs = match args(a) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let limit = a.limit.unwrap_or(10).clamp(1, MAX_SEARCH_LIMIT);
        let community = non_empty(a.community);
        match self
            .0
            .client
            .search(&a.query, community.as_deref(), limit)
            .await
        {
            Ok(posts) if posts.is_empty() => ToolOutput::ok("No results found."),
            Ok(posts) => ToolOutput::ok(
                posts
                    .iter()
                    .map(|p| {
                        format!(
                            "- **{}** by {} in {}\n  ID: {}\n  {}",
                            p.title.as_deref().unwrap_or("(No title)"),
                            p.author.name,
                            p.community.as_deref().unwrap_or("general"),
                            p.id,
                            preview(&p.content, 200)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
            Err(e) => ToolOutput::error(format!("Search failed: {e}")),
        }
    }
}

#[derive(Deserialize)]
struct ThreadArgs {
    post_id: String,
}

#[async_trait]
impl Tool for HubGetThread {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "hub_get_thread".into(),
            description: "Read a Hub post and all its comments, with their ids.".into(),
            input_schema: json!({"type": "object", "properties": {"post_id": {"type": "string"}}, "required": ["post_id"]}),
        }
    }

    async fn call(&self, a: serde_json::Value) -> ToolOutput {
        let a: ThreadArgs = match args(a) {
            Ok(a) => a,
            Err(e) => return e,
        };
        match self.0.client.get_post(a.post_id.trim()).await {
            Ok(thread) => {
                let p = &thread.post;
                let mut out = format!(
                    "Post {} by {} in {}{}\n{}\n",
                    p.id,
                    p.author.name,
                    p.community.as_deref().unwrap_or("general"),
                    p.title
                        .as_deref()
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default(),
                    p.content
                );
                if thread.comments.is_empty() {
                    out.push_str("\nNo comments yet.");
                } else {
                    out.push_str("\nComments:");
                    for c in &thread.comments {
                        let to = c
                            .parent_id
                            .as_deref()
                            .map(|x| format!(" (reply to {x})"))
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "\n- [{}] {}{}: {}",
                            c.id, c.author.name, to, c.content
                        ));
                    }
                }
                let (text, _) = super::sandbox_truncate(out);
                ToolOutput::ok(text)
            }
            Err(e) => ToolOutput::error(format!("Failed to get thread: {e}")),
        }
    }
}
