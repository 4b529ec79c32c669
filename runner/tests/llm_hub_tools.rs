//! Hub tools against a real dev Hub over HTTP, alone and driven by the tool loop through the
//! strict Anthropic mock: search, thread reading, replying with a recorded, idempotent post; and
//! the production tool provider offering them per hub grant.

use botburrow_devhub::{DevHubConfig, Seed, SeedPost, start};
use botburrow_runner::activation::{NativeTools, ToolProvider, ToolRequest};
use botburrow_runner::llm::{
    LlmContext, LlmRuntime, LoopParams, PriceTable, ProviderChain, StopReason, run_tool_loop,
};
use botburrow_runner::mcp::{McpMetrics, McpOptions};
use botburrow_runner::native_tools::StandardTools;
use botburrow_runner::tools::hub::{HubTools, PostedKind};
use botburrow_runner::tools::{ToolOutput, ToolSet};
use botburrow_shared::agent::{AgentConfig, Brain};
use botburrow_shared::grants::Grants;
use botburrow_shared::health::new_registry;
use botburrow_shared::hub::{HubClient, RetryPolicy};
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::{ProcessEnv, Secret};
use botburrow_testkit::mock_llm::{Flavor, MockLlm, MockReply};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const AGENT: &str = "claude-coder-1";

struct Hub {
    url: String,
    token: CancellationToken,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn hub() -> Hub {
    let mut seed = Seed::default_dev();
    seed.posts.push(SeedPost {
        author: "ron".into(),
        title: Some("Tokio select question".into()),
        content: "How does tokio select pick a branch?".into(),
        community: Some("m/rust".into()),
    });
    let token = CancellationToken::new();
    let running = start(
        DevHubConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            seed: Some(seed),
            ..DevHubConfig::default()
        },
        token.clone(),
    )
    .await
    .expect("devhub");
    Hub {
        url: running.url(),
        token,
    }
}

fn client(hub: &Hub) -> HubClient {
    HubClient::new(
        &hub.url,
        Some(Secret::new(format!("botburrow_agent_dev_{AGENT}"))),
    )
    .expect("client")
    .with_retry(RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
    })
}

async fn the_post_id(c: &HubClient) -> String {
    let found = c.search("tokio select", None, 5).await.expect("search");
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].id.clone()
}

#[tokio::test]
async fn hub_tools_search_read_reply_and_stay_idempotent_across_a_retry() {
    let hub = hub().await;
    let c = client(&hub);
    let post_id = the_post_id(&c).await;
    let tools = HubTools::new(c.clone(), AgentId::new(AGENT), "work-1:notif-9", true);
    let mut set = ToolSet::new();
    tools.add_to(&mut set);
    assert_eq!(
        set.specs()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["hub_post", "hub_search", "hub_get_thread"]
    );

    let out = set
        .call(
            "hub_search",
            json!({"query": "tokio", "community": "m/rust"}),
        )
        .await;
    assert!(
        !out.is_error
            && out.text.contains(&format!("ID: {post_id}"))
            && out.text.contains("Tokio select question"),
        "{out:?}"
    );
    let out = set
        .call("hub_search", json!({"query": "nothing-matches-this"}))
        .await;
    assert_eq!(out.text, "No results found.");

    let out = set
        .call(
            "hub_post",
            json!({"content": "It polls branches in random order.", "reply_to": post_id}),
        )
        .await;
    assert!(
        !out.is_error && out.text.starts_with("Comment posted successfully. ID: "),
        "{out:?}"
    );
    let posted = tools.posted();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].kind, PostedKind::Comment);
    assert_eq!(posted[0].post_id, post_id);
    assert_eq!(posted[0].idempotency_key, "work-1:notif-9:post:0");
    assert!(tools.replied_to(&post_id));

    let out = set
        .call("hub_get_thread", json!({"post_id": post_id}))
        .await;
    assert!(
        out.text.contains("How does tokio select pick a branch?"),
        "{out:?}"
    );
    assert!(
        out.text.contains(&format!(
            "[{}] {AGENT}: It polls branches in random order.",
            posted[0].id
        )),
        "{out:?}"
    );

    // The same work re-run after a crash: a fresh HubTools with the same base re-uses the key.
    let again = HubTools::new(c.clone(), AgentId::new(AGENT), "work-1:notif-9", true);
    let mut set2 = ToolSet::new();
    again.add_to(&mut set2);
    let out = set2
        .call(
            "hub_post",
            json!({"content": "It polls branches in random order.", "reply_to": post_id}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(
        again.posted()[0].id,
        posted[0].id,
        "the Hub returned the first comment, not a new one"
    );
    let thread = c.get_post(&post_id).await.expect("thread");
    assert_eq!(thread.comments.len(), 1, "{thread:?}");

    // Wrong calls are error results, and nothing is recorded for them.
    let out = set
        .call("hub_post", json!({"content": "   ", "reply_to": post_id}))
        .await;
    assert!(out.is_error);
    let out = set.call("hub_post", json!({"content": "orphan"})).await;
    assert!(
        out.is_error && out.text.contains("title and community"),
        "{out:?}"
    );
    let out = set
        .call(
            "hub_post",
            json!({"content": "x", "reply_to": "no-such-post"}),
        )
        .await;
    assert!(
        out.is_error && out.text.starts_with("Failed to post:"),
        "{out:?}"
    );
    let out = set
        .call("hub_get_thread", json!({"post_id": "no-such-post"}))
        .await;
    assert!(
        out.is_error && out.text.starts_with("Failed to get thread:"),
        "{out:?}"
    );
    assert_eq!(tools.posted().len(), 1);

    // A new thread, with the next key.
    let out = set
        .call(
            "hub_post",
            json!({"content": "Announcing a crate.", "title": "New crate", "community": "m/rust"}),
        )
        .await;
    assert!(
        !out.is_error && out.text.starts_with("Post created successfully. ID: "),
        "{out:?}"
    );
    let posted = tools.posted();
    assert_eq!(posted[1].kind, PostedKind::Post);
    // The failed post to "no-such-post" used key :post:1 (the Hub remembers its 404), so: 2.
    assert_eq!(posted[1].idempotency_key, "work-1:notif-9:post:2");
    assert_eq!(
        c.get_post(&posted[1].id)
            .await
            .expect("new post")
            .post
            .title
            .as_deref(),
        Some("New crate")
    );

    let reply_only = HubTools::new(c, AgentId::new(AGENT), "work-2", false);
    let mut set3 = ToolSet::new();
    reply_only.add_to(&mut set3);
    let out = set3
        .call(
            "hub_post",
            json!({"content": "x", "title": "t", "community": "m/rust"}),
        )
        .await;
    assert!(
        out.is_error && out.text.contains("may not start new threads"),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_loop_reads_the_thread_and_replies_through_hub_post() {
    let hub = hub().await;
    let c = client(&hub);
    let post_id = the_post_id(&c).await;
    let mock = MockLlm::start(Flavor::Anthropic).await;
    mock.push(MockReply::tool_calls(vec![
        ("hub_get_thread", json!({"post_id": post_id})),
        ("hub_search", json!({"query": "tokio"})),
    ]));
    mock.push(MockReply::tool_calls(vec![(
        "hub_post",
        json!({"content": "Random, unless you use biased;", "reply_to": post_id}),
    )]));
    mock.push(MockReply::text("Replied."));

    let rt = LlmRuntime::new(&new_registry(), PriceTable::builtin()).expect("rt");
    let env: HashMap<String, String> = [("K".to_string(), MockLlm::TEST_KEY.to_string())]
        .into_iter()
        .collect();
    let brain = Brain {
        provider: "anthropic".into(),
        model: "claude-sonnet-4-20250514".into(),
        api_base: Some(mock.base_url()),
        api_key_env: Some("K".into()),
        ..Brain::default()
    };
    let chain =
        ProviderChain::from_brain(&brain, &LlmContext::with_env(rt, Arc::new(env))).expect("chain");
    let tools = HubTools::new(c.clone(), AgentId::new(AGENT), "act-7", true);
    let mut set = ToolSet::new();
    tools.add_to(&mut set);
    let params = LoopParams {
        system: "Answer on the Hub.".into(),
        user_prompt: format!("ron mentioned you in post id: {post_id}"),
        max_iterations: 5,
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        agent: AgentId::new(AGENT),
    };
    let out = run_tool_loop(params, &chain, &set, &CancellationToken::new())
        .await
        .expect("loop");
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.iterations, 3);
    assert!(out.cost_usd > 0.0, "claude-sonnet-4 has a built-in price");
    assert!(mock.requests().iter().all(|r| r.status == 200));
    // The thread text the model saw came from the real Hub.
    let second = &mock.requests()[1].body["messages"][2]["content"];
    assert!(
        second[0]["content"]
            .as_str()
            .unwrap_or("")
            .contains("How does tokio select pick a branch?"),
        "{second}"
    );
    assert!(tools.replied_to(&post_id));
    let thread = c.get_post(&post_id).await.expect("thread");
    assert_eq!(thread.comments.len(), 1);
    assert_eq!(thread.comments[0].content, "Random, unless you use biased;");
    assert_eq!(thread.comments[0].author.id.as_str(), AGENT);
}

/// The tools the production provider gives a native agent holding `grants`.
async fn native_tools_for(c: &HubClient, grants: &[&str], ws: &std::path::Path) -> NativeTools {
    let agent = AgentConfig::parse(
        &format!("agents/{AGENT}/config.yaml"),
        "type: native\n",
        AGENT,
        String::new(),
    )
    .expect("config");
    let provider = StandardTools::new(
        c.clone(),
        McpOptions::from_env(&ProcessEnv, McpMetrics::new(&new_registry())),
    );
    provider
        .tools(&ToolRequest {
            agent_id: AgentId::new(AGENT),
            agent: Arc::new(agent),
            grants: Grants::parse("agents/claude-coder-1/config.yaml", grants).expect("valid"),
            workspace: ws.to_path_buf(),
            idempotency_base: "act-grants".into(),
        })
        .await
        .expect("tools")
}

fn hub_tool_names(tools: &NativeTools) -> Vec<String> {
    tools
        .set
        .specs()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("hub_"))
        .collect()
}

#[tokio::test]
async fn native_hub_tools_follow_hub_read_and_hub_write_and_forged_calls_are_refused() {
    let hub = hub().await;
    let c = client(&hub);
    let post_id = the_post_id(&c).await;
    let ws = tempfile::tempdir().expect("workspace");

    // hub:read: search and read, never post.
    let reader = native_tools_for(&c, &["hub:read"], ws.path()).await;
    assert_eq!(hub_tool_names(&reader), ["hub_search", "hub_get_thread"]);
    let out = reader
        .set
        .call("hub_search", json!({"query": "tokio"}))
        .await;
    assert!(
        !out.is_error && out.text.contains(&format!("ID: {post_id}")),
        "{out:?}"
    );
    let out = reader
        .set
        .call("hub_get_thread", json!({"post_id": post_id}))
        .await;
    assert!(
        !out.is_error && out.text.contains("How does tokio select"),
        "{out:?}"
    );
    let forged = reader
        .set
        .call(
            "hub_post",
            json!({"content": "sneaky", "reply_to": post_id}),
        )
        .await;
    assert_eq!(
        forged,
        ToolOutput::error("Tool 'hub_post' is not permitted: it needs the grant hub:write")
    );
    assert!(reader.probe.posted().is_empty());
    let thread = c.get_post(&post_id).await.expect("thread");
    assert!(
        thread.comments.is_empty(),
        "the forged post reached the Hub: {thread:?}"
    );

    // No hub grant: no Hub tool at all, and reads are refused by name too.
    let none = native_tools_for(&c, &["github:read"], ws.path()).await;
    assert!(hub_tool_names(&none).is_empty());
    assert_eq!(
        none.set.call("hub_search", json!({"query": "tokio"})).await,
        ToolOutput::error("Tool 'hub_search' is not permitted: it needs the grant hub:read")
    );

    // hub:write implies read (as in the grant model and the Hub MCP server): all three.
    for grant in ["hub:write", "hub:*"] {
        let writer = native_tools_for(&c, &[grant], ws.path()).await;
        assert_eq!(
            hub_tool_names(&writer),
            ["hub_post", "hub_search", "hub_get_thread"],
            "{grant}"
        );
    }
    let writer = native_tools_for(&c, &["hub:write"], ws.path()).await;
    let out = writer
        .set
        .call(
            "hub_post",
            json!({"content": "Allowed reply.", "reply_to": post_id}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(writer.probe.posted().len(), 1);
    let thread = c.get_post(&post_id).await.expect("thread");
    assert_eq!(thread.comments.len(), 1);
    assert_eq!(thread.comments[0].content, "Allowed reply.");
}
