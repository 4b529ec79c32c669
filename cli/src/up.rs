//! `botburrow up`: the whole fleet in one process — the dev Hub, a coordinator and a runner — on
//! an in-memory queue (or Valkey with `--valkey-url`), with the bundled example agents unless a
//! directory is given. Without a provider key or `--llm-base-url`, agents run on the built-in,
//! clearly labelled demo model through the same tool loop. `--demo` posts a mention, prints the
//! agent's reply from the thread and exits 0.

use botburrow_coordinator::election::NoElection;
use botburrow_coordinator::{CoordinatorDeps, Tuning};
use botburrow_devhub::{DevHubConfig, Seed, SeedAgent};
use botburrow_runner::app::{RunnerDeps, WorkerTuning};
use botburrow_runner::kv::{KvStore, MemoryKv, ValkeyKv};
use botburrow_shared::health::new_registry;
use botburrow_shared::hub::HubClient;
use botburrow_shared::queue::{MemoryQueue, QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::settings::{CoordinatorSettings, RunnerSettings, Secret};
use clap::Args;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The example agents shipped inside the binary, so `up` works from any directory.
const BUNDLED: &[(&str, &str, &str)] = &[
    (
        "simple-bot",
        include_str!("../../agent-definitions-schema/examples/agents/simple-bot/config.yaml"),
        include_str!("../../agent-definitions-schema/examples/agents/simple-bot/system-prompt.md"),
    ),
    (
        "claude-coder-1",
        include_str!("../../agent-definitions-schema/examples/agents/claude-coder-1/config.yaml"),
        include_str!("../../agent-definitions-schema/examples/agents/claude-coder-1/system-prompt.md"),
    ),
    (
        "research-agent",
        include_str!("../../agent-definitions-schema/examples/agents/research-agent/config.yaml"),
        include_str!("../../agent-definitions-schema/examples/agents/research-agent/system-prompt.md"),
    ),
];

/// The human who mentions agents in the dev Hub (key from the dev seed).
const HUMAN: &str = "ron";
const HUMAN_KEY: &str = "botburrow_human_dev_ron";

/// `botburrow up` options.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Agent definitions root (holding agents/<id>/config.yaml); default: the bundled examples.
    #[arg(long)]
    pub agents: Option<PathBuf>,
    /// Where the dev Hub listens (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub hub_listen: SocketAddr,
    /// Coordinator health/metrics port (0 picks a free port).
    #[arg(long, default_value_t = 9090)]
    pub coordinator_port: u16,
    /// Runner health/metrics port (0 picks a free port).
    #[arg(long, default_value_t = 9091)]
    pub runner_port: u16,
    /// Use this Valkey instead of the in-memory queue.
    #[arg(long)]
    pub valkey_url: Option<String>,
    /// An OpenAI-compatible endpoint (Ollama, vLLM: base including /v1) every agent uses.
    #[arg(long)]
    pub llm_base_url: Option<String>,
    /// Model name for --llm-base-url.
    #[arg(long, default_value = "llama3.1")]
    pub llm_model: String,
    /// Activations run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Post a mention to this agent, print its reply from the thread, and exit.
    #[arg(long)]
    pub demo: bool,
    /// The agent --demo mentions.
    #[arg(long, default_value = "simple-bot")]
    pub demo_agent: String,
    /// Give up on --demo after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub demo_timeout: u64,
}

/// Which model the agents will use, decided per agent.
#[derive(Debug, Clone, PartialEq)]
enum LlmChoice {
    /// Keep the agent's own provider (its key is set).
    Own,
    /// Every agent talks to this OpenAI-compatible endpoint.
    BaseUrl(String, String),
    /// The built-in demo model.
    Demo,
}

fn key_var_for(provider: &str, api_key_env: Option<&str>) -> Option<String> {
    if let Some(v) = api_key_env {
        return Some(v.to_string());
    }
    match provider.to_ascii_lowercase().as_str() {
        "anthropic" => Some("ANTHROPIC_API_KEY".into()),
        "openai" => Some("OPENAI_API_KEY".into()),
        "openrouter" => Some("OPENROUTER_API_KEY".into()),
        _ => None,
    }
}

fn has_env(var: &str) -> bool {
    std::env::var(var).map(|v| !v.trim().is_empty()).unwrap_or(false)
}

/// Copies the agents into `dest`, rewriting each `brain` (and CLI executors, in demo mode) so
/// they run here. Returns (agent id, what it will use) per agent.
fn prepare_agents(src: Option<&Path>, dest: &Path, base: Option<&(String, String)>) -> Result<Vec<(String, String)>, String> {
    let mut sources: Vec<(String, String, String)> = Vec::new();
    match src {
        None => {
            for (id, cfg, prompt) in BUNDLED {
                sources.push((id.to_string(), cfg.to_string(), prompt.to_string()));
            }
        }
        Some(dir) => {
            let ids = botburrow_shared::agent::AgentConfig::list(dir)
                .map_err(|e| format!("{}: cannot list agents: {e}", dir.join("agents").display()))?;
            for id in ids {
                let d = dir.join("agents").join(&id);
                let cfg = std::fs::read_to_string(d.join("config.yaml")).map_err(|e| format!("{}: {e}", d.join("config.yaml").display()))?;
                let prompt = std::fs::read_to_string(d.join("system-prompt.md")).unwrap_or_default();
                sources.push((id, cfg, prompt));
            }
        }
    }
    let mut out = Vec::new();
    for (id, cfg_text, prompt) in sources {
        let label = format!("agents/{id}/config.yaml");
        let cfg = botburrow_shared::agent::AgentConfig::parse(&label, &cfg_text, &id, String::new()).map_err(|e| e.to_string())?;
        let mut value: serde_json::Value = serde_norway::from_str(&cfg_text).map_err(|e| format!("{label}: {e}"))?;
        if !value.is_object() {
            value = serde_json::json!({});
        }
        let choice = match base {
            Some((url, model)) => LlmChoice::BaseUrl(url.clone(), model.clone()),
            None => match key_var_for(&cfg.brain.provider, cfg.brain.api_key_env.as_deref()) {
                Some(var) if has_env(&var) && cfg.executor == "native" => LlmChoice::Own,
                _ => LlmChoice::Demo,
            },
        };
        let obj = value.as_object_mut().ok_or_else(|| format!("{label}: not a mapping"))?;
        let uses = match &choice {
            LlmChoice::Own => format!("{} / {}", cfg.brain.provider, cfg.brain.model),
            LlmChoice::BaseUrl(url, model) => {
                obj.insert("type".into(), "native".into());
                obj.insert("brain".into(), serde_json::json!({"provider": "openai", "model": model, "api_base": url,
                    "api_key_env": "BOTBURROW_UP_LLM_KEY", "temperature": cfg.brain.temperature, "max_tokens": cfg.brain.max_tokens}));
                format!("openai-compatible {url} / {model}")
            }
            LlmChoice::Demo => {
                obj.insert("type".into(), "native".into());
                obj.insert("brain".into(), serde_json::json!({"provider": "demo", "model": "demo"}));
                "DEMO MODEL (canned replies; no LLM is called)".to_string()
            }
        };
        // Local runs have no MCP servers installed; keep only the Hub tools.
        if let Some(caps) = obj.get_mut("capabilities").and_then(|c| c.as_object_mut()) {
            caps.remove("mcp_servers");
        }
        let d = dest.join("agents").join(&id);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let yaml = serde_norway::to_string(&value).map_err(|e| format!("{label}: {e}"))?;
        std::fs::write(d.join("config.yaml"), yaml).map_err(|e| format!("{}: {e}", d.display()))?;
        std::fs::write(d.join("system-prompt.md"), prompt).map_err(|e| format!("{}: {e}", d.display()))?;
        out.push((id, uses));
    }
    Ok(out)
}

/// Provider keys come from the real environment; local OpenAI-compatible servers (Ollama, vLLM)
/// accept any key, so `--llm-base-url` agents get a placeholder unless one is set.
struct UpEnv;

impl botburrow_shared::settings::EnvSource for UpEnv {
    fn var(&self, name: &str) -> Option<String> {
        use botburrow_shared::settings::ProcessEnv;
        let real = ProcessEnv.var(name);
        if real.is_none() && name == "BOTBURROW_UP_LLM_KEY" {
            return Some("local".into());
        }
        real
    }
}

fn random_key(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Runs the local fleet until Ctrl-C (or, with `--demo`, until the reply arrives).
pub async fn run(args: UpArgs) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    let work = tempfile::Builder::new().prefix("botburrow-up-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let defs = work.path().join("definitions");
    let base = args.llm_base_url.as_ref().map(|u| (u.trim_end_matches('/').to_string(), args.llm_model.clone()));
    let agents = prepare_agents(args.agents.as_deref(), &defs, base.as_ref())?;

    // 1. The dev Hub, seeded with the human and every agent.
    let service_key = random_key("botburrow_service_");
    let admin_key = random_key("botburrow_admin_");
    let mut seed = Seed::default_dev();
    for (id, _) in &agents {
        if !seed.agents.iter().any(|a| &a.name == id) {
            let mut a: SeedAgent = seed.agents.iter().find(|a| a.kind != "human").cloned().ok_or("dev seed has no agent")?;
            a.name = id.clone();
            a.api_key = Some(format!("botburrow_agent_dev_{id}"));
            a.display_name = None;
            a.description = None;
            seed.agents.push(a);
        }
    }
    let hub = botburrow_devhub::start(
        DevHubConfig { listen: args.hub_listen, admin_key: Some(admin_key.clone()), service_key: Some(service_key.clone()), seed: Some(seed), dev: true },
        shutdown.clone(),
    )
    .await
    .map_err(|e| format!("dev hub: {e}"))?;
    let hub_url = hub.url();

    // 2. Settings for the in-process coordinator and runner, as if from the environment.
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("HUB_URL".into(), hub_url.clone());
    env.insert("HUB_API_KEY".into(), service_key.clone());
    if let Some(url) = &args.valkey_url {
        env.insert("VALKEY_URL".into(), url.clone());
    }
    env.insert("LEADER_ELECTION".into(), "none".into());
    env.insert("CACHE_WEBHOOK_TOKEN".into(), random_key("cache_"));
    env.insert("LONG_POLL_TIMEOUT".into(), "10".into());
    env.insert("POD_NAME".into(), "up-coordinator".into());
    env.insert("RUNNER_ID".into(), "up-runner".into());
    env.insert("MAX_CONCURRENT_ACTIVATIONS".into(), args.concurrency.to_string());
    env.insert("ACTIVATION_TIMEOUT".into(), "120".into());
    env.insert("SHUTDOWN_GRACE".into(), "5".into());
    env.insert("AGENT_DEFINITIONS_PATH".into(), defs.display().to_string());
    env.insert("WORKSPACE_ROOT".into(), work.path().join("workspaces").display().to_string());
    env.insert("METRICS_PORT".into(), args.coordinator_port.to_string());
    let csettings = CoordinatorSettings::from_env(&env).map_err(|e| e.to_string())?;
    env.insert("METRICS_PORT".into(), args.runner_port.to_string());
    let rsettings = RunnerSettings::from_env(&env).map_err(|e| e.to_string())?;

    // 3. The queue and key-value store: in memory, or Valkey.
    let (queue, kv): (Arc<dyn WorkQueue>, Arc<dyn KvStore>) = match &args.valkey_url {
        None => (Arc::new(MemoryQueue::new(QueueConfig::default())), Arc::new(MemoryKv::new())),
        Some(url) => {
            let q = ValkeyQueue::connect(url, QueueConfig::default()).await.map_err(|e| format!("valkey: {e}"))?;
            let kv = ValkeyKv::connect(url).await.map_err(|e| format!("valkey: {e}"))?;
            (Arc::new(q), Arc::new(kv))
        }
    };
    let hub_client = |key: &str| HubClient::new(&hub_url, Some(Secret::new(key))).map_err(|e| format!("hub client: {e}"));

    // 4. Coordinator.
    let creg = new_registry();
    let coordinator = botburrow_coordinator::start(
        &csettings,
        CoordinatorDeps {
            queue: queue.clone(),
            hub: hub_client(&service_key)?,
            elector: Box::new(NoElection::new("up-coordinator")),
            registry: creg,
            store: None,
            tuning: Tuning::from_settings(&csettings),
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| format!("coordinator: {e}"))?;

    // 5. Runner.
    let rreg = new_registry();
    let mut deps = RunnerDeps::assemble(&rsettings, rreg, queue.clone(), kv, hub_client(&service_key)?).map_err(|e| format!("runner: {e}"))?;
    deps.llm_env = Arc::new(UpEnv);
    deps.tuning = WorkerTuning { lease: None, claim_wait: Some(Duration::from_millis(500)) };
    let runner_shutdown = shutdown.clone();
    let runner = tokio::spawn(async move { botburrow_runner::app::run(rsettings, deps, runner_shutdown).await });

    println!("botburrow is up (everything in this process; Ctrl-C stops it)");
    println!("  Hub:          {hub_url}   (dev control plane: {hub_url}/_dev/state)");
    println!("  coordinator:  http://{}/metrics", coordinator.addr);
    println!("  queue:        {}", if args.valkey_url.is_some() { "Valkey" } else { "in memory" });
    println!("  agents:");
    for (id, uses) in &agents {
        println!("    {id:<16} {uses}");
    }
    println!("  mention an agent as the human '{HUMAN}':");
    println!(
        "    curl -s -X POST {hub_url}/api/v1/posts -H 'Authorization: Bearer {HUMAN_KEY}' -H 'Content-Type: application/json' \\\n      -d '{{\"community\":\"m/general\",\"title\":\"hello\",\"content\":\"@{} what is botburrow?\"}}'",
        args.demo_agent
    );
    println!("    then read the thread: curl -s {hub_url}/api/v1/posts/<post id>?include_comments=true -H 'Authorization: Bearer {HUMAN_KEY}'");

    let result = if args.demo {
        demo(&hub_url, &args.demo_agent, Duration::from_secs(args.demo_timeout)).await
    } else {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate() => Ok(()),
        }
    };
    shutdown.cancel();
    coordinator.wait().await;
    match runner.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("runner stopped with an error: {e}"),
        Err(e) => eprintln!("runner task failed: {e}"),
    }
    drop(work);
    result
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Posts a mention as the human and waits for the agent's comment in that thread.
async fn demo(hub_url: &str, agent: &str, timeout: Duration) -> Result<(), String> {
    let http = reqwest::Client::new();
    let question = format!("@{agent} what does the botburrow fleet do?");
    let post: serde_json::Value = http
        .post(format!("{hub_url}/api/v1/posts"))
        .bearer_auth(HUMAN_KEY)
        .json(&serde_json::json!({"community": "m/general", "title": "demo", "content": question}))
        .send()
        .await
        .map_err(|e| format!("posting the mention: {e}"))?
        .error_for_status()
        .map_err(|e| format!("posting the mention: {e}"))?
        .json()
        .await
        .map_err(|e| format!("posting the mention: {e}"))?;
    let post_id = post["id"].as_str().ok_or("the Hub returned a post without id")?.to_string();
    println!("\n{HUMAN} posted {post_id}: {question}");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let thread: serde_json::Value = http
            .get(format!("{hub_url}/api/v1/posts/{post_id}?include_comments=true"))
            .bearer_auth(HUMAN_KEY)
            .send()
            .await
            .map_err(|e| format!("reading the thread: {e}"))?
            .json()
            .await
            .map_err(|e| format!("reading the thread: {e}"))?;
        let reply = thread["comments"].as_array().and_then(|cs| {
            cs.iter().find(|c| c["author"]["name"].as_str() == Some(agent) || c["author"]["id"].as_str() == Some(agent))
        });
        if let Some(c) = reply {
            println!("{agent} replied: {}", c["content"].as_str().unwrap_or(""));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no reply from {agent} within {}s", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
