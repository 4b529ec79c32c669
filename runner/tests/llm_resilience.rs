//! Resilience of the provider chain over real HTTP: retries honouring Retry-After, failover on
//! 503 and 429, retries and failover on request timeouts (a slow answer, a peer that never
//! answers) and on refused connections, no failover on 401, the circuit breaker under a fake
//! clock (with its metric), and the shared RPM limit under paused tokio time.

use botburrow_runner::llm::{
    LlmContext, LlmError, LlmRuntime, LoopParams, ManualClock, PriceTable, ProviderChain,
    RetryPolicy, RuntimeConfig, StopReason, TokioClock, run_tool_loop,
};
use botburrow_runner::tools::ToolSet;
use botburrow_shared::agent::{Brain, FallbackBrain};
use botburrow_shared::health::{SharedRegistry, new_registry, render_metrics};
use botburrow_shared::ids::AgentId;
use botburrow_testkit::mock_llm::{Flavor, MockLlm, MockReply};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn config(max_attempts: u32) -> RuntimeConfig {
    RuntimeConfig {
        retry: RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(5),
        },
        breaker_threshold: 3,
        // These tests look at the refusal itself; waiting out an open breaker has its own test.
        max_breaker_wait: Duration::ZERO,
        ..RuntimeConfig::default()
    }
}

fn ctx(rt: Arc<LlmRuntime>) -> LlmContext {
    let env: HashMap<String, String> = [
        ("GOOD_KEY".to_string(), MockLlm::TEST_KEY.to_string()),
        ("BAD_KEY".to_string(), "sk-wrong".to_string()),
    ]
    .into_iter()
    .collect();
    LlmContext::with_env(rt, Arc::new(env))
}

fn anthropic_primary_openai_fallback(
    primary: &MockLlm,
    fallback: &MockLlm,
    primary_key: &str,
) -> Brain {
    Brain {
        provider: "anthropic".into(),
        model: "primary-model".into(),
        api_base: Some(primary.base_url()),
        api_key_env: Some(primary_key.into()),
        fallbacks: vec![FallbackBrain {
            provider: "openai".into(),
            model: "fallback-model".into(),
            api_base: Some(fallback.base_url()),
            api_key_env: Some("GOOD_KEY".into()),
        }],
        ..Brain::default()
    }
}

fn params() -> LoopParams {
    LoopParams {
        system: "sys".into(),
        user_prompt: "hello".into(),
        max_iterations: 3,
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        agent: AgentId::new("agent-r"),
    }
}

async fn run(chain: &ProviderChain) -> Result<botburrow_runner::llm::LoopOutcome, LlmError> {
    run_tool_loop(params(), chain, &ToolSet::new(), &CancellationToken::new()).await
}

fn rt(registry: &SharedRegistry, max_attempts: u32) -> Arc<LlmRuntime> {
    LlmRuntime::with_config(
        registry,
        PriceTable::builtin(),
        config(max_attempts),
        Arc::new(TokioClock::new()),
    )
    .expect("rt")
}

#[tokio::test]
async fn a_500_is_retried_on_the_same_provider() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    primary.push(MockReply::error(500));
    primary.push(MockReply::text("second try worked"));
    let chain = ProviderChain::from_brain(
        &anthropic_primary_openai_fallback(&primary, &fallback, "GOOD_KEY"),
        &ctx(rt(&new_registry(), 3)),
    )
    .expect("chain");
    let out = run(&chain).await.expect("ok");
    assert_eq!(out.final_text, "second try worked");
    assert_eq!(out.model, "primary-model");
    assert_eq!(primary.request_count(), 2);
    assert_eq!(fallback.request_count(), 0);
}

#[tokio::test]
async fn failover_to_the_second_provider_on_503() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    primary.push(MockReply::error(503));
    primary.push(MockReply::error(503));
    let registry = new_registry();
    let chain = ProviderChain::from_brain(
        &anthropic_primary_openai_fallback(&primary, &fallback, "GOOD_KEY"),
        &ctx(rt(&registry, 2)),
    )
    .expect("chain");
    let out = run(&chain).await.expect("fallback answers");
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.final_text, "echo: hello");
    assert_eq!(out.model, "fallback-model");
    assert_eq!(
        primary.request_count(),
        2,
        "retried max_attempts times first"
    );
    assert_eq!(fallback.request_count(), 1);
    let text = render_metrics(&registry);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("botburrow_llm_errors_total{") && l.contains("kind=\"server_error\"")
        })
        .unwrap_or_else(|| panic!("no server_error line in {text}"));
    assert!(line.ends_with(" 2"), "{line}");
}

#[tokio::test]
async fn failover_on_429_after_honouring_retry_after() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    primary.push(MockReply::rate_limited(1));
    primary.push(MockReply::rate_limited(1));
    let chain = ProviderChain::from_brain(
        &anthropic_primary_openai_fallback(&primary, &fallback, "GOOD_KEY"),
        &ctx(rt(&new_registry(), 2)),
    )
    .expect("chain");
    let out = run(&chain).await.expect("fallback answers");
    assert_eq!(out.model, "fallback-model");
    let reqs = primary.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.status == 429));
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_millis(990),
        "Retry-After: 1 was not honoured: {gap:?}"
    );
    assert_eq!(fallback.request_count(), 1);
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_fails_over_at_once() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    primary.push(MockReply::rate_limited(600));
    let chain = ProviderChain::from_brain(
        &anthropic_primary_openai_fallback(&primary, &fallback, "GOOD_KEY"),
        &ctx(rt(&new_registry(), 3)),
    )
    .expect("chain");
    let started = std::time::Instant::now();
    let out = run(&chain).await.expect("fallback answers");
    assert_eq!(out.model, "fallback-model");
    assert_eq!(primary.request_count(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn no_retry_and_no_failover_on_401() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    let chain = ProviderChain::from_brain(
        &anthropic_primary_openai_fallback(&primary, &fallback, "BAD_KEY"),
        &ctx(rt(&new_registry(), 3)),
    )
    .expect("chain");
    let err = run(&chain).await.expect_err("must fail");
    match &err {
        LlmError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 401);
            assert_eq!(
                message,
                "authentication failed (authentication_error); check the API key variable"
            );
        }
        other => panic!("expected Api 401, got {other:?}"),
    }
    assert!(
        !err.to_string().contains("sk-wrong"),
        "the key must not leak into errors: {err}"
    );
    assert_eq!(primary.request_count(), 1);
    assert_eq!(fallback.request_count(), 0);
}

#[tokio::test]
async fn breaker_opens_after_consecutive_failures_and_recovers_after_cooldown() {
    let primary = MockLlm::start(Flavor::OpenAi).await;
    for _ in 0..3 {
        primary.push(MockReply::error(503));
    }
    let registry = new_registry();
    let clock = Arc::new(ManualClock::new());
    let rt = LlmRuntime::with_config(&registry, PriceTable::builtin(), config(1), clock.clone())
        .expect("rt");
    let b = Brain {
        provider: "openai".into(),
        model: "m".into(),
        api_base: Some(primary.base_url()),
        api_key_env: Some("GOOD_KEY".into()),
        ..Brain::default()
    };
    let chain = ProviderChain::from_brain(&b, &ctx(rt)).expect("chain");
    let label = chain.labels()[0].clone();
    let gauge = |v: i64| format!("botburrow_llm_breaker_state{{provider=\"{label}\"}} {v}");
    assert!(render_metrics(&registry).contains(&gauge(0)));

    for _ in 0..3 {
        assert!(matches!(
            run(&chain).await,
            Err(LlmError::Api { status: 503, .. })
        ));
    }
    assert!(
        render_metrics(&registry).contains(&gauge(1)),
        "{}",
        render_metrics(&registry)
    );
    // Open: the call is refused without touching the provider.
    assert!(matches!(
        run(&chain).await,
        Err(LlmError::CircuitOpen { .. })
    ));
    assert_eq!(primary.request_count(), 3);

    clock.advance(Duration::from_secs(29));
    assert!(matches!(
        run(&chain).await,
        Err(LlmError::CircuitOpen { .. })
    ));
    assert_eq!(primary.request_count(), 3);

    clock.advance(Duration::from_secs(1));
    let out = run(&chain).await.expect("the half-open probe succeeds");
    assert_eq!(out.final_text, "echo: hello");
    assert_eq!(primary.request_count(), 4);
    assert!(render_metrics(&registry).contains(&gauge(0)));
    let text = render_metrics(&registry);
    assert!(
        text.contains(&format!(
            "botburrow_llm_errors_total{{provider=\"{label}\",kind=\"circuit_open\"}} 2"
        )),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn rpm_limit_holds_a_burst_of_100_requests_shared_by_all_activations() {
    let registry = new_registry();
    let rt = LlmRuntime::with_config(
        &registry,
        PriceTable::builtin(),
        config(1),
        Arc::new(TokioClock::new()),
    )
    .expect("rt");
    let ctx = LlmContext::with_env(rt, Arc::new(HashMap::<String, String>::new()));
    let b = Brain {
        provider: "demo".into(),
        model: "demo".into(),
        rpm: Some(60),
        ..Brain::default()
    };
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        // One chain per "activation": they share the runtime's limiter.
        let chain = ProviderChain::from_brain(&b, &ctx).expect("chain");
        tasks.push(tokio::spawn(async move {
            let p = LoopParams {
                deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
                ..params()
            };
            run_tool_loop(p, &chain, &ToolSet::new(), &CancellationToken::new())
                .await
                .expect("demo");
            start.elapsed()
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("join"));
    }
    done.sort();
    let within_first_minute = done
        .iter()
        .filter(|d| **d < Duration::from_secs(60))
        .count();
    assert!(
        within_first_minute <= 61,
        "{within_first_minute} requests started in the first minute at rpm 60"
    );
    assert!(
        within_first_minute >= 59,
        "the limiter is too strict: {within_first_minute}"
    );
    assert!(done[99] >= Duration::from_secs(98), "{:?}", done[99]);
    assert!(done[99] <= Duration::from_secs(101), "{:?}", done[99]);
    // Any window of 10 s admits at most 10 + 1.
    for (i, d) in done.iter().enumerate() {
        let in_window = done[i..]
            .iter()
            .filter(|e| **e < *d + Duration::from_secs(10))
            .count();
        assert!(in_window <= 11, "window from {d:?} holds {in_window}");
    }
}

#[tokio::test]
async fn an_abandoned_half_open_probe_does_not_wedge_the_breaker() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    for _ in 0..3 {
        primary.push(MockReply::error(500));
    }
    let clock = Arc::new(ManualClock::new());
    let rt = LlmRuntime::with_config(
        &new_registry(),
        PriceTable::builtin(),
        config(1),
        clock.clone(),
    )
    .expect("rt");
    let b = Brain {
        provider: "anthropic".into(),
        model: "m".into(),
        api_base: Some(primary.base_url()),
        api_key_env: Some("GOOD_KEY".into()),
        ..Brain::default()
    };
    let chain = ProviderChain::from_brain(&b, &ctx(rt)).expect("chain");
    for _ in 0..3 {
        assert!(run(&chain).await.is_err());
    }
    assert!(matches!(
        run(&chain).await,
        Err(LlmError::CircuitOpen { .. })
    ));
    clock.advance(Duration::from_secs(30));
    // The probe is slower than the activation's deadline: the loop gives up mid-request.
    primary.push(MockReply::text("slow").delayed(Duration::from_secs(30)));
    let p = LoopParams {
        deadline: tokio::time::Instant::now() + Duration::from_millis(300),
        ..params()
    };
    let out = run_tool_loop(p, &chain, &ToolSet::new(), &CancellationToken::new())
        .await
        .expect("deadline outcome");
    assert_eq!(out.stop, StopReason::Deadline);
    // The next activation may probe again instead of finding the breaker stuck half-open.
    let out = run(&chain)
        .await
        .expect("second probe allowed and succeeds");
    assert_eq!(out.final_text, "echo: hello");
}

#[tokio::test]
async fn usage_of_earlier_turns_survives_a_failed_loop() {
    let primary = MockLlm::start(Flavor::OpenAi).await;
    primary.push(MockReply::tool_calls(vec![("nope", serde_json::json!({}))]).with_usage(40, 2));
    primary.push(MockReply::error(500));
    let b = Brain {
        provider: "openai".into(),
        model: "gpt-4o".into(),
        api_base: Some(primary.base_url()),
        api_key_env: Some("GOOD_KEY".into()),
        ..Brain::default()
    };
    let chain = ProviderChain::from_brain(&b, &ctx(rt(&new_registry(), 1))).expect("chain");
    let err = run(&chain).await.expect_err("the second turn fails");
    assert!(matches!(err, LlmError::Api { status: 500, .. }), "{err}");
    let (usage, cost) = chain.spent();
    assert_eq!((usage.input_tokens, usage.output_tokens), (40, 2));
    assert!(
        (cost - (40.0 * 2.5 + 2.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    // The unknown tool went back to the model as an error result with the matching id.
    let second = &primary.requests()[1].body["messages"];
    assert_eq!(second[3]["role"], "tool");
    assert_eq!(second[3]["tool_call_id"], second[2]["tool_calls"][0]["id"]);
    assert_eq!(second[3]["content"], "Error: Unknown tool: nope");
}

/// A runtime whose requests time out after `request_timeout`.
fn rt_with_timeout(
    registry: &SharedRegistry,
    max_attempts: u32,
    request_timeout: Duration,
) -> Arc<LlmRuntime> {
    LlmRuntime::with_config(
        registry,
        PriceTable::builtin(),
        RuntimeConfig {
            request_timeout,
            ..config(max_attempts)
        },
        Arc::new(TokioClock::new()),
    )
    .expect("rt")
}

/// The value of the `botburrow_llm_errors_total` sample with `kind` (summed over providers).
fn errors_of_kind(registry: &SharedRegistry, kind: &str) -> u64 {
    render_metrics(registry)
        .lines()
        .filter(|l| {
            l.starts_with("botburrow_llm_errors_total{") && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A brain whose primary is an Anthropic endpoint at `primary_base` (anything: a black hole, a
/// closed port) and whose fallback is the OpenAI mock.
fn primary_at(primary_base: String, fallback: &MockLlm) -> Brain {
    Brain {
        provider: "anthropic".into(),
        model: "primary-model".into(),
        api_base: Some(primary_base),
        api_key_env: Some("GOOD_KEY".into()),
        fallbacks: vec![FallbackBrain {
            provider: "openai".into(),
            model: "fallback-model".into(),
            api_base: Some(fallback.base_url()),
            api_key_env: Some("GOOD_KEY".into()),
        }],
        ..Brain::default()
    }
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_is_abandoned_and_retried_on_the_same_provider() {
    let primary = MockLlm::start(Flavor::Anthropic).await;
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    primary.push(MockReply::text("too late").delayed(Duration::from_secs(30)));
    primary.push(MockReply::text("second try in time"));
    let registry = new_registry();
    let chain = ProviderChain::from_brain(
        &anthropic_primary_openai_fallback(&primary, &fallback, "GOOD_KEY"),
        &ctx(rt_with_timeout(&registry, 3, Duration::from_millis(300))),
    )
    .expect("chain");
    let started = std::time::Instant::now();
    let out = run(&chain).await.expect("the retry answers");
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.final_text, "second try in time");
    assert_eq!(out.model, "primary-model");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the slow request was not cut off: {:?}",
        started.elapsed()
    );
    let reqs = primary.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].status, 0, "the first answer was never delivered");
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_millis(250),
        "retried before the timeout: {gap:?}"
    );
    assert_eq!(fallback.request_count(), 0);
    assert_eq!(errors_of_kind(&registry, "timeout"), 1);
}

#[tokio::test]
async fn a_provider_that_accepts_and_never_answers_times_out_then_fails_over() {
    // Accepts connections, reads nothing, answers nothing; keeps them open until the test ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(sock);
        }
    });
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    fallback.push(MockReply::text("fallback answered").with_usage(12, 3));
    let registry = new_registry();
    let chain = ProviderChain::from_brain(
        &primary_at(format!("http://{addr}"), &fallback),
        &ctx(rt_with_timeout(&registry, 2, Duration::from_millis(250))),
    )
    .expect("chain");
    let started = std::time::Instant::now();
    let out = run(&chain).await.expect("the fallback answers");
    let elapsed = started.elapsed();
    hole.abort();
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.final_text, "fallback answered");
    assert_eq!(out.model, "fallback-model");
    assert_eq!((out.usage.input_tokens, out.usage.output_tokens), (12, 3));
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one connection per attempt (max_attempts 2) before failing over"
    );
    assert!(
        elapsed >= Duration::from_millis(490) && elapsed < Duration::from_secs(10),
        "two 250 ms timeouts then the fallback: {elapsed:?}"
    );
    assert_eq!(fallback.request_count(), 1);
    assert_eq!(errors_of_kind(&registry, "timeout"), 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_fails_over() {
    // A loopback port that was just free and is now closed: connecting is refused at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let fallback = MockLlm::start(Flavor::OpenAi).await;
    fallback.push(MockReply::text("fallback answered"));
    let registry = new_registry();
    let chain = ProviderChain::from_brain(
        &primary_at(format!("http://{closed}"), &fallback),
        &ctx(rt(&registry, 3)),
    )
    .expect("chain");
    let started = std::time::Instant::now();
    let out = run(&chain).await.expect("the fallback answers");
    assert_eq!(out.stop, StopReason::Final);
    assert_eq!(out.final_text, "fallback answered");
    assert_eq!(out.model, "fallback-model");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fallback.request_count(), 1);
    assert_eq!(
        errors_of_kind(&registry, "http"),
        3,
        "every attempt (max_attempts 3) failed on transport: {}",
        render_metrics(&registry)
    );
    // With no fallback left, the transport error itself comes back (retryable for the queue).
    let b = Brain {
        fallbacks: Vec::new(),
        ..primary_at(format!("http://{closed}"), &fallback)
    };
    let chain = ProviderChain::from_brain(&b, &ctx(rt(&new_registry(), 2))).expect("chain");
    let err = run(&chain).await.expect_err("nothing answers");
    assert!(matches!(err, LlmError::Http { .. }), "{err:?}");
    assert!(err.is_retryable());
}

/// An OpenAI chain on a mock whose breaker has just opened (three 503s, threshold 3) with the
/// given cool-down and `max_breaker_wait`, on the real clock.
async fn chain_with_open_breaker(
    registry: &SharedRegistry,
    cooldown: Duration,
    max_breaker_wait: Duration,
) -> (MockLlm, ProviderChain) {
    let primary = MockLlm::start(Flavor::OpenAi).await;
    for _ in 0..3 {
        primary.push(MockReply::error(503));
    }
    let rt = LlmRuntime::with_config(
        registry,
        PriceTable::builtin(),
        RuntimeConfig {
            breaker_cooldown: cooldown,
            max_breaker_wait,
            ..config(1)
        },
        Arc::new(TokioClock::new()),
    )
    .expect("rt");
    let b = Brain {
        provider: "openai".into(),
        model: "m".into(),
        api_base: Some(primary.base_url()),
        api_key_env: Some("GOOD_KEY".into()),
        ..Brain::default()
    };
    let chain = ProviderChain::from_brain(&b, &ctx(rt)).expect("chain");
    for _ in 0..3 {
        assert!(matches!(
            run(&chain).await,
            Err(LlmError::Api { status: 503, .. })
        ));
    }
    (primary, chain)
}

#[tokio::test]
async fn a_call_waits_out_an_open_breaker_and_is_answered_by_the_probe() {
    let registry = new_registry();
    let (primary, chain) = chain_with_open_breaker(
        &registry,
        Duration::from_millis(300),
        Duration::from_secs(10),
    )
    .await;
    // The breaker is open now. Four calls at once: none fails with CircuitOpen; they wait for
    // the cool-down, one of them probes, and the probe's success lets the others through.
    let started = tokio::time::Instant::now();
    let outs = futures::future::join_all((0..4).map(|_| run(&chain))).await;
    for out in outs {
        let out = out.expect("answered after the breaker closed");
        assert_eq!(out.final_text, "echo: hello");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the calls waited for the cool-down: {:?}",
        started.elapsed()
    );
    assert_eq!(
        primary.request_count(),
        3 + 4,
        "no request while the breaker was open"
    );
    assert!(
        errors_of_kind(&registry, "circuit_open") >= 4,
        "each call was refused at the open breaker before it waited"
    );
}

#[tokio::test]
async fn a_breaker_open_longer_than_the_wait_allows_fails_at_once() {
    let (primary, chain) = chain_with_open_breaker(
        &new_registry(),
        Duration::from_secs(600),
        Duration::from_secs(60),
    )
    .await;
    let started = tokio::time::Instant::now();
    assert!(matches!(
        run(&chain).await,
        Err(LlmError::CircuitOpen { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no pointless wait"
    );
    assert_eq!(primary.request_count(), 3);
}
