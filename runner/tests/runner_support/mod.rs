//! A whole fleet for the runner's end-to-end tests: a real Valkey (queue, heartbeats, config
//! cache), the real dev Hub over HTTP, the strict mock OpenAI-compatible LLM over HTTP, agent
//! definitions on disk, and the runner itself (in process through `botburrow_runner::app::run`,
//! or as the built binary).

#![allow(dead_code)]

use botburrow_devhub::{DevHubConfig, RunningHub, Seed, SeedAgent};
use botburrow_runner::app::{RunnerDeps, WorkerTuning, run};
use botburrow_runner::kv::ValkeyKv;
use botburrow_shared::health::{SharedRegistry, new_registry, render_metrics};
use botburrow_shared::hub::{HubClient, NewPost};
use botburrow_shared::ids::AgentId;
use botburrow_shared::queue::{QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::settings::{RunnerSettings, Secret};
use botburrow_testkit::mock_llm::{Flavor, MockLlm};
use botburrow_testkit::{Valkey, free_port};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE_KEY: &str = "botburrow_service_test_key";
pub const ADMIN_KEY: &str = "botburrow_admin_test_key";
/// Env var naming the mock LLM key in agent configs (`brain.api_key_env`).
pub const KEY_VAR: &str = "MOCK_LLM_KEY";

pub struct Fleet {
    pub valkey: Valkey,
    pub hub: RunningHub,
    hub_stop: CancellationToken,
    pub mock: MockLlm,
    pub defs: tempfile::TempDir,
    pub workspaces: tempfile::TempDir,
    pub queue: Arc<ValkeyQueue>,
    pub queue_config: QueueConfig,
    pub registry: SharedRegistry,
    pub metrics_port: u16,
    pub http: reqwest::Client,
    pub service: HubClient,
    runner: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

fn seed_agent(name: &str, kind: &str, daily: f64) -> SeedAgent {
    SeedAgent {
        name: name.into(),
        kind: kind.into(),
        api_key: None,
        daily_limit: Some(daily),
        monthly_limit: Some(0.0),
        display_name: None,
        description: None,
    }
}

impl Fleet {
    pub async fn start() -> Self {
        Self::start_with(QueueConfig::default()).await
    }

    pub async fn start_with(queue_config: QueueConfig) -> Self {
        let valkey = Valkey::start();
        let hub_stop = CancellationToken::new();
        let seed = Seed {
            agents: vec![
                seed_agent("ron", "human", 0.0),
                seed_agent("simple-bot", "agent", 10.0),
                seed_agent("quiet-bot", "agent", 10.0),
                seed_agent("reader-bot", "agent", 10.0),
                seed_agent("broke-bot", "agent", 0.01),
                seed_agent("cli-bot", "agent", 10.0),
            ],
            communities: vec!["m/general".into(), "m/rust".into()],
            posts: Vec::new(),
        };
        let hub = botburrow_devhub::start(
            DevHubConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                admin_key: Some(ADMIN_KEY.into()),
                service_key: Some(SERVICE_KEY.into()),
                seed: Some(seed),
                dev: true,
            },
            hub_stop.clone(),
        )
        .await
        .expect("devhub");
        let mock = MockLlm::start(Flavor::OpenAi).await;
        let queue = Arc::new(
            ValkeyQueue::connect(&valkey.url(), queue_config.clone())
                .await
                .expect("queue"),
        );
        let service =
            HubClient::new(&hub.url(), Some(Secret::new(SERVICE_KEY))).expect("hub client");
        let defs = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(defs.path().join("agents")).expect("agents dir");
        Self {
            valkey,
            hub,
            hub_stop,
            mock,
            defs,
            workspaces: tempfile::tempdir().expect("tmp"),
            queue,
            queue_config,
            registry: new_registry(),
            metrics_port: free_port(),
            http: reqwest::Client::new(),
            service,
            runner: None,
        }
    }

    /// A native agent on the mock LLM; `extra` is appended YAML (grants, behavior...).
    pub fn native_config(&self, extra: &str) -> String {
        format!(
            "type: native\nbrain:\n  provider: openai\n  model: gpt-4o-mini\n  api_base: \"{}\"\n  api_key_env: {KEY_VAR}\n{extra}",
            self.mock.base_url()
        )
    }

    pub fn write_agent(&self, id: &str, config: &str, prompt: &str) {
        let dir = self.defs.path().join("agents").join(id);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.yaml"), config).expect("write config");
        std::fs::write(dir.join("system-prompt.md"), prompt).expect("write prompt");
    }

    pub fn env(&self, defs_path: &std::path::Path) -> HashMap<String, String> {
        HashMap::from([
            ("HUB_URL".to_string(), self.hub.url()),
            ("HUB_API_KEY".to_string(), SERVICE_KEY.to_string()),
            ("VALKEY_URL".to_string(), self.valkey.url()),
            (
                "AGENT_DEFINITIONS_PATH".to_string(),
                defs_path.display().to_string(),
            ),
            (
                "WORKSPACE_ROOT".to_string(),
                self.workspaces.path().display().to_string(),
            ),
            ("METRICS_PORT".to_string(), self.metrics_port.to_string()),
            ("RUNNER_ID".to_string(), "runner-test-1".to_string()),
            ("SHUTDOWN_GRACE".to_string(), "5".to_string()),
            ("ACTIVATION_TIMEOUT".to_string(), "30".to_string()),
            ("LOG_FORMAT".to_string(), "text".to_string()),
        ])
    }

    pub fn settings_with(
        &self,
        defs_path: &std::path::Path,
        overrides: &[(&str, &str)],
    ) -> RunnerSettings {
        let mut env = self.env(defs_path);
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        RunnerSettings::from_env(&env).expect("valid settings")
    }

    /// Starts the runner in process with the fleet's definitions directory.
    pub async fn start_runner(
        &mut self,
        overrides: &[(&str, &str)],
        tweak: impl FnOnce(&mut RunnerDeps),
    ) {
        let path = self.defs.path().to_path_buf();
        self.start_runner_at(&path, overrides, tweak).await;
    }

    pub async fn start_runner_at(
        &mut self,
        defs_path: &std::path::Path,
        overrides: &[(&str, &str)],
        tweak: impl FnOnce(&mut RunnerDeps),
    ) {
        let settings = self.settings_with(defs_path, overrides);
        let kv = Arc::new(ValkeyKv::connect(&self.valkey.url()).await.expect("kv"));
        let queue: Arc<dyn WorkQueue> = Arc::new(
            ValkeyQueue::connect(&self.valkey.url(), self.queue_config.clone())
                .await
                .expect("queue"),
        );
        let hub = HubClient::new(&self.hub.url(), Some(Secret::new(SERVICE_KEY))).expect("hub");
        let mut deps =
            RunnerDeps::assemble(&settings, self.registry.clone(), queue, kv, hub).expect("deps");
        deps.llm_env = Arc::new(HashMap::from([(
            KEY_VAR.to_string(),
            MockLlm::TEST_KEY.to_string(),
        )]));
        deps.tuning = WorkerTuning {
            lease: Some(Duration::from_millis(1_500)),
            claim_wait: Some(Duration::from_millis(300)),
        };
        tweak(&mut deps);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            run(settings, deps, s).await.expect("runner run");
        });
        self.runner = Some((stop, task));
        // Wait until the health server answers.
        let url = format!("http://127.0.0.1:{}/health", self.metrics_port);
        let http = self.http.clone();
        assert!(
            botburrow_testkit::eventually(Duration::from_secs(10), || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                }
            })
            .await,
            "runner health server did not come up"
        );
    }

    pub async fn stop_runner(&mut self) {
        if let Some((stop, task)) = self.runner.take() {
            stop.cancel();
            task.await.expect("runner task");
        }
    }

    /// Ron (a human) posts; returns the post id.
    pub async fn ron_posts(&self, content: &str) -> String {
        let post = self
            .service
            .create_post(
                &AgentId::new("ron"),
                &NewPost {
                    title: Some("Question".into()),
                    content: content.into(),
                    community: Some("m/rust".into()),
                },
                &uuid::Uuid::new_v4().to_string(),
            )
            .await
            .expect("ron posts");
        post.id
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_dev/state", self.hub.url()))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("state json")
    }

    pub async fn inject(&self, agent: &str, kind: &str, content: &str, post_id: Option<&str>) {
        let mut body =
            json!({"agent_id": agent, "type": kind, "content": content, "from_agent": "ron"});
        if let Some(p) = post_id {
            body["post_id"] = p.into();
        }
        let r = self
            .http
            .post(format!("{}/_dev/notifications", self.hub.url()))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .expect("inject");
        assert!(r.status().is_success(), "inject failed: {}", r.status());
    }

    pub fn comments_by<'a>(state: &'a Value, agent: &str) -> Vec<&'a Value> {
        state["comments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["author"]["id"] == agent || c["author"]["name"] == agent)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn notifications_of<'a>(state: &'a Value, agent: &str) -> Vec<&'a Value> {
        state["notifications"]
            .as_array()
            .map(|a| a.iter().filter(|n| n["recipient"] == agent).collect())
            .unwrap_or_default()
    }

    pub fn agent<'a>(state: &'a Value, id: &str) -> &'a Value {
        state["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == id))
            .unwrap_or(&Value::Null)
    }

    pub fn metrics(&self) -> String {
        render_metrics(&self.registry)
    }

    pub fn defs_path(&self) -> PathBuf {
        self.defs.path().to_path_buf()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.runner {
            stop.cancel();
        }
        self.hub_stop.cancel();
    }
}

/// Reproduces git-sync v4's publish step: a new worktree, a `tmp-link` symlink, an atomic
/// rename onto the link, then the old worktree is deleted at once.
pub struct FakeGitSync {
    root: PathBuf,
    pub link: PathBuf,
    current: Option<String>,
}

impl FakeGitSync {
    pub fn new(root: &std::path::Path) -> Self {
        std::fs::create_dir_all(root.join(".worktrees")).expect("worktrees dir");
        Self {
            root: root.to_path_buf(),
            link: root.join("agent-definitions"),
            current: None,
        }
    }

    pub fn publish(&mut self, sha: &str, files: &[(&str, &str)]) {
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
