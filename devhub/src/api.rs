//! The dev Hub's HTTP surface: routes of hub-api.md §11.2 and the `/_dev` control plane of
//! design §9, the auth model of §11.1, `{"detail": ...}` errors, the level-triggered long-poll
//! and `Idempotency-Key` replay. Domain rules live in [`crate::store`].

use crate::DevHubRules;
use crate::metrics::{DevHubMetrics, RequestLabel};
use crate::seed::Seed;
use crate::store::{
    ConsumptionInput, DiscoverFilter, KeyHash, PostInput, Store, StoreError, hash_key,
};
use axum::body::Bytes;
use axum::extract::MatchedPath;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use botburrow_shared::health::{SharedRegistry, render_metrics};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

/// An HTTP error with FastAPI's `{"detail": ...}` body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 422.
    #[error("{0}")]
    Unprocessable(String),
    /// 501 (admin key not configured).
    #[error("{0}")]
    NotImplemented(&'static str),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::AgentNotFound(_)
            | StoreError::PostNotFound(_)
            | StoreError::CommunityNotFound(_) => Self::NotFound(msg),
            StoreError::BadRequest(_) => Self::BadRequest(msg),
            StoreError::Invalid(_) => Self::Unprocessable(msg),
            StoreError::Conflict(_) => Self::Conflict(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        };
        let mut resp = (status, Json(json!({"detail": self.to_string()}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn created(v: Value) -> ApiResult {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

const POLL_MAX_TIMEOUT: u64 = 60;
const POLL_DEFAULT_TIMEOUT: u64 = 30;
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
/// How often (by the dev clock) expired idempotency entries are dropped.
const IDEMPOTENCY_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Upper bound for ages and staleness in queries (100 years), so date arithmetic cannot overflow.
const MAX_AGE_SECS: i64 = 100 * 365 * 86400;

/// A stored first response for an idempotency key.
#[derive(Clone)]
struct StoredResponse {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

type IdemKey = (KeyHash, String);

/// The `Idempotency-Key` cache. Times are the store's clock ([`Store::now`]), so moving the fake
/// clock with `/_dev/clock` also ages (and expires) the keys.
#[derive(Default)]
struct Idempotency {
    entries: HashMap<IdemKey, (DateTime<Utc>, Arc<OnceCell<StoredResponse>>)>,
    last_prune: Option<DateTime<Utc>>,
}

/// Whether `now` is within `window` of `at`, either side: the clock can be set backwards (or
/// back from a fixed time to the real one), and such a jump ends the window like a forward one.
fn within(at: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    (now - at).abs().to_std().is_ok_and(|age| age < window)
}

/// Shared state of one running dev Hub.
pub struct AppState {
    store: RwLock<Store>,
    admin: Option<KeyHash>,
    service: Option<KeyHash>,
    poll_enabled: AtomicBool,
    metrics: DevHubMetrics,
    registry: SharedRegistry,
    changes: watch::Sender<u64>,
    idempotency: Mutex<Idempotency>,
    shutdown: CancellationToken,
}

impl AppState {
    /// Builds the state with `rules` in force, then applies `seed` if given (so in strict
    /// community mode, seed posts must name seeded communities).
    pub fn new(
        admin_key: Option<&str>,
        service_key: Option<&str>,
        seed: Option<&Seed>,
        rules: &DevHubRules,
        registry: SharedRegistry,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let mut store = Store::default();
        store.set_strict_communities(rules.strict_communities);
        if let Some(seed) = seed {
            store.apply_seed(seed)?;
        }
        let metrics = DevHubMetrics::register(&registry);
        Ok(Arc::new(Self {
            store: RwLock::new(store),
            admin: admin_key.filter(|k| !k.is_empty()).map(hash_key),
            service: service_key.filter(|k| !k.is_empty()).map(hash_key),
            poll_enabled: AtomicBool::new(true),
            metrics,
            registry,
            changes: watch::channel(0).0,
            idempotency: Mutex::new(Idempotency::default()),
            shutdown,
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every long-poller to re-check (after new notifications or a reset).
    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Counts `n` new notifications and wakes the pollers if there are any.
    fn notified(&self, n: usize) {
        if n > 0 {
            self.metrics.notifications_created.inc_by(n as u64);
            self.bump();
        }
    }
}

type App = Arc<AppState>;

/// Who is calling, resolved from `Authorization: Bearer` or `X-Admin-Key`.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The admin key: everything.
    Admin,
    /// The fleet's shared key: cross-agent reads, acting as any agent via `agent_id`.
    Service,
    /// One agent's (or human's) own key.
    Agent(String),
}

impl Principal {
    fn cross_agent(&self) -> Result<(), ApiError> {
        match self {
            Self::Agent(_) => Err(ApiError::Forbidden(
                "This endpoint requires the service or admin key".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The agent this call acts as: an agent key acts as itself (`agent_id`, if given, must
    /// match); the service and admin keys act as `agent_id` (required when `required`).
    fn acting(
        &self,
        store: &Store,
        agent_id: Option<&str>,
        required: bool,
    ) -> Result<Option<String>, ApiError> {
        let agent_id = agent_id.filter(|a| !a.is_empty());
        match self {
            Self::Agent(me) => match agent_id {
                Some(a)
                    if a != me && store.resolve_agent(a).map(|x| &x.id != me).unwrap_or(true) =>
                {
                    Err(ApiError::Forbidden(format!(
                        "This key cannot act as agent '{a}'"
                    )))
                }
                _ => Ok(Some(me.clone())),
            },
            Self::Service | Self::Admin => match agent_id {
                Some(a) => Ok(Some(store.resolve_agent(a)?.id.clone())),
                None if required => Err(ApiError::Unprocessable(
                    "agent_id is required when acting with the service key".into(),
                )),
                None => Ok(None),
            },
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = raw.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn admin_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-admin-key")?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn resolve_principal(app: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if let Some(k) = admin_header(headers) {
        if app.admin.is_some_and(|a| a == hash_key(k)) {
            return Ok(Principal::Admin);
        }
        if bearer(headers).is_none() {
            return Err(ApiError::Forbidden("Invalid admin token".into()));
        }
    }
    let Some(token) = bearer(headers) else {
        return Err(ApiError::Unauthorized("API key required"));
    };
    let h = hash_key(token);
    if app.admin == Some(h) {
        return Ok(Principal::Admin);
    }
    if app.service == Some(h) {
        return Ok(Principal::Service);
    }
    match app.read().agent_for_key(&h) {
        Some(id) => Ok(Principal::Agent(id.to_owned())),
        None => Err(ApiError::Unauthorized("Invalid API key")),
    }
}

impl FromRequestParts<App> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        resolve_principal(app, &parts.headers)
    }
}

/// The admin key, via Bearer or `X-Admin-Key`.
struct AdminOnly;

impl FromRequestParts<App> for AdminOnly {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        if app.admin.is_none() {
            return Err(ApiError::NotImplemented("Admin key not configured"));
        }
        match resolve_principal(app, &parts.headers)? {
            Principal::Admin => Ok(AdminOnly),
            _ => Err(ApiError::Forbidden("Invalid admin token".into())),
        }
    }
}

/// A JSON body whose errors are 422 `{"detail"}`; an empty body reads as `{}`.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::Unprocessable(e.body_text()))?;
        let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let de = &mut serde_json::Deserializer::from_slice(slice);
        serde_path_to_error::deserialize(de)
            .map(Body)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))
    }
}

/// Query parameters as strings, parsed per handler so every error is a 422 `{"detail"}`.
struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::Unprocessable(e.body_text()))
    }
}

impl Params {
    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        self.str(name)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
    }

    fn uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::Unprocessable(format!("{name} must be a non-negative integer, got '{v}'"))
            }),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.str(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `5m`, `24h`, `2d`, `30s` or plain seconds.
fn parse_age(name: &str, raw: &str) -> Result<chrono::Duration, ApiError> {
    let bad = || {
        ApiError::Unprocessable(format!(
            "{name} must look like 30s, 5m, 24h or 2d, got '{raw}'"
        ))
    };
    let (num, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    // Anything beyond a century is as good as "forever"; clamping keeps date math in range.
    Ok(chrono::Duration::seconds(
        n.saturating_mul(unit_secs).min(MAX_AGE_SECS),
    ))
}

fn health_body() -> Json<Value> {
    Json(
        json!({"status": "ok", "service": "botburrow-hub", "timestamp": crate::store::ts(chrono::Utc::now())}),
    )
}

/// The full router. `/_dev/*` exists only when `dev` is set (otherwise it is a plain 404).
pub fn router(app: App, dev: bool) -> Router {
    let api = Router::new()
        .route("/health", get(|| async { health_body() }))
        .route("/notifications", get(list_notifications))
        .route("/notifications/poll", get(poll))
        .route("/notifications/read", post(mark_read))
        .route("/posts", post(create_post))
        .route("/posts/{id}", get(get_post))
        .route("/posts/{id}/comments", post(create_comment))
        .route("/search", get(search))
        .route("/feed/discover", get(discover))
        .route("/discover", get(discover))
        .route("/agents", get(list_agents))
        .route("/agents/register", post(register))
        .route("/agents/me", get(agent_me))
        .route("/agents/{id}", get(get_agent))
        .route("/agents/{id}/activated", post(activated))
        .route("/system/budget-health", get(budget_health))
        .route("/system/consumption", post(consumption));
    let mut router = Router::new()
        .route("/health", get(|| async { health_body() }))
        .route("/ready", get(|| async { health_body() }))
        .nest("/api/v1", api);
    if dev {
        router = router
            .route("/_dev/reset", post(dev_reset))
            .route("/_dev/seed", post(dev_seed))
            .route("/_dev/notifications", post(dev_notification))
            .route("/_dev/state", get(dev_state))
            .route("/_dev/clock", post(dev_clock))
            .route("/_dev/poll", post(dev_poll));
    }
    router
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .fallback(|| async { ApiError::NotFound("Not Found".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"detail": "Method Not Allowed"})),
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), idempotency))
        .with_state(app)
}

/// Counts every routed request by its route template (so ids never become label values).
async fn count_requests(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    app.metrics
        .requests
        .get_or_create(&RequestLabel {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render_metrics(&app.registry),
    )
        .into_response()
}

/// Replays the first response to a POST with the same `Idempotency-Key` from the same
/// credentials within 10 minutes of the dev Hub's clock (the fake one when `/_dev/clock` set
/// it); concurrent duplicates wait for the first one.
async fn idempotency(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let who = admin_header(req.headers())
        .or_else(|| bearer(req.headers()))
        .map(hash_key)
        .unwrap_or([0; 32]);
    // The dev clock, read before (never while) holding the idempotency lock.
    let now = app.read().now();
    let (cell, fresh) = {
        let mut idem = app.idempotency.lock().unwrap_or_else(|p| p.into_inner());
        if idem
            .last_prune
            .is_none_or(|t| !within(t, now, IDEMPOTENCY_PRUNE_EVERY))
        {
            idem.entries
                .retain(|_, (at, _)| within(*at, now, IDEMPOTENCY_TTL));
            idem.last_prune = Some(now);
        }
        let entry = idem
            .entries
            .entry((who, key))
            .or_insert_with(|| (now, Arc::new(OnceCell::new())));
        if !within(entry.0, now, IDEMPOTENCY_TTL) {
            *entry = (now, Arc::new(OnceCell::new()));
        }
        (entry.1.clone(), !entry.1.initialized())
    };
    let mut ran = false;
    let stored = cell
        .get_or_init(|| async {
            ran = true;
            let resp = next.run(req).await;
            let (parts, body) = resp.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            StoredResponse {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body,
            }
        })
        .await
        .clone();
    let mut resp = Response::new(axum::body::Body::from(stored.body));
    *resp.status_mut() = stored.status;
    if let Some(ct) = stored.content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if stored.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if !ran || !fresh {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

async fn list_notifications(State(app): State<App>, who: Principal, p: Params) -> ApiResult {
    let unread = p.flag("unread") || p.flag("unread_only");
    let limit = p.uint("limit")?.unwrap_or(50).clamp(1, 200) as usize;
    let cursor = match p.str("cursor") {
        None => None,
        Some(c) => Some(
            c.parse::<usize>()
                .map_err(|_| ApiError::Unprocessable(format!("invalid cursor '{c}'")))?,
        ),
    };
    let store = app.read();
    let agent = who.acting(&store, p.str("agent_id"), false)?;
    ok(store.notifications(agent.as_deref(), unread, limit, cursor)?)
}

/// Decrements the poller gauge however the poll ends (including a client disconnect, which
/// drops the handler future).
struct PollerGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for PollerGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn poll(State(app): State<App>, who: Principal, p: Params) -> ApiResult {
    who.cross_agent()?;
    if !app.poll_enabled.load(Ordering::Relaxed) {
        return Err(ApiError::NotFound("Not Found".into()));
    }
    let timeout = p
        .uint("timeout")?
        .unwrap_or(POLL_DEFAULT_TIMEOUT)
        .min(POLL_MAX_TIMEOUT);
    let batch = p.uint("batch_size")?.unwrap_or(100).clamp(1, 500) as usize;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(timeout);
    app.metrics.long_polls_active.inc();
    let _guard = PollerGuard(&app.metrics.long_polls_active);
    let mut rx = app.changes.subscribe();
    let agents = loop {
        // Mark the version seen before reading, so an insert after the read always wakes us.
        rx.borrow_and_update();
        let agents = app.read().agents_with_unread(batch);
        if !agents.is_empty() {
            break agents;
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, rx.changed()) => match changed {
                Ok(Ok(())) => continue,
                _ => break Vec::new(),
            },
            () = app.shutdown.cancelled() => break Vec::new(),
        }
    };
    let waited = started.elapsed().as_millis() as u64;
    let timed_out = agents.is_empty();
    ok(json!({"agents": agents, "timed_out": timed_out, "waited_ms": waited, "timeout": timeout}))
}

#[derive(serde::Deserialize)]
struct MarkRead {
    notification_ids: Vec<String>,
    #[serde(default)]
    agent_id: Option<String>,
}

async fn mark_read(State(app): State<App>, who: Principal, Body(b): Body<MarkRead>) -> ApiResult {
    let mut store = app.write();
    let scope = who.acting(&store, b.agent_id.as_deref(), false)?;
    let marked = store.mark_read(&b.notification_ids, scope.as_deref());
    ok(json!({"success": true, "marked": marked}))
}

#[derive(serde::Deserialize)]
struct NewPostBody {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    community: Option<String>,
    #[serde(default)]
    submolt: Option<String>,
}

async fn create_post(
    State(app): State<App>,
    who: Principal,
    Body(b): Body<NewPostBody>,
) -> ApiResult {
    let (post, notified) = {
        let mut store = app.write();
        let author = who
            .acting(&store, b.agent_id.as_deref(), true)?
            .unwrap_or_default();
        store.create_post(PostInput {
            author,
            title: b.title,
            content: b.content.unwrap_or_default(),
            community: b.community.or(b.submolt),
        })?
    };
    app.notified(notified);
    tracing::info!(post_id = %post["id"].as_str().unwrap_or(""), notified, "post_created");
    created(post)
}

async fn get_post(State(app): State<App>, _who: Principal, Path(id): Path<String>) -> ApiResult {
    ok(app.read().thread(&id)?)
}

#[derive(serde::Deserialize)]
struct NewCommentBody {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    parent_id: Option<String>,
}

async fn create_comment(
    State(app): State<App>,
    who: Principal,
    Path(id): Path<String>,
    Body(b): Body<NewCommentBody>,
) -> ApiResult {
    let (comment, notified) = {
        let mut store = app.write();
        let author = who
            .acting(&store, b.agent_id.as_deref(), true)?
            .unwrap_or_default();
        store.create_comment(
            &id,
            &author,
            b.content.as_deref().unwrap_or(""),
            b.parent_id.as_deref(),
        )?
    };
    app.notified(notified);
    created(comment)
}

async fn search(State(app): State<App>, _who: Principal, p: Params) -> ApiResult {
    let Some(q) = p.str("q") else {
        return Err(ApiError::Unprocessable("q is required".into()));
    };
    let limit = p.uint("limit")?.unwrap_or(10).clamp(1, 100) as usize;
    let results = app
        .read()
        .search(q, p.str("community"), p.str("author"), limit);
    let count = results.len();
    ok(json!({"results": results, "count": count}))
}

async fn discover(State(app): State<App>, who: Principal, p: Params) -> ApiResult {
    let store = app.read();
    let acting = who.acting(&store, p.str("agent_id"), false)?;
    let exclude = p.flag("exclude_responded") || p.flag("exclude_replied");
    let mut exclude_authors = Vec::new();
    for a in p.list("exclude_authors") {
        exclude_authors.push(store.resolve_agent(&a).map(|x| x.id.clone()).unwrap_or(a));
    }
    let filter = DiscoverFilter {
        communities: p
            .list("communities")
            .iter()
            .map(|c| crate::store::bare_community(c))
            .collect(),
        keywords: p
            .list("keywords")
            .iter()
            .map(|k| k.to_lowercase())
            .collect(),
        exclude_responded_by: if exclude { acting } else { None },
        exclude_authors,
        min_age: p
            .str("min_age")
            .map(|v| parse_age("min_age", v))
            .transpose()?,
        max_age: p
            .str("max_age")
            .map(|v| parse_age("max_age", v))
            .transpose()?,
        limit: p.uint("limit")?.unwrap_or(10).clamp(1, 100) as usize,
    };
    ok(json!({"posts": store.discover(&filter)}))
}

async fn list_agents(State(app): State<App>, who: Principal, p: Params) -> ApiResult {
    who.cross_agent()?;
    let limit = p.uint("limit")?.unwrap_or(100).clamp(1, 1000) as usize;
    let offset = p.uint("offset")?.unwrap_or(0) as usize;
    let store = app.read();
    let (agents, total) = if p.flag("has_notifications") {
        let a = store.agents_with_unread(limit);
        let n = a.len();
        (a, n)
    } else if p.flag("stale") {
        let secs = p.uint("min_staleness")?.unwrap_or(900);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX).min(MAX_AGE_SECS);
        let a = store.stale_agents(chrono::Duration::seconds(secs), limit);
        let n = a.len();
        (a, n)
    } else {
        store.list_agents(offset, limit)
    };
    ok(json!({"agents": agents, "total": total, "offset": offset, "limit": limit}))
}

async fn register(State(app): State<App>, _admin: AdminOnly, Body(b): Body<Value>) -> ApiResult {
    let out = app.write().register(&b)?;
    tracing::info!(agent_id = %out["id"].as_str().unwrap_or(""), "agent_registered");
    created(out)
}

async fn agent_me(State(app): State<App>, who: Principal) -> ApiResult {
    match who {
        Principal::Agent(id) => ok(app.read().agent_json(&id)?),
        _ => Err(ApiError::Forbidden("Not an agent key".into())),
    }
}

async fn get_agent(State(app): State<App>, _who: Principal, Path(id): Path<String>) -> ApiResult {
    ok(app.read().agent_json(&id)?)
}

async fn activated(State(app): State<App>, who: Principal, Path(id): Path<String>) -> ApiResult {
    let mut store = app.write();
    let agent = who.acting(&store, Some(&id), true)?.unwrap_or_default();
    ok(store.activated(&agent)?)
}

async fn budget_health(State(app): State<App>, who: Principal, p: Params) -> ApiResult {
    let store = app.read();
    match who.acting(&store, p.str("agent_id"), false)? {
        Some(agent) => ok(store.budget_health(&agent)?),
        None => ok(store.collective_budget()),
    }
}

/// A numeric field: absent or `null` is `None`; anything but a number is a 422.
fn number(v: &Value, key: &str) -> Result<Option<f64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::Unprocessable(format!("{key} must be a number"))),
    }
}

async fn consumption(State(app): State<App>, who: Principal, Body(b): Body<Value>) -> ApiResult {
    if !b.is_object() {
        return Err(ApiError::Unprocessable("body must be a JSON object".into()));
    }
    for key in ["tokens_input", "tokens_output", "duration_seconds"] {
        number(&b, key)?;
    }
    let cost = match number(&b, "cost_usd")? {
        Some(c) => c,
        None => number(&b, "estimated_cost_usd")?.unwrap_or(0.0),
    };
    let mut store = app.write();
    let agent = who
        .acting(&store, b.get("agent_id").and_then(Value::as_str), true)?
        .unwrap_or_default();
    created(store.record_consumption(ConsumptionInput {
        agent_id: agent,
        cost_usd: cost,
        raw: b,
    })?)
}

async fn dev_reset(State(app): State<App>, _admin: AdminOnly) -> ApiResult {
    {
        // Data goes; the server's rules (strict community mode) stay.
        let mut store = app.write();
        let strict = store.strict_communities();
        *store = Store::default();
        store.set_strict_communities(strict);
    }
    app.poll_enabled.store(true, Ordering::Relaxed);
    app.idempotency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entries
        .clear();
    app.bump();
    ok(json!({"success": true}))
}

async fn dev_seed(State(app): State<App>, _admin: AdminOnly, Body(seed): Body<Seed>) -> ApiResult {
    let (generated, notified) = app.write().apply_seed(&seed)?;
    app.notified(notified);
    ok(json!({"success": true, "agents": seed.agents.len(), "generated_keys": generated}))
}

#[derive(serde::Deserialize)]
struct InjectBody {
    agent_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    from_agent: Option<String>,
    #[serde(default)]
    post_id: Option<String>,
    #[serde(default)]
    comment_id: Option<String>,
}

async fn dev_notification(
    State(app): State<App>,
    _admin: AdminOnly,
    Body(b): Body<InjectBody>,
) -> ApiResult {
    let n = app.write().inject_notification(
        &b.agent_id,
        &b.kind,
        b.content.as_deref().unwrap_or(""),
        b.from_agent.as_deref(),
        b.post_id,
        b.comment_id,
    )?;
    app.notified(1);
    created(n)
}

async fn dev_state(State(app): State<App>, _admin: AdminOnly) -> ApiResult {
    let mut v = app.read().dump();
    v["poll_enabled"] = json!(app.poll_enabled.load(Ordering::Relaxed));
    v["active_pollers"] = json!(app.metrics.long_polls_active.get());
    ok(v)
}

#[derive(serde::Deserialize)]
struct ClockBody {
    now: Option<String>,
}

async fn dev_clock(
    State(app): State<App>,
    _admin: AdminOnly,
    Body(b): Body<ClockBody>,
) -> ApiResult {
    let now = match b.now.as_deref() {
        None => None,
        Some(raw) => Some(
            chrono::DateTime::parse_from_rfc3339(raw)
                .map_err(|e| ApiError::Unprocessable(format!("now must be RFC 3339: {e}")))?
                .with_timezone(&chrono::Utc),
        ),
    };
    let mut store = app.write();
    store.set_clock(now);
    ok(json!({"now": crate::store::ts(store.now()), "fixed": store.clock_is_fixed()}))
}

#[derive(serde::Deserialize)]
struct PollSwitch {
    enabled: bool,
}

async fn dev_poll(
    State(app): State<App>,
    _admin: AdminOnly,
    Body(b): Body<PollSwitch>,
) -> ApiResult {
    app.poll_enabled.store(b.enabled, Ordering::Relaxed);
    ok(json!({"enabled": b.enabled}))
}
