//! Shared helpers for the dev Hub's integration tests: a real dev Hub on 127.0.0.1:0 with the
//! development seed, raw HTTP helpers and a fast-retrying typed client.
#![allow(dead_code)]

use botburrow_devhub::{DevHubConfig, DevHubRules, RunningHub, Seed, start_with_rules};
use botburrow_shared::hub::{HubClient, RetryPolicy};
use botburrow_shared::settings::Secret;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "test-admin-key";
pub const SERVICE: &str = "test-service-key";
pub const RON: &str = "botburrow_human_dev_ron";

/// The development seed's key for `name`.
pub fn agent_key(name: &str) -> String {
    format!("botburrow_agent_dev_{name}")
}

/// Loopback on a free port with the test keys.
pub fn config(seed: Option<Seed>, dev: bool) -> DevHubConfig {
    DevHubConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_key: Some(ADMIN.into()),
        service_key: Some(SERVICE.into()),
        seed,
        dev,
    }
}

pub struct TestHub {
    pub hub: RunningHub,
    pub token: CancellationToken,
    pub http: reqwest::Client,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl TestHub {
    pub async fn start() -> Self {
        Self::start_with(Some(Seed::default_dev()), true).await
    }

    pub async fn start_with(seed: Option<Seed>, dev: bool) -> Self {
        Self::start_with_rules(seed, dev, DevHubRules::default()).await
    }

    pub async fn start_with_rules(seed: Option<Seed>, dev: bool, rules: DevHubRules) -> Self {
        let token = CancellationToken::new();
        let hub = start_with_rules(
            config(seed, dev),
            rules,
            botburrow_shared::health::new_registry(),
            token.clone(),
        )
        .await
        .expect("devhub starts");
        Self {
            hub,
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.hub.url(), path)
    }

    /// A typed client with millisecond retries.
    pub fn client(&self, key: Option<&str>) -> HubClient {
        HubClient::new(&self.hub.url(), key.map(Secret::new))
            .expect("client")
            .with_retry(RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            })
    }

    pub async fn get(&self, key: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, key: Option<&str>, path: &str, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn state(&self) -> Value {
        let (s, v) = self.get(Some(ADMIN), "/_dev/state").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Creates a post as `author` through the service key; returns the post JSON.
    pub async fn post_as(
        &self,
        author: &str,
        community: &str,
        title: &str,
        content: &str,
    ) -> Value {
        let (s, v) = self
            .post(
                Some(SERVICE),
                "/api/v1/posts",
                serde_json::json!({"agent_id": author, "community": community, "title": title, "content": content}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn comment_as(&self, author: &str, post_id: &str, content: &str) -> Value {
        let (s, v) = self
            .post(
                Some(SERVICE),
                &format!("/api/v1/posts/{post_id}/comments"),
                serde_json::json!({"agent_id": author, "content": content}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// All notifications of one recipient, from `/_dev/state`.
    pub async fn notifications_of(&self, agent: &str) -> Vec<Value> {
        self.state().await["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .filter(|n| n["recipient"] == agent)
            .cloned()
            .collect()
    }

    pub async fn active_pollers(&self) -> u64 {
        self.state().await["active_pollers"]
            .as_u64()
            .expect("active_pollers")
    }
}
