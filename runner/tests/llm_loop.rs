//! The tool loop over real HTTP against the strict mock servers: multi-turn tool conversations
//! on both APIs, api_base conventions, error results, max_iterations, deadline, cancellation,
//! token and cost accounting (also in the per-turn `iteration` log line), and the offline demo
//! provider.

use async_trait::async_trait;
use botburrow_runner::llm::{
    LlmContext, LlmError, LlmRuntime, LoopParams, ModelPrice, PriceTable, ProviderChain,
    RetryPolicy, RuntimeConfig, StopReason, TokioClock, run_tool_loop,
};
use botburrow_runner::tools::{Tool, ToolOutput, ToolSet, ToolSpec};
use botburrow_shared::agent::Brain;
use botburrow_shared::health::{SharedRegistry, new_registry, render_metrics};
use botburrow_shared::ids::AgentId;
use botburrow_testkit::mock_llm::{Flavor, MockLlm, MockReply};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Add;
#[async_trait]
impl Tool for Add {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "add".into(),
            description: "adds two integers".into(),
            input_schema: json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}),
        }
    }
    async fn call(&self, args: Value) -> ToolOutput {
        match (args["a"].as_i64(), args["b"].as_i64()) {
            (Some(a), Some(b)) => ToolOutput::ok((a + b).to_string()),
            _ => ToolOutput::error("a and b must be integers"),
        }
    }
}

struct Upper;
#[async_trait]
impl Tool for Upper {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "upper".into(),
            description: "upper-cases text".into(),
            input_schema: json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        }
    }
    async fn call(&self, args: Value) -> ToolOutput {
        ToolOutput::ok(args["text"].as_str().unwrap_or_default().to_uppercase())
    }
}

/// Records what it was asked to post.
#[derive(Default)]
struct FakeHubPost(Mutex<Vec<Value>>);
struct HubPostTool(Arc<FakeHubPost>);
#[async_trait]
impl Tool for HubPostTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "hub_post".into(),
            description: "posts to the Hub".into(),
            input_schema: json!({"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]}),
        }
    }
    async fn call(&self, args: Value) -> ToolOutput {
        self.0.0.lock().expect("lock").push(args);
        ToolOutput::ok("Comment posted successfully. ID: c-1")
    }
}

fn tools() -> ToolSet {
    let mut t = ToolSet::new();
    t.add(Arc::new(Add));
    t.add(Arc::new(Upper));
    t
}

fn runtime(registry: &SharedRegistry) -> Arc<LlmRuntime> {
    let mut prices = PriceTable::builtin();
    prices.set(
        "mock-model",
        ModelPrice {
            input_per_mtok: 2.0,
            output_per_mtok: 10.0,
        },
    );
    let config = RuntimeConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(5),
        },
        ..RuntimeConfig::default()
    };
    LlmRuntime::with_config(registry, prices, config, Arc::new(TokioClock::new())).expect("runtime")
}

fn ctx(rt: Arc<LlmRuntime>) -> LlmContext {
    let env: HashMap<String, String> = [("MOCK_KEY".to_string(), MockLlm::TEST_KEY.to_string())]
        .into_iter()
        .collect();
    LlmContext::with_env(rt, Arc::new(env))
}

fn brain(provider: &str, base: &str) -> Brain {
    Brain {
        provider: provider.into(),
        model: "mock-model".into(),
        api_base: Some(base.into()),
        api_key_env: Some("MOCK_KEY".into()),
        temperature: 0.3,
        max_tokens: 321,
        ..Brain::default()
    }
}

fn params(agent: &str, max_iterations: u32, deadline_in: Duration) -> LoopParams {
    LoopParams {
        system: "You are a careful test agent.".into(),
        user_prompt: "Please compute things.".into(),
        max_iterations,
        deadline: tokio::time::Instant::now() + deadline_in,
        agent: AgentId::new(agent),
    }
}

fn script_three_turns(mock: &MockLlm) {
    mock.push(
        MockReply::text_and_tool_calls(
            "Let me compute.",
            vec![
                ("add", json!({"a": 1, "b": 2})),
                ("upper", json!({"text": "abc"})),
            ],
        )
        .with_usage(100, 20),
    );
    mock.push(
        MockReply::tool_calls(vec![("add", json!({"a": 3, "b": "four"}))]).with_usage(150, 10),
    );
    mock.push(MockReply::text("The answers are 3 and ABC.").with_usage(200, 30));
}

#[tokio::test]
async fn anthropic_three_turn_tool_conversation_threads_results_by_id() {
    let mock = MockLlm::start(Flavor::Anthropic).await;
    script_three_turns(&mock);
    let registry = new_registry();
    let rt = runtime(&registry);
    let chain =
        ProviderChain::from_brain(&brain("anthropic", &mock.base_url()), &ctx(rt)).expect("chain");
    let out = run_tool_loop(
        params("agent-a", 10, Duration::from_secs(30)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("loop");

    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.final_text, "The answers are 3 and ABC.");
    assert_eq!(out.iterations, 3);
    assert_eq!(out.tool_calls, 3);
    assert_eq!((out.usage.input_tokens, out.usage.output_tokens), (450, 60));
    let expected_cost = (450.0 * 2.0 + 60.0 * 10.0) / 1e6;
    assert!(
        (out.cost_usd - expected_cost).abs() < 1e-12,
        "{}",
        out.cost_usd
    );

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "{:?}",
        reqs.iter().map(|r| &r.error).collect::<Vec<_>>()
    );
    let first = &reqs[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(
        first.headers.get("x-api-key").map(String::as_str),
        Some(MockLlm::TEST_KEY)
    );
    assert!(first.headers.contains_key("anthropic-version"));
    assert_eq!(first.body["model"], "mock-model");
    assert_eq!(first.body["max_tokens"], 321);
    assert_eq!(first.body["temperature"], 0.3);
    assert_eq!(first.body["system"], "You are a careful test agent.");
    assert_eq!(first.body["tools"].as_array().map(Vec::len), Some(2));

    // Turn 2 carries the assistant's tool_use blocks and one user message with both results.
    let msgs = reqs[1].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(msgs.len(), 3);
    let uses: Vec<&Value> = msgs[1]["content"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .collect();
    assert_eq!(uses.len(), 2);
    let results = msgs[2]["content"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["tool_use_id"], uses[0]["id"]);
    assert_eq!(results[0]["content"], "3");
    assert_eq!(results[1]["tool_use_id"], uses[1]["id"]);
    assert_eq!(results[1]["content"], "ABC");

    // Turn 3: the bad argument came back as an error result, not a crash.
    let msgs = reqs[2].body["messages"].as_array().expect("messages");
    let last = &msgs[msgs.len() - 1]["content"][0];
    assert_eq!(last["type"], "tool_result");
    assert_eq!(last["is_error"], true);
    assert!(last["content"].as_str().unwrap_or("").contains("integers"));

    let text = render_metrics(&registry);
    assert!(text.contains(r#"botburrow_llm_tokens_total{agent="agent-a",model="mock-model",direction="input"} 450"#), "{text}");
    assert!(text.contains(r#"botburrow_llm_tokens_total{agent="agent-a",model="mock-model",direction="output"} 60"#), "{text}");
    assert!(
        text.contains(r#"botburrow_llm_cost_usd_total{agent="agent-a",model="mock-model"} 0.0015"#),
        "{text}"
    );
    assert!(
        text.contains("botburrow_llm_request_duration_seconds_count{provider=\"anthropic@"),
        "{text}"
    );
}

#[tokio::test]
async fn openai_three_turn_tool_conversation_uses_tool_messages_and_v1_base() {
    let mock = MockLlm::start(Flavor::OpenAi).await;
    script_three_turns(&mock);
    let registry = new_registry();
    let rt = runtime(&registry);
    let base = mock.base_url();
    assert!(base.ends_with("/v1"));
    let chain = ProviderChain::from_brain(&brain("vllm", &base), &ctx(rt)).expect("chain");
    let out = run_tool_loop(
        params("agent-o", 10, Duration::from_secs(30)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("loop");
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.iterations, 3);
    assert_eq!(out.final_text, "The answers are 3 and ABC.");
    assert_eq!((out.usage.input_tokens, out.usage.output_tokens), (450, 60));

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "{:?}",
        reqs.iter().map(|r| &r.error).collect::<Vec<_>>()
    );
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(
        reqs[0].headers.get("authorization").map(String::as_str),
        Some(&*format!("Bearer {}", MockLlm::TEST_KEY))
    );
    assert_eq!(reqs[0].body["max_tokens"], 321);
    let msgs = reqs[1].body["messages"].as_array().expect("messages");
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[1]["role"], "user");
    let calls = msgs[2]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 2);
    assert!(calls[0]["function"]["arguments"].is_string());
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], calls[0]["id"]);
    assert_eq!(msgs[3]["content"], "3");
    assert_eq!(msgs[4]["tool_call_id"], calls[1]["id"]);
    assert_eq!(msgs[4]["content"], "ABC");
    let msgs = reqs[2].body["messages"].as_array().expect("messages");
    let last = &msgs[msgs.len() - 1];
    assert_eq!(last["role"], "tool");
    assert!(
        last["content"]
            .as_str()
            .unwrap_or("")
            .starts_with("Error: "),
        "{last}"
    );
}

#[tokio::test]
async fn openai_provider_sends_max_completion_tokens_and_real_api_base_is_required_shape() {
    let mock = MockLlm::start(Flavor::OpenAi).await;
    let rt = runtime(&new_registry());
    // A base without /v1 follows the SDK convention literally and therefore misses the route.
    let wrong = format!("http://{}", mock.addr());
    let chain =
        ProviderChain::from_brain(&brain("openai", &wrong), &ctx(rt.clone())).expect("chain");
    let err = run_tool_loop(
        params("a", 2, Duration::from_secs(10)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect_err("must fail");
    assert!(matches!(err, LlmError::Api { status: 404, .. }), "{err}");
    assert_eq!(mock.requests()[0].path, "/chat/completions");

    let chain =
        ProviderChain::from_brain(&brain("openai", &mock.base_url()), &ctx(rt)).expect("chain");
    let out = run_tool_loop(
        params("a", 2, Duration::from_secs(10)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("echo");
    assert_eq!(out.final_text, "echo: Please compute things.");
    let last = mock.requests().pop().expect("request");
    assert_eq!(last.body["max_completion_tokens"], 321);
    assert!(last.body.get("max_tokens").is_none());
}

#[tokio::test]
async fn max_iterations_stops_a_model_that_never_stops_calling_tools() {
    let mock = MockLlm::start(Flavor::Anthropic).await;
    for i in 0..10 {
        mock.push(MockReply::tool_calls(vec![(
            "add",
            json!({"a": i, "b": 1}),
        )]));
    }
    let chain = ProviderChain::from_brain(
        &brain("anthropic", &mock.base_url()),
        &ctx(runtime(&new_registry())),
    )
    .expect("chain");
    let out = run_tool_loop(
        params("a", 3, Duration::from_secs(30)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("loop");
    assert_eq!(out.stop, StopReason::MaxIterations);
    assert_eq!(out.iterations, 3);
    assert_eq!(mock.request_count(), 3);
    assert!(mock.requests().iter().all(|r| r.status == 200));
    assert!(out.usage.input_tokens > 0 && out.usage.output_tokens > 0);
}

#[tokio::test]
async fn the_deadline_stops_a_slow_model() {
    let mock = MockLlm::start(Flavor::OpenAi).await;
    mock.push(MockReply::tool_calls(vec![(
        "add",
        json!({"a": 1, "b": 1}),
    )]));
    mock.push(MockReply::text("too late").delayed(Duration::from_secs(30)));
    let chain = ProviderChain::from_brain(
        &brain("ollama", &mock.base_url()),
        &ctx(runtime(&new_registry())),
    )
    .expect("chain");
    let started = std::time::Instant::now();
    let out = run_tool_loop(
        params("a", 10, Duration::from_millis(700)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("loop");
    assert_eq!(out.stop, StopReason::Deadline);
    assert_eq!(out.iterations, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cancellation_stops_the_loop() {
    let mock = MockLlm::start(Flavor::Anthropic).await;
    mock.push(MockReply::text("never").delayed(Duration::from_secs(30)));
    let chain = ProviderChain::from_brain(
        &brain("anthropic", &mock.base_url()),
        &ctx(runtime(&new_registry())),
    )
    .expect("chain");
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let task = tokio::spawn(async move {
        run_tool_loop(
            params("a", 10, Duration::from_secs(60)),
            &chain,
            &tools(),
            &c2,
        )
        .await
    });
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(5), || async {
            mock.request_count() == 1
        })
        .await
    );
    cancel.cancel();
    let out = task.await.expect("join").expect("loop");
    assert_eq!(out.stop, StopReason::Cancelled);
    assert_eq!(out.iterations, 0);
}

#[tokio::test]
async fn demo_provider_posts_once_through_hub_post_then_ends_without_network() {
    let rt = runtime(&new_registry());
    let b = Brain {
        provider: "demo".into(),
        model: "demo".into(),
        ..Brain::default()
    };
    let chain = ProviderChain::from_brain(
        &b,
        &LlmContext::with_env(rt, Arc::new(HashMap::<String, String>::new())),
    )
    .expect("demo needs no key");
    let hub = Arc::new(FakeHubPost::default());
    let mut set = tools();
    set.add(Arc::new(HubPostTool(hub.clone())));
    let mut p = params("demo-agent", 5, Duration::from_secs(5));
    p.user_prompt = "@demo-agent what is Rust? (post id: p-77)".into();
    let out = run_tool_loop(p, &chain, &set, &CancellationToken::new())
        .await
        .expect("loop");
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.iterations, 2);
    let posted = hub.0.lock().expect("lock").clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["reply_to"], "p-77");
    let content = posted[0]["content"].as_str().expect("content");
    assert!(
        content.contains("[demo provider]") && content.contains("what is Rust?"),
        "{content}"
    );
    assert_eq!(out.final_text, content);

    // Without hub_post offered it simply answers.
    let out = run_tool_loop(
        params("demo-agent", 5, Duration::from_secs(5)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("loop");
    assert_eq!((out.stop, out.iterations), (StopReason::Final, 1));
    assert!(out.final_text.contains("Please compute things."));
}

/// Log lines written by a test subscriber (JSON, one event a line, as in production).
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLogs {
    fn events(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("lock").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Every event of this test binary, captured by one global JSON subscriber. A scoped
/// subscriber (`with_subscriber`) is not enough: tracing caches each callsite's interest, and a
/// callsite first hit by another test thread (no subscriber there) can race with it and drop
/// events, which made the test flaky. Tests filter the capture by their own `agent_id`.
fn global_logs() -> CapturedLogs {
    static LOGS: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        // The production JSON shape (shared::telemetry): fields flattened into the event object.
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
        logs
    })
    .clone()
}

#[tokio::test]
async fn each_turn_logs_an_iteration_line_with_its_tokens() {
    let logs = global_logs();
    let mock = MockLlm::start(Flavor::OpenAi).await;
    script_three_turns(&mock);
    let chain = ProviderChain::from_brain(
        &brain("openai", &mock.base_url()),
        &ctx(runtime(&new_registry())),
    )
    .expect("chain");
    let out = run_tool_loop(
        params("agent-log", 10, Duration::from_secs(30)),
        &chain,
        &tools(),
        &CancellationToken::new(),
    )
    .await
    .expect("loop");
    assert_eq!(out.iterations, 3);
    let turns: Vec<Value> = logs
        .events()
        .into_iter()
        .filter(|e| e["message"] == "iteration" && e["agent_id"] == "agent-log")
        .collect();
    assert_eq!(turns.len(), 3, "{:?}", logs.events());
    for (i, (input, output)) in [(100, 20), (150, 10), (200, 30)].into_iter().enumerate() {
        let t = &turns[i];
        assert_eq!(t["level"], "INFO", "{t}");
        assert_eq!(t["iteration"], i as u64 + 1, "{t}");
        assert_eq!(t["agent_id"], "agent-log", "{t}");
        assert_eq!(t["model"], "mock-model", "{t}");
        assert_eq!(t["input_tokens"], input, "{t}");
        assert_eq!(t["output_tokens"], output, "{t}");
    }
    assert_eq!(turns[0]["tool_calls"], 2);
    assert_eq!(turns[2]["tool_calls"], 0);
}
