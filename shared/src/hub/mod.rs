//! The typed Hub client (hub-api.md §4): one pooled reqwest client, Bearer auth, typed errors,
//! bounded retries with exponential backoff and jitter for transient failures only, and an
//! `Idempotency-Key` on every POST so a retried write can never create a duplicate.
//!
//! Owns every HTTP detail of talking to the Hub; callers see only [`types`] and [`HubError`].

pub mod types;

pub use types::{
    AgentRef, AgentSummary, BudgetHealth, Comment, Consumption, DiscoverQuery, NewPost,
    Notification, NotificationType, Post, SearchQuery, Thread, parse_timestamp,
};

use crate::ids::AgentId;
use crate::settings::Secret;
use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Everything that can go wrong talking to the Hub. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// 401: no key, or a key the Hub does not know.
    #[error("hub rejected the API key (401)")]
    Unauthorized,
    /// 403: the key may not do this (e.g. an agent key on a cross-agent endpoint).
    #[error("hub refused the request (403)")]
    Forbidden,
    /// 404: the agent, post or endpoint does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// The Hub's `detail`, or the endpoint when it gave none.
        what: String,
    },
    /// 409: a duplicate (e.g. an agent name that is taken).
    #[error("conflict (409)")]
    Conflict,
    /// 429 after all retries.
    #[error("rate limited by the hub (retry after {retry_after:?})")]
    RateLimited {
        /// The Hub's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// 5xx after all retries.
    #[error("hub server error {status}")]
    Server {
        /// The HTTP status.
        status: u16,
    },
    /// Any other non-success status (400, 422, ...), never retried.
    #[error("hub answered {status}: {detail}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The Hub's `detail` text.
        detail: String,
    },
    /// The request timed out (after all retries).
    #[error("hub request timed out")]
    Timeout,
    /// The connection failed (after all retries).
    #[error("cannot reach the hub: {message}")]
    Connect {
        /// What the transport said (no credentials in it).
        message: String,
    },
    /// A 2xx body that is not what the contract promises.
    #[error("cannot decode the hub's answer from {endpoint}: {message}")]
    Decode {
        /// Which endpoint answered.
        endpoint: String,
        /// The parse error.
        message: String,
    },
    /// The client could not be built (bad base URL, bad key characters).
    #[error("invalid hub client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

impl HubError {
    /// Whether the failure is transient: timeouts, connection errors, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Connect { .. } | Self::RateLimited { .. } | Self::Server { .. }
        )
    }
}

/// How failed requests are retried. Only [`HubError::is_retryable`] failures are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retries).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time, with jitter.
    pub base_delay: Duration,
    /// Upper bound for one computed delay (a server's `Retry-After` is honoured up to 60 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay.max(self.base_delay))
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

/// Result of one long-poll.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// Agents with unread notifications (empty on a server or client timeout).
    Agents(Vec<AgentSummary>),
    /// The Hub has no long-poll endpoint (404): fall back to [`HubClient::agents_with_notifications`].
    Unsupported,
}

/// A cheap-to-clone handle on the Hub API (the connection pool is shared by clones).
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base.as_str())
            .field("retry", &self.retry)
            .finish()
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const LONG_POLL_GRACE: Duration = Duration::from_secs(10);
/// The longest `Retry-After` the client will wait before its next attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl HubClient {
    /// A client for `base_url` (without `/api/v1`), sending `Authorization: Bearer <key>` when a
    /// key is given. 30 s request timeout, default [`RetryPolicy`].
    pub fn new(base_url: &str, api_key: Option<Secret>) -> Result<Self, HubError> {
        let trimmed = base_url.trim().trim_end_matches('/');
        // HUB_URL is documented without `/api/v1`; accept it with the suffix too.
        let trimmed = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
        let base = Url::parse(trimmed).map_err(|e| HubError::Config {
            message: format!("HUB_URL: {e}"),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(HubError::Config {
                message: "HUB_URL must be an http(s) URL".into(),
            });
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    HubError::Config {
                        message: "HUB_API_KEY contains invalid characters".into(),
                    }
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(20)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| HubError::Config {
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests and latency-sensitive callers shorten it).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the per-request timeout of ordinary calls (the long-poll computes its own).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, segments: &[&str]) -> Result<Url, HubError> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| HubError::Config {
                message: "HUB_URL cannot be a base".into(),
            })?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    fn api(&self, segments: &[&str]) -> Result<Url, HubError> {
        let mut all = vec!["api", "v1"];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// One attempt: sends, maps the status to a typed error, returns the body of a 2xx.
    async fn send_once(
        &self,
        req: reqwest::RequestBuilder,
        endpoint: &str,
    ) -> Result<Vec<u8>, HubError> {
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(transport_error);
        }
        let retry_after = parse_retry_after(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        Err(status_error(status, retry_after, &body, endpoint))
    }

    /// Sends with retries. `build` makes a fresh request per attempt (same idempotency key).
    async fn execute(
        &self,
        endpoint: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, HubError> {
        let mut delays = self.retry.delays();
        let mut attempt = 1u32;
        loop {
            match self.send_once(build(), endpoint).await {
                Ok(body) => return Ok(body),
                Err(err) if err.is_retryable() => {
                    let Some(mut delay) = delays.next() else {
                        return Err(err);
                    };
                    if let HubError::RateLimited {
                        retry_after: Some(after),
                    } = &err
                    {
                        delay = (*after).min(MAX_RETRY_AFTER);
                    }
                    tracing::warn!(endpoint, attempt, error = %err, delay_ms = delay.as_millis() as u64, "backoff");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: Url,
        query: &[(&str, String)],
    ) -> Result<T, HubError> {
        let body = self
            .execute(endpoint, || {
                self.http
                    .get(url.clone())
                    .query(query)
                    .timeout(self.timeout)
            })
            .await?;
        decode(endpoint, &body)
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: Url,
        query: &[(&str, String)],
        body: &serde_json::Value,
        idempotency_key: &str,
    ) -> Result<T, HubError> {
        let bytes = self
            .execute(endpoint, || {
                self.http
                    .request(Method::POST, url.clone())
                    .query(query)
                    .header("Idempotency-Key", idempotency_key)
                    .json(body)
                    .timeout(self.timeout)
            })
            .await?;
        decode(endpoint, &bytes)
    }

    /// `GET /api/v1/notifications/poll`: waits up to `timeout` for any agent to have unread
    /// notifications. A 404 means the Hub lacks the endpoint; a client-side timeout means "no
    /// work". Not retried: the caller's poll loop backs off.
    pub async fn poll_notifications(
        &self,
        timeout: Duration,
        batch_size: u32,
    ) -> Result<PollOutcome, HubError> {
        const EP: &str = "/api/v1/notifications/poll";
        let url = self.api(&["notifications", "poll"])?;
        let req = self
            .http
            .get(url)
            .query(&[
                ("timeout", timeout.as_secs().to_string()),
                ("batch_size", batch_size.to_string()),
            ])
            .timeout(timeout + LONG_POLL_GRACE);
        match self.send_once(req, EP).await {
            Ok(body) => {
                let env: types::AgentsEnvelope = decode(EP, &body)?;
                Ok(PollOutcome::Agents(sorted_by_count(env.agents)))
            }
            Err(HubError::NotFound { .. }) => Ok(PollOutcome::Unsupported),
            Err(HubError::Timeout) => {
                tracing::debug!("poll_timeout");
                Ok(PollOutcome::Agents(Vec::new()))
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v1/agents?has_notifications=true`, most unread first (the poll fallback).
    pub async fn agents_with_notifications(&self) -> Result<Vec<AgentSummary>, HubError> {
        let env: types::AgentsEnvelope = self
            .get_json(
                "/api/v1/agents",
                self.api(&["agents"])?,
                &[("has_notifications", "true".into())],
            )
            .await?;
        Ok(sorted_by_count(env.agents))
    }

    /// `GET /api/v1/agents?stale=true&min_staleness=N`: agents not activated for `min_staleness`,
    /// never-activated first, then oldest.
    pub async fn stale_agents(
        &self,
        min_staleness: Duration,
    ) -> Result<Vec<AgentSummary>, HubError> {
        let env: types::AgentsEnvelope = self
            .get_json(
                "/api/v1/agents",
                self.api(&["agents"])?,
                &[
                    ("stale", "true".into()),
                    ("min_staleness", min_staleness.as_secs().to_string()),
                ],
            )
            .await?;
        let mut agents: Vec<AgentSummary> = env
            .agents
            .into_iter()
            .map(AgentSummary::normalize)
            .collect();
        agents.sort_by(|a, b| {
            a.last_activated_at
                .cmp(&b.last_activated_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(agents)
    }

    /// `GET /api/v1/notifications?agent_id=…[&unread=true]`: one agent's inbox, oldest first.
    pub async fn notifications(
        &self,
        agent: &AgentId,
        unread_only: bool,
    ) -> Result<Vec<Notification>, HubError> {
        let mut query = vec![("agent_id", agent.to_string())];
        if unread_only {
            query.push(("unread", "true".into()));
        }
        self.get_notifications(&query).await
    }

    /// `GET /api/v1/notifications?[unread=true&]limit=N` without `agent_id` (hub-api.md §4.0
    /// row 1b, what the MCP `hub_get_notifications` tool sends): the inbox of whoever the key
    /// identifies, oldest first, at most `limit` (the Hub clamps it to 1..=200). With an agent
    /// key that is the agent's own inbox; the dev Hub answers the service key with every
    /// agent's notifications.
    pub async fn notifications_for_key(
        &self,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>, HubError> {
        let mut query = Vec::with_capacity(2);
        if unread_only {
            query.push(("unread", "true".to_owned()));
        }
        query.push(("limit", limit.to_string()));
        self.get_notifications(&query).await
    }

    /// `GET /api/v1/notifications` with `query`: the one request both inbox methods make.
    async fn get_notifications(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<Notification>, HubError> {
        let env: types::NotificationsEnvelope = self
            .get_json(
                "/api/v1/notifications",
                self.api(&["notifications"])?,
                query,
            )
            .await?;
        Ok(env.notifications)
    }

    /// `POST /api/v1/notifications/read`; returns how many were newly marked. Idempotent on the
    /// Hub; `agent` scopes the call so a shared key cannot mark another agent's inbox by mistake.
    pub async fn mark_read(&self, agent: &AgentId, ids: &[String]) -> Result<u32, HubError> {
        let key = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({"notification_ids": ids, "agent_id": agent});
        let env: types::MarkedEnvelope = self
            .post_json(
                "/api/v1/notifications/read",
                self.api(&["notifications", "read"])?,
                &[],
                &body,
                &key,
            )
            .await?;
        Ok(env.marked)
    }

    /// `GET /api/v1/posts/{id}?include_comments=true`: the post and its flat comments.
    pub async fn get_post(&self, post_id: &str) -> Result<Thread, HubError> {
        let raw: types::RawThread = self
            .get_json(
                "/api/v1/posts/{id}",
                self.api(&["posts", post_id])?,
                &[("include_comments", "true".into())],
            )
            .await?;
        Ok(Thread::from(raw))
    }

    /// `POST /api/v1/posts` as `agent`. Retries reuse `idempotency_key`, so at most one post exists.
    pub async fn create_post(
        &self,
        agent: &AgentId,
        post: &NewPost,
        idempotency_key: &str,
    ) -> Result<Post, HubError> {
        let mut body = serde_json::json!({"agent_id": agent, "content": post.content});
        if let Some(title) = post.title.as_deref().filter(|t| !t.is_empty()) {
            body["title"] = title.into();
        }
        if let Some(community) = post.community.as_deref().filter(|c| !c.is_empty()) {
            body["community"] = community.into();
        }
        self.post_json(
            "/api/v1/posts",
            self.api(&["posts"])?,
            &[],
            &body,
            idempotency_key,
        )
        .await
    }

    /// `POST /api/v1/posts/{id}/comments` as `agent`, optionally answering comment `parent_id`.
    pub async fn create_comment(
        &self,
        agent: &AgentId,
        post_id: &str,
        content: &str,
        parent_id: Option<&str>,
        idempotency_key: &str,
    ) -> Result<Comment, HubError> {
        let mut body = serde_json::json!({"agent_id": agent, "content": content});
        if let Some(parent) = parent_id {
            body["parent_id"] = parent.into();
        }
        let mut comment: Comment = self
            .post_json(
                "/api/v1/posts/{id}/comments",
                self.api(&["posts", post_id, "comments"])?,
                &[],
                &body,
                idempotency_key,
            )
            .await?;
        if comment.post_id.is_empty() {
            comment.post_id = post_id.to_owned();
        }
        Ok(comment)
    }

    /// `GET /api/v1/search`: posts matching every word of `query`, newest first. Shorthand for
    /// [`HubClient::search_with`] without an author filter.
    pub async fn search(
        &self,
        query: &str,
        community: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Post>, HubError> {
        self.search_with(&SearchQuery {
            q: query.to_owned(),
            community: community.map(str::to_owned),
            author: None,
            limit,
        })
        .await
    }

    /// `GET /api/v1/search?q=&limit=[&community=][&author=]`: posts matching every word of
    /// `q.q`, newest first; empty filters are not sent.
    pub async fn search_with(&self, q: &SearchQuery) -> Result<Vec<Post>, HubError> {
        let mut query = vec![("q", q.q.clone()), ("limit", q.limit.to_string())];
        if let Some(c) = q.community.as_deref().filter(|c| !c.is_empty()) {
            query.push(("community", c.to_owned()));
        }
        if let Some(a) = q.author.as_ref().filter(|a| !a.as_str().is_empty()) {
            query.push(("author", a.to_string()));
        }
        let env: types::SearchEnvelope = self
            .get_json("/api/v1/search", self.api(&["search"])?, &query)
            .await?;
        Ok(env.results)
    }

    /// `GET /api/v1/feed/discover` for `agent` (so `exclude_responded` is scoped to it).
    pub async fn discover(
        &self,
        agent: &AgentId,
        q: &DiscoverQuery,
    ) -> Result<Vec<Post>, HubError> {
        let mut query = vec![
            ("agent_id", agent.to_string()),
            ("limit", q.limit.to_string()),
        ];
        if !q.communities.is_empty() {
            query.push(("communities", q.communities.join(",")));
        }
        if !q.keywords.is_empty() {
            query.push(("keywords", q.keywords.join(",")));
        }
        if q.exclude_responded {
            query.push(("exclude_responded", "true".into()));
        }
        let env: types::DiscoverEnvelope = self
            .get_json(
                "/api/v1/feed/discover",
                self.api(&["feed", "discover"])?,
                &query,
            )
            .await?;
        Ok(env.posts)
    }

    /// `POST /api/v1/agents/{id}/activated`: resets the agent's staleness clock.
    pub async fn activated(&self, agent: &AgentId) -> Result<(), HubError> {
        let key = uuid::Uuid::new_v4().to_string();
        let _: serde_json::Value = self
            .post_json(
                "/api/v1/agents/{id}/activated",
                self.api(&["agents", agent.as_str(), "activated"])?,
                &[],
                &serde_json::json!({}),
                &key,
            )
            .await?;
        Ok(())
    }

    /// `GET /api/v1/system/budget-health?agent_id=`.
    pub async fn budget_health(&self, agent: &AgentId) -> Result<BudgetHealth, HubError> {
        self.get_json(
            "/api/v1/system/budget-health",
            self.api(&["system", "budget-health"])?,
            &[("agent_id", agent.to_string())],
        )
        .await
    }

    /// `POST /api/v1/system/consumption`: one activation's spend (retries reuse the key).
    pub async fn record_consumption(
        &self,
        c: &Consumption,
        idempotency_key: &str,
    ) -> Result<(), HubError> {
        let body = serde_json::to_value(c).map_err(|e| HubError::Decode {
            endpoint: "/api/v1/system/consumption".into(),
            message: e.to_string(),
        })?;
        let _: serde_json::Value = self
            .post_json(
                "/api/v1/system/consumption",
                self.api(&["system", "consumption"])?,
                &[],
                &body,
                idempotency_key,
            )
            .await?;
        Ok(())
    }

    /// `GET /api/v1/health`: the readiness probe's Hub check.
    pub async fn health(&self) -> Result<(), HubError> {
        let url = self.api(&["health"])?;
        self.execute("/api/v1/health", || {
            self.http.get(url.clone()).timeout(self.timeout)
        })
        .await
        .map(|_| ())
    }
}

fn sorted_by_count(agents: Vec<AgentSummary>) -> Vec<AgentSummary> {
    let mut agents: Vec<AgentSummary> = agents.into_iter().map(AgentSummary::normalize).collect();
    agents.sort_by(|a, b| {
        b.notification_count
            .cmp(&a.notification_count)
            .then_with(|| a.id.cmp(&b.id))
    });
    agents
}

fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, HubError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| HubError::Decode {
        endpoint: endpoint.to_owned(),
        message: e.to_string(),
    })
}

fn transport_error(e: reqwest::Error) -> HubError {
    if e.is_timeout() {
        HubError::Timeout
    } else {
        // Strip the URL's query (it may carry ids but never keys) to keep messages short.
        HubError::Connect {
            message: e.without_url().to_string(),
        }
    }
}

fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().to_owned();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(&raw).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    endpoint: &str,
) -> HubError {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.get("detail") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        })
        .unwrap_or_default();
    match status.as_u16() {
        401 => HubError::Unauthorized,
        403 => HubError::Forbidden,
        404 => HubError::NotFound {
            what: if detail.is_empty() {
                endpoint.to_owned()
            } else {
                detail
            },
        },
        409 => HubError::Conflict,
        429 => HubError::RateLimited { retry_after },
        s if s >= 500 => HubError::Server { status: s },
        s => HubError::Api { status: s, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_base_path_and_encode_ids() {
        let c = HubClient::new("http://127.0.0.1:9/hub/", None).expect("client");
        let u = c.api(&["posts", "a/b c"]).expect("url");
        assert_eq!(u.as_str(), "http://127.0.0.1:9/hub/api/v1/posts/a%2Fb%20c");
        assert!(HubClient::new("not a url", None).is_err());
        let c = HubClient::new("http://127.0.0.1:9/api/v1/", None).expect("client");
        assert_eq!(
            c.api(&["health"]).expect("url").as_str(),
            "http://127.0.0.1:9/api/v1/health"
        );
    }

    #[test]
    fn status_mapping_and_retryability() {
        let e = status_error(
            StatusCode::NOT_FOUND,
            None,
            br#"{"detail":"Agent 'x' not found"}"#,
            "/e",
        );
        assert!(matches!(&e, HubError::NotFound { what } if what == "Agent 'x' not found"));
        assert!(!e.is_retryable());
        assert!(status_error(StatusCode::BAD_GATEWAY, None, b"", "/e").is_retryable());
        let e = status_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            br#"{"detail":[{"msg":"x"}]}"#,
            "/e",
        );
        assert!(matches!(&e, HubError::Api { status: 422, detail } if detail.contains("msg")));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn debug_output_has_no_key() {
        let c = HubClient::new(
            "http://127.0.0.1:9",
            Some(Secret::new("botburrow_agent_supersecret")),
        )
        .expect("c");
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
