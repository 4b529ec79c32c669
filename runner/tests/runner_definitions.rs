//! The agent definitions store against a git-sync v4 style directory (relative symlink atomically
//! renamed onto a new worktree, old worktree deleted right away), real Valkey for the config cache,
//! and a local HTTP server standing in for raw.githubusercontent.com.

use botburrow_runner::definitions::{DefinitionStore, DefinitionsConfig};
use botburrow_runner::kv::{KvStore, MemoryKv, ValkeyKv};
use botburrow_runner::metrics::RunnerMetrics;
use botburrow_shared::health::{new_registry, render_metrics};
use botburrow_shared::ids::AgentId;
use botburrow_testkit::{Valkey, eventually};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Reproduces git-sync v4's publish step: new worktree, `tmp-link` symlink, atomic rename onto the
/// link, then the old worktree is removed.
struct FakeGitSync {
    root: PathBuf,
    link: PathBuf,
    current: Option<String>,
}

impl FakeGitSync {
    fn new(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(".worktrees")).expect("worktrees dir");
        Self {
            root: root.to_path_buf(),
            link: root.join("agent-definitions"),
            current: None,
        }
    }

    fn publish(&mut self, sha: &str, files: &[(&str, &str)]) {
        let wt = self.root.join(".worktrees").join(sha);
        for (rel, content) in files {
            let p = wt.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        let tmp = self.root.join("tmp-link");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!(".worktrees/{sha}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, &self.link).expect("atomic rename");
        if let Some(old) = self.current.replace(sha.to_string()) {
            std::fs::remove_dir_all(self.root.join(".worktrees").join(old))
                .expect("remove old worktree");
        }
    }
}

fn agent_files<'a>(config: &'a str, prompt: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("agents/bot/config.yaml", config),
        ("agents/bot/system-prompt.md", prompt),
    ]
}

fn store_for(
    path: &Path,
    kv: Arc<dyn KvStore>,
) -> (
    Arc<DefinitionStore>,
    botburrow_shared::health::SharedRegistry,
) {
    let registry = new_registry();
    let metrics = RunnerMetrics::register(&registry);
    let mut cfg = DefinitionsConfig::local(path);
    // A long safety-net period: the reload must come from the directory watch.
    cfg.recheck_interval = Duration::from_secs(3600);
    (Arc::new(DefinitionStore::new(cfg, kv, metrics)), registry)
}

#[tokio::test]
async fn git_sync_swap_reloads_within_a_second_and_a_broken_swap_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut gs = FakeGitSync::new(dir.path());
    gs.publish(
        "aaaa1111",
        &agent_files(
            "name: bot\ntype: native\nbrain: {model: m1}\ncache_ttl: 600\n",
            "You are version one.",
        ),
    );
    let (store, registry) = store_for(&gs.link, Arc::new(MemoryKv::new()));
    let shutdown = CancellationToken::new();
    let watcher = store.spawn_watcher(shutdown.clone());
    let bot = AgentId::new("bot");
    assert_eq!(store.preload().await, (1, 0));

    let cfg = store.get(&bot).await.expect("first load");
    assert_eq!(cfg.system_prompt, "You are version one.");
    assert_eq!(cfg.brain.model, "m1");
    assert_eq!(store.revision().as_deref(), Some("aaaa1111"));

    let published = Instant::now();
    gs.publish(
        "bbbb2222",
        &agent_files(
            "name: bot\ntype: native\nbrain: {model: m2}\n",
            "You are version two.",
        ),
    );
    let reloaded = eventually(Duration::from_secs(1), || async {
        store.revision().as_deref() == Some("bbbb2222")
    })
    .await;
    assert!(reloaded, "no reload within 1 s of the flip");
    assert!(published.elapsed() < Duration::from_secs(1));
    let cfg = store.get(&bot).await.expect("second load");
    assert_eq!(cfg.system_prompt, "You are version two.");
    assert_eq!(cfg.brain.model, "m2");

    // A broken commit: the agent keeps v2, the error is counted once.
    let generation = store.generation();
    gs.publish(
        "cccc3333",
        &agent_files("name: bot\nbrain:\n  temperature: hot\n", "You are broken."),
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            store.generation() > generation
        })
        .await
    );
    for _ in 0..3 {
        let cfg = store.get(&bot).await.expect("last good config");
        assert_eq!(cfg.system_prompt, "You are version two.");
    }
    let text = render_metrics(&registry);
    assert!(
        text.contains("botburrow_agent_config_errors_total{agent=\"bot\"} 1"),
        "{text}"
    );

    // A fixed commit is picked up again.
    gs.publish(
        "dddd4444",
        &agent_files("name: bot\nbrain: {model: m4}\n", "You are version four."),
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            store
                .get(&bot)
                .await
                .map(|c| c.system_prompt == "You are version four.")
                .unwrap_or(false)
        })
        .await
    );

    // An agent that is not defined fails with the documented message.
    let err = store
        .get(&AgentId::new("ghost"))
        .await
        .expect_err("missing agent");
    let msg = err.to_string();
    assert!(msg.starts_with("Agent config not found: "), "{msg}");
    assert!(msg.ends_with("agents/ghost/config.yaml"), "{msg}");
    assert!(store.get(&AgentId::new("../etc")).await.is_err());
    assert!(store.check_ready().await.is_ok());

    shutdown.cancel();
    watcher.await.expect("watcher ends on shutdown");
}

#[tokio::test]
async fn an_invalid_grant_is_a_config_error_at_load_and_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut gs = FakeGitSync::new(dir.path());
    let good = "name: bot\ntype: native\ncapabilities:\n  grants: [hub:read, hub:write]\n";
    gs.publish(
        "aaaa0001",
        &[
            ("agents/bot/config.yaml", good),
            ("agents/bot/system-prompt.md", "Good grants."),
            (
                "agents/fresh/config.yaml",
                "capabilities:\n  grants: [hub:read, hub:delete]\n",
            ),
        ],
    );
    let (store, registry) = store_for(&gs.link, Arc::new(MemoryKv::new()));
    let shutdown = CancellationToken::new();
    let watcher = store.spawn_watcher(shutdown.clone());
    assert_eq!(store.preload().await, (1, 1), "fresh is invalid at load");

    // With no last good config, the error names the file, the field and the grant.
    let err = store
        .get(&AgentId::new("fresh"))
        .await
        .expect_err("invalid grant");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "agents/fresh/config.yaml: capabilities.grants[1]: invalid grant 'hub:delete': "
        ),
        "{msg}"
    );

    // A commit giving bot a grant of an unknown shape: bot keeps its last good config.
    let bot = AgentId::new("bot");
    assert_eq!(
        store.get(&bot).await.expect("good").capabilities.grants,
        ["hub:read", "hub:write"]
    );
    let generation = store.generation();
    gs.publish(
        "bbbb0002",
        &[
            (
                "agents/bot/config.yaml",
                "name: bot\ntype: native\ncapabilities:\n  grants: [hub:read, \"github\"]\n",
            ),
            ("agents/bot/system-prompt.md", "Broken grants."),
        ],
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            store.generation() > generation
        })
        .await
    );
    let cfg = store.get(&bot).await.expect("last good config");
    assert_eq!(cfg.system_prompt, "Good grants.");
    assert_eq!(cfg.capabilities.grants, ["hub:read", "hub:write"]);

    // A custom MCP server whose grant is malformed is caught the same way.
    let generation = store.generation();
    gs.publish(
        "cccc0003",
        &[
            (
                "agents/bot/config.yaml",
                "name: bot\ntype: native\ncapabilities:\n  grants: [hub:write, notes:*]\n  mcp_servers:\n    - {name: notes, command: notes-mcp, grant: \"notes::read\"}\n",
            ),
            ("agents/bot/system-prompt.md", "Broken server grant."),
        ],
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            store.generation() > generation
        })
        .await
    );
    assert_eq!(
        store
            .get(&bot)
            .await
            .expect("last good config")
            .system_prompt,
        "Good grants."
    );

    // Each bad load was counted like any other invalid config.
    let text = render_metrics(&registry);
    assert!(
        text.contains("botburrow_agent_config_errors_total{agent=\"bot\"} 2"),
        "{text}"
    );
    // (An agent with no good config is counted on every failed lookup: preload, then get.)
    assert!(
        text.contains("botburrow_agent_config_errors_total{agent=\"fresh\"} 2"),
        "{text}"
    );

    // Without a last good copy (a new store), the error names the server's grant field.
    let (cold, _r) = store_for(&gs.link, Arc::new(MemoryKv::new()));
    let msg = cold.get(&bot).await.expect_err("invalid").to_string();
    assert!(
        msg.starts_with(
            "agents/bot/config.yaml: capabilities.mcp_servers[0].grant: invalid grant 'notes::read': "
        ),
        "{msg}"
    );

    shutdown.cancel();
    watcher.await.expect("watcher ends on shutdown");
}

#[tokio::test]
async fn link_created_after_start_and_plain_directories_are_followed() {
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("agent-definitions");
    let (store, _registry) = store_for(&link, Arc::new(MemoryKv::new()));
    assert!(store.check_ready().await.is_err(), "no link yet: not ready");
    let shutdown = CancellationToken::new();
    let _w = store.spawn_watcher(shutdown.clone());
    let mut gs = FakeGitSync::new(dir.path());
    gs.publish("11112222", &agent_files("brain: {model: late}\n", "late"));
    assert!(
        eventually(Duration::from_secs(2), || async {
            store.revision().as_deref() == Some("11112222")
        })
        .await
    );
    assert_eq!(
        store
            .get(&AgentId::new("bot"))
            .await
            .expect("load")
            .brain
            .model,
        "late"
    );
    assert!(store.check_ready().await.is_ok());

    // A plain directory (no git-sync): an edited file is picked up through the recursive watch.
    let plain = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(plain.path().join("agents/bot")).expect("mkdir");
    std::fs::write(
        plain.path().join("agents/bot/config.yaml"),
        "brain: {model: p1}\n",
    )
    .expect("write");
    let (pstore, _r) = store_for(plain.path(), Arc::new(MemoryKv::new()));
    let _pw = pstore.spawn_watcher(shutdown.clone());
    let bot = AgentId::new("bot");
    assert_eq!(pstore.get(&bot).await.expect("load").brain.model, "p1");
    std::fs::write(
        plain.path().join("agents/bot/config.yaml"),
        "brain: {model: p2}\n",
    )
    .expect("write");
    assert!(
        eventually(Duration::from_secs(2), || async {
            pstore
                .get(&bot)
                .await
                .map(|c| c.brain.model == "p2")
                .unwrap_or(false)
        })
        .await
    );
    shutdown.cancel();
}

#[tokio::test]
async fn parsed_configs_are_cached_in_valkey_and_a_deleted_cache_key_forces_a_reread() {
    let valkey = Valkey::start();
    let kv = Arc::new(ValkeyKv::connect(&valkey.url()).await.expect("valkey"));
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("agents/bot")).expect("mkdir");
    std::fs::write(
        dir.path().join("agents/bot/config.yaml"),
        "brain: {model: v1}\ncache_ttl: 120\n",
    )
    .expect("write");
    // No watcher: only the cache key decides freshness here.
    let (store, _r) = store_for(dir.path(), kv.clone());
    let bot = AgentId::new("bot");
    assert_eq!(store.get(&bot).await.expect("load").brain.model, "v1");
    let cached = kv
        .get("cache:agent:bot")
        .await
        .expect("get")
        .expect("cache key written");
    let json: serde_json::Value = serde_json::from_str(&cached).expect("json");
    assert_eq!(json["brain"]["model"], "v1");
    let ttl = valkey.command(&["TTL", "cache:agent:bot"]).expect("ttl");
    let ttl: i64 = ttl
        .trim_start_matches(':')
        .trim()
        .parse()
        .expect("ttl number");
    assert!(ttl > 100 && ttl <= 120, "ttl {ttl}");

    std::fs::write(
        dir.path().join("agents/bot/config.yaml"),
        "brain: {model: v2}\ncache_ttl: 120\n",
    )
    .expect("write");
    // Still fresh: the in-process copy is served.
    assert_eq!(store.get(&bot).await.expect("load").brain.model, "v1");
    // The coordinator's invalidation webhook deletes the key: the next lookup re-reads the source.
    valkey.command(&["DEL", "cache:agent:bot"]).expect("del");
    assert_eq!(store.get(&bot).await.expect("load").brain.model, "v2");
}

#[tokio::test]
async fn raw_github_mode_fetches_files_with_the_token_and_reports_missing_agents() {
    use axum::extract::Path as AxPath;
    use axum::http::{HeaderMap, StatusCode};
    let seen_auth = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = seen_auth.clone();
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::get(move |AxPath(path): AxPath<String>, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    seen.lock().expect("lock").push(a.to_string());
                }
                match path.as_str() {
                    "acme/defs/prod/agents/bot/config.yaml" => {
                        (StatusCode::OK, "brain: {model: raw-model}\n".to_string())
                    }
                    "acme/defs/prod/agents/bot/system-prompt.md" => {
                        (StatusCode::OK, "From GitHub.".to_string())
                    }
                    "acme/defs/prod/agents/noprompt/config.yaml" => {
                        (StatusCode::OK, "{}".to_string())
                    }
                    _ => (StatusCode::NOT_FOUND, "404: Not Found".to_string()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = DefinitionsConfig::local(dir.path().join("does-not-exist"));
    cfg.repo = Some("acme/defs".into());
    cfg.branch = "prod".into();
    cfg.github_token = Some(botburrow_shared::settings::Secret::new("ghp_test_token"));
    cfg.raw_base_url = format!("http://{addr}");
    let registry = new_registry();
    let store = DefinitionStore::new(
        cfg,
        Arc::new(MemoryKv::new()),
        RunnerMetrics::register(&registry),
    );
    assert!(store.check_ready().await.is_ok());
    let bot = store.get(&AgentId::new("bot")).await.expect("raw load");
    assert_eq!(bot.brain.model, "raw-model");
    assert_eq!(bot.system_prompt, "From GitHub.");
    let np = store
        .get(&AgentId::new("noprompt"))
        .await
        .expect("raw load");
    assert_eq!(np.system_prompt, "");
    let err = store
        .get(&AgentId::new("ghost"))
        .await
        .expect_err("missing");
    assert!(
        err.to_string().starts_with("Agent config not found: "),
        "{err}"
    );
    assert!(!err.to_string().contains("ghp_test_token"));
    let auth = seen_auth.lock().expect("lock").clone();
    assert!(
        !auth.is_empty() && auth.iter().all(|a| a == "token ghp_test_token"),
        "{auth:?}"
    );
}
