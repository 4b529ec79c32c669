//! End-to-end harness: a real devhub in-process, a real Valkey, and coordinators built from
//! settings exactly as the binary does, with shortened loop periods.

use botburrow_coordinator::election::valkey::ValkeyElector;
use botburrow_coordinator::election::{ElectionTiming, LeaderElector, NoElection};
use botburrow_coordinator::scheduler::SchedulerTuning;
use botburrow_coordinator::store::KeyStore;
use botburrow_coordinator::{CoordinatorDeps, RunningCoordinator, Tuning};
use botburrow_devhub::{DevHubConfig, RunningHub};
use botburrow_shared::health::new_registry;
use botburrow_shared::hub::{HubClient, RetryPolicy};
use botburrow_shared::queue::{QueueConfig, ValkeyQueue};
use botburrow_shared::settings::CoordinatorSettings;
use botburrow_testkit::Valkey;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "admin-key-for-tests";
pub const SERVICE: &str = "service-key-for-tests";

pub struct Hub {
    pub running: RunningHub,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Hub {
    pub async fn start() -> Self {
        let stop = CancellationToken::new();
        let running = botburrow_devhub::start(
            DevHubConfig {
                admin_key: Some(ADMIN.into()),
                service_key: Some(SERVICE.into()),
                ..DevHubConfig::default()
            },
            stop.clone(),
        )
        .await
        .expect("devhub starts");
        Self {
            running,
            stop,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub async fn dev(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url()))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("dev call");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_dev/state", self.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("json")
    }

    pub async fn mention(&self, agent: &str) {
        self.dev(
            "/_dev/notifications",
            json!({"agent_id": agent, "type": "mention", "content": "@hi", "from_agent": "ron"}),
        )
        .await;
    }
}

pub fn settings(hub: &Hub, v: &Valkey, extra: &[(&str, &str)]) -> CoordinatorSettings {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("HUB_URL".into(), hub.url());
    env.insert("HUB_API_KEY".into(), SERVICE.into());
    env.insert("VALKEY_URL".into(), v.url());
    env.insert("METRICS_PORT".into(), "0".into());
    env.insert("LONG_POLL_TIMEOUT".into(), "5".into());
    env.insert("POLL_INTERVAL".into(), "1".into());
    env.insert("DISCOVERY_INTERVAL".into(), "3600".into());
    for (k, val) in extra {
        env.insert((*k).into(), (*val).into());
    }
    CoordinatorSettings::from_env(&env).expect("valid settings")
}

pub fn fast_timing() -> ElectionTiming {
    ElectionTiming {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
    }
}

pub enum Election {
    None,
    Valkey(&'static str),
}

pub struct Coord {
    pub running: Option<RunningCoordinator>,
    pub stop: CancellationToken,
    pub base: String,
}

impl Drop for Coord {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Coord {
    pub async fn start(settings: &CoordinatorSettings, v: &Valkey, election: Election) -> Self {
        Self::start_with(settings, v, election, |_| {}).await
    }

    pub async fn start_with(
        settings: &CoordinatorSettings,
        v: &Valkey,
        election: Election,
        adjust: impl FnOnce(&mut Tuning),
    ) -> Self {
        let elector: Box<dyn LeaderElector> = match election {
            Election::None => Box::new(NoElection::new("solo")),
            Election::Valkey(id) => Box::new(
                ValkeyElector::connect(&v.url(), id, fast_timing())
                    .await
                    .expect("elector"),
            ),
        };
        let hub = HubClient::new(
            &settings.common.hub_url,
            settings.common.hub_api_key.clone(),
        )
        .expect("hub client")
        .with_retry(RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        });
        let mut tuning = Tuning::from_settings(settings);
        tuning.scheduler = SchedulerTuning {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            busy_repoll: Duration::from_millis(200),
            ..tuning.scheduler
        };
        tuning.reap_interval = Duration::from_millis(100);
        tuning.stats_interval = Duration::from_millis(100);
        tuning.http_ip = [127, 0, 0, 1].into();
        adjust(&mut tuning);
        let deps = CoordinatorDeps {
            queue: Arc::new(
                ValkeyQueue::connect(&v.url(), QueueConfig::default())
                    .await
                    .expect("queue"),
            ),
            hub,
            elector,
            registry: new_registry(),
            store: Some(KeyStore::connect(&v.url()).await.expect("store")),
            tuning,
        };
        let stop = CancellationToken::new();
        let running = botburrow_coordinator::start(settings, deps, stop.clone())
            .await
            .expect("coordinator starts");
        let base = format!("http://127.0.0.1:{}", running.addr.port());
        Self {
            running: Some(running),
            stop,
            base,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.leader.is_leader())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Stops the coordinator (releasing leadership) and waits for it.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(r) = self.running.take() {
            r.wait().await;
        }
    }
}

/// Value of a metric line, e.g. `metric(text, "botburrow_queue_depth{priority=\"high\"}")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
    })
}

/// Raw `LRANGE key 0 -1` items as JSON values, through a real client connection.
pub async fn list(v: &Valkey, key: &str) -> Vec<Value> {
    use fred::prelude::*;
    let client = Builder::from_config(Config::from_url(&v.url()).expect("url"))
        .build()
        .expect("client");
    client.init().await.expect("connect");
    let raw: Vec<String> = client.lrange(key, 0, -1).await.expect("lrange");
    let _ = client.quit().await;
    raw.iter()
        .map(|s| serde_json::from_str(s).expect("item json"))
        .collect()
}

pub fn llen(v: &Valkey, key: &str) -> i64 {
    let r = v.command(&["LLEN", key]).expect("LLEN");
    r.trim().trim_start_matches(':').parse().expect("int reply")
}
