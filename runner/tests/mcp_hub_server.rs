//! `botburrow-hub-mcp` driven by a real rmcp client over stdio, posting into a real devhub.

mod mcp_support;

use botburrow_devhub::{DevHubConfig, Seed, SeedAgent, SeedPost};
use botburrow_runner::mcp::manager::CommandSpec;
use botburrow_runner::mcp::{McpActivation, McpManager};
use botburrow_shared::agent::McpServerEntry;
use botburrow_shared::grants::Grants;
use botburrow_shared::hub::HubClient;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::Secret;
use mcp_support::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SERVICE_KEY: &str = "botburrow_service_test_key";
const HUB_MCP: &str = env!("CARGO_BIN_EXE_botburrow-hub-mcp");

fn agent(name: &str, kind: &str) -> SeedAgent {
    SeedAgent {
        name: name.into(),
        kind: kind.into(),
        api_key: None,
        daily_limit: None,
        monthly_limit: None,
        display_name: None,
        description: None,
    }
}

struct Hub {
    url: String,
    stop: CancellationToken,
    client: HubClient,
    post_id: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn devhub() -> Hub {
    let stop = CancellationToken::new();
    let seed = Seed {
        agents: vec![agent("ron", "human"), agent("helper-bot", "agent")],
        communities: vec!["m/general".into(), "m/rust".into()],
        posts: vec![SeedPost {
            author: "ron".into(),
            title: Some("Borrow checker question".into()),
            content: "@helper-bot why does the borrow checker reject my closure?".into(),
            community: Some("m/rust".into()),
        }],
    };
    let running = botburrow_devhub::start(
        DevHubConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_key: Some("admin_test_key".into()),
            service_key: Some(SERVICE_KEY.into()),
            seed: Some(seed),
            dev: true,
        },
        stop.clone(),
    )
    .await
    .expect("devhub starts");
    let url = running.url();
    let client = HubClient::new(&url, Some(Secret::new(SERVICE_KEY))).expect("client");
    let found = client
        .search("borrow checker", None, 5)
        .await
        .expect("search");
    let post_id = found.first().expect("seeded post").id.clone();
    Hub {
        url,
        stop,
        client,
        post_id,
    }
}

async fn connect(hub: &Hub, grants: Option<&str>) -> RunningService<RoleClient, ()> {
    let url = hub.url.clone();
    let grants = grants.map(str::to_string);
    let cmd = tokio::process::Command::new(HUB_MCP).configure(|c| {
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HUB_URL", url)
            .env("HUB_API_KEY", SERVICE_KEY)
            .env("HUB_AGENT_ID", "helper-bot")
            .env("LOG_LEVEL", "warn");
        if let Some(g) = grants {
            c.env("HUB_GRANTS", g);
        }
    });
    ().serve(TokioChildProcess::new(cmd).expect("spawn hub mcp"))
        .await
        .expect("initialize")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> (bool, String) {
    let mut params = CallToolRequestParams::new(tool);
    params.arguments = args.as_object().cloned();
    let res = client.call_tool(params).await.expect("call");
    let text = res
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    (res.is_error.unwrap_or(false), text)
}

#[tokio::test]
async fn the_hub_mcp_server_reads_and_posts_as_its_agent() {
    let hub = devhub().await;
    let client = connect(&hub, None).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("botburrow-hub-mcp")
    );
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "hub_get_notifications",
            "hub_get_thread",
            "hub_post",
            "hub_search"
        ]
    );

    let (err, text) = call(
        &client,
        "hub_search",
        json!({"query": "borrow", "community": "m/rust"}),
    )
    .await;
    assert!(!err, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["id"], hub.post_id.as_str());
    assert_eq!(v["results"][0]["author"], "ron");

    let (err, text) = call(&client, "hub_get_notifications", json!({})).await;
    assert!(!err, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["notifications"][0]["type"], "mention");
    assert_eq!(v["notifications"][0]["from"], "ron");
    assert_eq!(v["notifications"][0]["post_id"], hub.post_id.as_str());

    let (err, text) = call(
        &client,
        "hub_post",
        json!({"content": "Move the value into the closure.", "reply_to": hub.post_id}),
    )
    .await;
    assert!(!err, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["message"], "Comment posted");
    let comment_id = v["comment_id"].as_str().expect("comment id").to_string();

    // The comment is really in the Hub, written by the agent.
    let thread = hub.client.get_post(&hub.post_id).await.expect("thread");
    let comment = thread
        .comments
        .iter()
        .find(|c| c.id == comment_id)
        .expect("comment stored");
    assert_eq!(comment.author.name, "helper-bot");
    assert_eq!(comment.content, "Move the value into the closure.");

    let (err, text) = call(&client, "hub_get_thread", json!({"post_id": hub.post_id})).await;
    assert!(!err, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["root"]["title"], "Borrow checker question");
    assert_eq!(v["comments"][0]["id"], comment_id.as_str());

    let (err, text) = call(
        &client,
        "hub_post",
        json!({"content": "Notes on lifetimes", "title": "Lifetimes", "community": "m/rust"}),
    )
    .await;
    assert!(!err, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["message"], "Post created");
    let new_id = v["post_id"].as_str().expect("post id").to_string();
    let new_post = hub.client.get_post(&new_id).await.expect("new post");
    assert_eq!(new_post.post.author.name, "helper-bot");
    assert_eq!(new_post.post.community.as_deref(), Some("m/rust"));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn hub_errors_are_error_results() {
    let hub = devhub().await;
    let client = connect(&hub, None).await;
    let (err, text) = call(
        &client,
        "hub_get_thread",
        json!({"post_id": "no-such-post"}),
    )
    .await;
    assert!(err, "{text}");
    assert!(
        text.starts_with("Hub error while reading the thread: not found"),
        "{text}"
    );
    let (err, text) = call(
        &client,
        "hub_post",
        json!({"content": "hello?", "reply_to": "no-such-post"}),
    )
    .await;
    assert!(err, "{text}");
    let (err, text) = call(&client, "hub_post", json!({"content": "   "})).await;
    assert!(err && text.contains("must not be empty"), "{text}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn hub_grants_limit_the_servers_tools_and_the_managers_view() {
    let hub = devhub().await;
    // Directly: a read-only server neither lists nor runs hub_post.
    let client = connect(&hub, Some("hub:read")).await;
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(!names.contains(&"hub_post".to_string()), "{names:?}");
    assert!(names.contains(&"hub_search".to_string()), "{names:?}");
    let mut params = CallToolRequestParams::new("hub_post");
    params.arguments = json!({"content": "sneaky", "reply_to": hub.post_id})
        .as_object()
        .cloned();
    let refused = client.call_tool(params).await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|r| r.is_error == Some(true)),
        "{refused:?}"
    );
    client.cancel().await.expect("close");
    assert!(
        hub.client
            .get_post(&hub.post_id)
            .await
            .expect("thread")
            .comments
            .is_empty(),
        "nothing was posted"
    );

    // Through the manager, as the built-in `hub` server of an agent with hub:read.
    let (mut opts, _registry) = options();
    opts.builtin_commands.insert(
        "hub".into(),
        CommandSpec {
            program: HUB_MCP.into(),
            args: vec![],
        },
    );
    opts.credentials.hub_url = Some(hub.url.clone());
    opts.credentials.hub_api_key = Some(Secret::new(SERVICE_KEY));
    let ws = tempfile::tempdir().expect("workspace");
    let id = AgentId::new("helper-bot");
    let g = Grants::parse("agents/helper-bot/config.yaml", &["hub:read"]).expect("valid");
    let servers = vec![McpServerEntry::Builtin("hub".into())];
    let mgr = McpManager::start(
        &opts,
        McpActivation {
            agent_id: &id,
            workspace: ws.path(),
            grants: &g,
            servers: &servers,
        },
    )
    .await
    .expect("hub server starts");
    let names: Vec<String> = mgr.tools().iter().map(|t| t.spec().name).collect();
    assert!(
        names.contains(&"mcp_hub_hub_search".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("hub_post")), "{names:?}");
    let out = mgr
        .call("mcp_hub_hub_search", json!({"query": "borrow"}))
        .await;
    assert!(!out.is_error && out.text.contains(&hub.post_id), "{out:?}");
    mgr.shutdown().await;
}
