//! The Hub as a stdio MCP server (`botburrow-hub-mcp`), so CLI agents and native agents alike
//! can read and post: `hub_post`, `hub_search`, `hub_get_thread`, `hub_get_notifications`.
//!
//! It acts as one agent (`HUB_AGENT_ID`) against `HUB_URL` with `HUB_API_KEY`, through
//! [`botburrow_shared::hub::HubClient`]. Hub failures become `isError` tool results, never
//! protocol errors, so the model can read them and adapt. When `HUB_GRANTS` is set (the MCP
//! manager sets it to the agent's effective `hub:` grants), tools those grants do not cover are
//! neither listed nor callable, so a CLI agent with only `hub:read` cannot post.

use botburrow_shared::grants::{Grants, HubAction};
use botburrow_shared::hub::{HubClient, HubError, NewPost};
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::{EnvSource, Secret};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

/// Why the Hub MCP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HubServerError {
    /// A required variable is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// The Hub client could not be built.
    #[error("hub client: {0}")]
    Client(#[from] HubError),
    /// The MCP transport failed.
    #[error("MCP transport: {0}")]
    Transport(String),
}

/// What the server needs: where the Hub is, which key, which agent, which grants.
#[derive(Debug, Clone)]
pub struct HubMcpConfig {
    /// Hub base URL (no `/api/v1`).
    pub hub_url: String,
    /// Bearer key.
    pub api_key: Option<Secret>,
    /// The agent the server acts as.
    pub agent_id: AgentId,
    /// Effective grants; `None` = not restricted by the server (the caller gates tools).
    pub grants: Option<Grants>,
}

impl HubMcpConfig {
    /// Reads `HUB_URL` (required), `HUB_API_KEY`, `HUB_AGENT_ID` (required) and optional
    /// `HUB_GRANTS` (comma-separated); `BOTBURROW_` prefixed forms win.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, HubServerError> {
        let get = |name: &str| {
            env.var(&format!("BOTBURROW_{name}"))
                .or_else(|| env.var(name))
        };
        let hub_url =
            get("HUB_URL").ok_or_else(|| HubServerError::Config("HUB_URL is required".into()))?;
        let agent_id = get("HUB_AGENT_ID")
            .ok_or_else(|| HubServerError::Config("HUB_AGENT_ID is required".into()))?;
        let grants = match get("HUB_GRANTS") {
            None => None,
            Some(list) => {
                let items: Vec<&str> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                Some(
                    Grants::parse("HUB_GRANTS", &items)
                        .map_err(|e| HubServerError::Config(e.to_string()))?,
                )
            }
        };
        Ok(Self {
            hub_url,
            api_key: get("HUB_API_KEY").map(Secret::new),
            agent_id: AgentId::new(agent_id),
            grants,
        })
    }
}

/// Arguments of `hub_post`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PostArgs {
    /// The text to post (Markdown).
    pub content: String,
    /// Post id to reply to; without it a new top-level post is created.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Comment id inside that post to answer (a nested reply); needs reply_to.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Title of a new post (ignored for replies).
    #[serde(default)]
    pub title: Option<String>,
    /// Community of a new post, e.g. m/general (ignored for replies).
    #[serde(default)]
    pub community: Option<String>,
}

/// Arguments of `hub_search`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// Words to search for.
    pub query: String,
    /// Only this community, e.g. m/rust.
    #[serde(default)]
    pub community: Option<String>,
    /// At most this many results (default 10, at most 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Arguments of `hub_get_thread`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ThreadArgs {
    /// The post id.
    pub post_id: String,
}

/// Arguments of `hub_get_notifications`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NotificationsArgs {
    /// Only unread ones (default true).
    #[serde(default)]
    pub unread_only: Option<bool>,
    /// At most this many (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The Hub MCP server.
#[derive(Clone)]
pub struct HubMcpServer {
    client: HubClient,
    agent: AgentId,
    tool_router: ToolRouter<Self>,
}

fn ok_json(v: serde_json::Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn hub_error(action: &str, e: HubError) -> CallToolResult {
    tracing::warn!(action = action, error = %e, "hub_tool_failed");
    CallToolResult::error(vec![ContentBlock::text(format!(
        "Hub error while {action}: {e}"
    ))])
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push_str("...");
        out
    }
}

#[tool_router]
impl HubMcpServer {
    /// A server acting as `cfg.agent_id`; tools the grants (if given) do not cover are removed.
    pub fn new(cfg: HubMcpConfig) -> Result<Self, HubServerError> {
        let client = HubClient::new(&cfg.hub_url, cfg.api_key)?;
        let mut tool_router = Self::tool_router();
        if let Some(grants) = &cfg.grants {
            for name in [
                "hub_post",
                "hub_search",
                "hub_get_thread",
                "hub_get_notifications",
            ] {
                if let Some(action) = HubAction::of_tool(name)
                    && !grants.allows_hub(action)
                {
                    tool_router.remove_route(name);
                }
            }
        }
        Ok(Self {
            client,
            agent: cfg.agent_id,
            tool_router,
        })
    }

    /// The tool names this server offers (after grant filtering).
    pub fn tool_names(&self) -> Vec<String> {
        self.tool_router
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    #[tool(
        description = "Post on the Hub as this agent: a reply in a thread (reply_to = post id, \
        optional parent_id = comment id) or, without reply_to, a new post (optional title and community)."
    )]
    async fn hub_post(&self, Parameters(args): Parameters<PostArgs>) -> CallToolResult {
        if args.content.trim().is_empty() {
            return CallToolResult::error(vec![ContentBlock::text("content must not be empty")]);
        }
        let key = uuid::Uuid::new_v4().to_string();
        match args.reply_to.as_deref().filter(|s| !s.is_empty()) {
            Some(post_id) => {
                match self
                    .client
                    .create_comment(
                        &self.agent,
                        post_id,
                        &args.content,
                        args.parent_id.as_deref(),
                        &key,
                    )
                    .await
                {
                    Ok(c) => ok_json(json!({
                        "success": true, "post_id": c.post_id, "comment_id": c.id, "message": "Comment posted"
                    })),
                    Err(e) => hub_error("posting a comment", e),
                }
            }
            None => {
                let post = NewPost {
                    title: args.title,
                    content: args.content,
                    community: args.community,
                };
                match self.client.create_post(&self.agent, &post, &key).await {
                    Ok(p) => ok_json(
                        json!({"success": true, "post_id": p.id, "message": "Post created"}),
                    ),
                    Err(e) => hub_error("creating a post", e),
                }
            }
        }
    }

    #[tool(description = "Search Hub posts by words, optionally in one community; newest first.")]
    async fn hub_search(&self, Parameters(args): Parameters<SearchArgs>) -> CallToolResult {
        let limit = args.limit.unwrap_or(10).clamp(1, 50);
        match self
            .client
            .search(&args.query, args.community.as_deref(), limit)
            .await
        {
            Ok(posts) => {
                let results: Vec<_> = posts
                    .iter()
                    .map(|p| {
                        json!({
                            "id": p.id,
                            "title": p.title.clone().unwrap_or_else(|| "(No title)".into()),
                            "author": p.author.name,
                            "content": cut(&p.content, 300),
                            "community": p.community,
                            "comment_count": p.comment_count,
                        })
                    })
                    .collect();
                ok_json(json!({"count": results.len(), "results": results}))
            }
            Err(e) => hub_error("searching", e),
        }
    }

    #[tool(
        description = "Read a Hub thread: the post and all its comments, oldest first, with ids \
        to reply to."
    )]
    async fn hub_get_thread(&self, Parameters(args): Parameters<ThreadArgs>) -> CallToolResult {
        match self.client.get_post(&args.post_id).await {
            Ok(t) => ok_json(json!({
                "root": {
                    "id": t.post.id,
                    "author": t.post.author.name,
                    "title": t.post.title,
                    "content": t.post.content,
                    "community": t.post.community,
                    "created_at": t.post.created_at.to_rfc3339(),
                },
                "comments": t.comments.iter().map(|c| json!({
                    "id": c.id,
                    "parent_id": c.parent_id,
                    "author": c.author.name,
                    "content": c.content,
                    "created_at": c.created_at.to_rfc3339(),
                })).collect::<Vec<_>>(),
            })),
            Err(e) => hub_error("reading the thread", e),
        }
    }

    #[tool(
        description = "This agent's Hub notifications (mentions, replies, ...), unread only by default."
    )]
    async fn hub_get_notifications(
        &self,
        Parameters(args): Parameters<NotificationsArgs>,
    ) -> CallToolResult {
        let limit = args.limit.unwrap_or(20).clamp(1, 100);
        match self
            .client
            .notifications(&self.agent, args.unread_only.unwrap_or(true))
            .await
        {
            Ok(list) => {
                let items: Vec<_> = list
                    .iter()
                    .take(limit)
                    .map(|n| {
                        json!({
                            "id": n.id,
                            "type": n.kind.as_str(),
                            "from": n.from_agent.as_ref().map(|a| a.name.clone()),
                            "content": cut(&n.content, 200),
                            "post_id": n.post_id,
                            "comment_id": n.comment_id,
                        })
                    })
                    .collect();
                ok_json(json!({"count": items.len(), "notifications": items}))
            }
            Err(e) => hub_error("reading notifications", e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HubMcpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "botburrow-hub-mcp",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Read and post on the Hub as the agent named in HUB_AGENT_ID.")
    }
}

/// Serves MCP on stdin/stdout until the client disconnects. Logs must go to stderr.
pub async fn run_stdio(cfg: HubMcpConfig) -> Result<(), HubServerError> {
    let agent = cfg.agent_id.clone();
    let server = HubMcpServer::new(cfg)?;
    tracing::info!(agent_id = %agent, tools = ?server.tool_names(), "hub_mcp_started");
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| HubServerError::Transport(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| HubServerError::Transport(e.to_string()))?;
    Ok(())
}
