//! A CLI executor's Hub MCP attachment, end to end with real parts: the claude-code executor
//! writes its MCP config for the real `botburrow-hub-mcp` binary; the fake `claude` (in POST mode)
//! starts that server from the config exactly as Claude Code would (command + env), speaks MCP over
//! stdio and calls `hub_post`; the reply lands in a real devhub. The agent's hub grants reach the
//! server, so an agent with only `hub:read` cannot post.

use botburrow_devhub::{DevHubConfig, Seed, SeedAgent, SeedPost};
use botburrow_runner::executors::{ExecRequest, ExecutorOptions, HubMcpSpec, executor_with};
use botburrow_shared::agent::AgentConfig;
use botburrow_shared::hub::HubClient;
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SERVICE_KEY: &str = "botburrow_service_executor_test_key";
const HUB_MCP: &str = env!("CARGO_BIN_EXE_botburrow-hub-mcp");

fn seed_agent(name: &str, kind: &str) -> SeedAgent {
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
        agents: vec![seed_agent("ron", "human"), seed_agent("cli-bot", "agent")],
        communities: vec!["m/general".into()],
        posts: vec![SeedPost {
            author: "ron".into(),
            title: Some("Question for the CLI bot".into()),
            content: "@cli-bot how do I reverse a Vec?".into(),
            community: Some("m/general".into()),
        }],
    };
    let running = botburrow_devhub::start(
        DevHubConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_key: Some("admin_executor_test_key".into()),
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
    let found = client.search("reverse", None, 5).await.expect("search");
    let post_id = found.first().expect("seeded post").id.clone();
    Hub {
        url,
        stop,
        client,
        post_id,
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-cli")
}

fn request(hub: &Hub, grants: &str, workspace: &Path) -> ExecRequest {
    let yaml = format!(
        "type: claude-code\nbrain: {{provider: anthropic, model: claude-fake-1}}\ncapabilities: {{grants: [{grants}]}}"
    );
    let agent = AgentConfig::parse(
        "agents/cli-bot/config.yaml",
        &yaml,
        "cli-bot",
        String::new(),
    )
    .expect("agent");
    let mut credentials = BTreeMap::new();
    credentials.insert(
        "ANTHROPIC_API_KEY".to_string(),
        Secret::new("sk-ant-fake-0001"),
    );
    ExecRequest {
        agent,
        system_prompt: "You are cli-bot.".into(),
        prompt: format!("POST {}", hub.post_id),
        workspace: workspace.to_path_buf(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        cancel: CancellationToken::new(),
        hub: HubMcpSpec {
            binary: PathBuf::from(HUB_MCP),
            hub_url: hub.url.clone(),
            hub_api_key: Some(Secret::new(SERVICE_KEY)),
            agent_id: AgentId::new("cli-bot"),
        },
        credentials,
    }
}

fn options() -> ExecutorOptions {
    ExecutorOptions {
        search_path: Some(format!("{}:/usr/local/bin:/usr/bin:/bin", fixtures().display()).into()),
        ..ExecutorOptions::default()
    }
}

#[tokio::test]
async fn a_cli_agent_posts_through_the_real_hub_mcp_server() {
    let hub = devhub().await;
    let ws = tempfile::tempdir().expect("ws");
    let exec = executor_with("claude-code", options()).expect("kind");
    let out = exec
        .run(request(&hub, "hub:write", ws.path()))
        .await
        .unwrap_or_else(|e| {
            let stderr =
                std::fs::read_to_string(ws.path().join("hub-stderr.txt")).unwrap_or_default();
            panic!("run failed: {e}; hub server stderr: {stderr}")
        });
    assert!(
        out.posted_via_mcp,
        "the hub_post call succeeded, so the runner must not post again"
    );

    let thread = hub.client.get_post(&hub.post_id).await.expect("thread");
    let comment = thread
        .comments
        .iter()
        .find(|c| c.content == "Reply from fake claude via MCP.")
        .expect("the reply is in the Hub");
    assert_eq!(comment.author.name, "cli-bot");
}

#[tokio::test]
async fn an_agent_without_hub_write_cannot_post_through_the_server() {
    let hub = devhub().await;
    let ws = tempfile::tempdir().expect("ws");
    let exec = executor_with("claude-code", options()).expect("kind");
    let out = exec
        .run(request(&hub, "hub:read", ws.path()))
        .await
        .expect("the CLI itself succeeds");
    assert!(
        !out.posted_via_mcp,
        "hub_post was refused, so the runner posts the final text"
    );
    let thread = hub.client.get_post(&hub.post_id).await.expect("thread");
    assert!(
        thread.comments.is_empty(),
        "nothing was posted: {:?}",
        thread
            .comments
            .iter()
            .map(|c| &c.content)
            .collect::<Vec<_>>()
    );
}
