//! The per-process HTTP server: `/metrics` (Prometheus text), `/health` (alive) and `/ready`
//! (named checks; 503 naming the first failing one). Binaries may merge extra routes into it.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One readiness check: a name operators see and an async probe returning `Err(reason)`.
#[derive(Clone)]
pub struct ReadyCheck {
    /// Shown in the 503 body, e.g. `valkey`.
    pub name: &'static str,
    probe: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl ReadyCheck {
    /// Builds a check from a closure returning a future.
    pub fn new<F, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name, probe: Arc::new(move || Box::pin(f())) }
    }

    /// Runs the probe with a 2 s bound so a hung dependency reads as not ready, not as a hung probe.
    pub async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(std::time::Duration::from_secs(2), (self.probe)()).await {
            Ok(r) => r,
            Err(_) => Err("timed out after 2s".into()),
        }
    }
}

struct HealthState {
    registry: Arc<std::sync::Mutex<Registry>>,
    checks: Vec<ReadyCheck>,
}

/// A Prometheus registry shared by every component of one process.
pub type SharedRegistry = Arc<std::sync::Mutex<Registry>>;

/// A fresh shared registry.
pub fn new_registry() -> SharedRegistry {
    Arc::new(std::sync::Mutex::new(Registry::default()))
}

/// Renders the registry in the Prometheus/OpenMetrics text format.
pub fn render_metrics(registry: &SharedRegistry) -> String {
    let mut out = String::new();
    let reg = match registry.lock() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// The health router, so callers can merge their own routes before serving.
pub fn router(registry: SharedRegistry, checks: Vec<ReadyCheck>) -> Router {
    let state = Arc::new(HealthState { registry, checks });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))) }))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        render_metrics(&state.registry),
    )
}

async fn ready(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    let mut passed = Vec::new();
    for check in &state.checks {
        if let Err(reason) = check.run().await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "not ready", "failed": check.name, "reason": reason})),
            );
        }
        passed.push(check.name);
    }
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready", "checks": passed})))
}

/// Binds `addr` and serves `router` until `shutdown` is cancelled. Returns the bound address
/// (useful with port 0) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "health server failed");
        }
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn ready_names_the_failing_check_and_metrics_render() {
        let registry = new_registry();
        let c: Counter = Counter::default();
        registry.lock().expect("lock").register("botburrow_test_things", "things", c.clone());
        c.inc();
        let checks = vec![
            ReadyCheck::new("valkey", || async { Ok(()) }),
            ReadyCheck::new("hub", || async { Err("connection refused".to_string()) }),
        ];
        let token = CancellationToken::new();
        let (addr, task) = serve("127.0.0.1:0".parse().expect("addr"), router(registry, checks), token.clone())
            .await
            .expect("bind");
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let r = client.get(format!("{base}/health")).send().await.expect("health");
        assert_eq!(r.status(), 200);
        let r = client.get(format!("{base}/ready")).send().await.expect("ready");
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["failed"], "hub");
        let text = client.get(format!("{base}/metrics")).send().await.expect("m").text().await.expect("t");
        assert!(text.contains("botburrow_test_things_total 1"), "{text}");
        token.cancel();
        task.await.expect("join");
    }
}
