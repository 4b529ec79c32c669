//! `POST /api/v1/cache/invalidate[?agent=ID]`: lets the agent-definitions pipeline drop cached
//! agent configs (`cache:agent:{id}`, or all of them) right after a push. Requires
//! `Authorization: Bearer $CACHE_WEBHOOK_TOKEN`; without a configured token the route does not
//! exist (404), which is logged once at startup.

use crate::store::KeyStore;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use botburrow_shared::ids::AgentId;
use botburrow_shared::settings::Secret;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Path of the webhook.
pub const PATH: &str = "/api/v1/cache/invalidate";

struct WebhookState {
    token: Secret,
    store: Option<KeyStore>,
}

#[derive(Debug, Deserialize)]
struct InvalidateQuery {
    agent: Option<String>,
}

/// The webhook route, or an empty router (so the path answers 404) when no token is configured.
pub fn router(token: Option<Secret>, store: Option<KeyStore>) -> Router {
    match token {
        Some(token) => {
            let state = Arc::new(WebhookState { token, store });
            Router::new()
                .route(PATH, post(invalidate))
                .with_state(state)
        }
        None => {
            tracing::warn!(
                path = PATH,
                "cache_webhook_disabled: CACHE_WEBHOOK_TOKEN is not set, the route answers 404"
            );
            Router::new()
        }
    }
}

/// Compares without an early exit so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim().as_bytes(), token.expose().as_bytes()))
}

async fn invalidate(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    Query(q): Query<InvalidateQuery>,
) -> Response {
    if !authorized(&headers, &state.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"detail": "missing or invalid bearer token"})),
        )
            .into_response();
    }
    let agent = q
        .agent
        .filter(|a| !a.trim().is_empty())
        .map(|a| AgentId::new(a.trim()));
    let Some(store) = state.store.as_ref() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"detail": "no shared config cache (Valkey) configured"})),
        )
            .into_response();
    };
    let target = agent
        .as_ref()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "all".to_owned());
    match store.invalidate_agent_cache(agent.as_ref()).await {
        Ok(deleted) => {
            tracing::info!(invalidated = %target, deleted, "cache_invalidated");
            Json(json!({"status": "ok", "invalidated": target})).into_response()
        }
        Err(e) => {
            tracing::warn!(invalidated = %target, error = %e, "cache_invalidation_failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"detail": e.to_string()})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_must_match_exactly() {
        let token = Secret::new("s3cret");
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &token));
        h.insert(AUTHORIZATION, "Bearer s3cre".parse().expect("hv"));
        assert!(!authorized(&h, &token));
        h.insert(AUTHORIZATION, "Basic s3cret".parse().expect("hv"));
        assert!(!authorized(&h, &token));
        h.insert(AUTHORIZATION, "Bearer s3cret".parse().expect("hv"));
        assert!(authorized(&h, &token));
    }
}
