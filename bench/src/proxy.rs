//! A fault-injecting HTTP proxy on 127.0.0.1, put between the fleet and the dev Hub or the mock
//! LLM for the hub-*/llm-* scenarios. Neither upstream has to change: the proxy forwards every
//! request unchanged until a fault is switched on, then answers with the upstream's own error shape
//! (`{"detail"}` for the Hub, OpenAI's `{"error"}` for the LLM, `Retry-After` on 429) or holds the
//! request unanswered (hang). A request hung when the fault clears is answered 503, as if the
//! stuck upstream had been restarted and dropped it.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// What the proxy does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Fault {
    /// Forward it.
    None,
    /// Answer this status without forwarding.
    Status(u16),
    /// Never answer while the fault lasts.
    Hang,
}

/// Which error body the proxy imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The Hub: FastAPI's `{"detail": ...}`.
    Hub,
    /// An OpenAI-compatible API: `{"error": {"message","type","param","code"}}`.
    OpenAi,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding 127.0.0.1:0 failed.
    #[error("bind proxy: {0}")]
    Bind(#[from] std::io::Error),
    /// The forwarding client could not be built.
    #[error("proxy client: {0}")]
    Client(#[from] reqwest::Error),
}

struct Shared {
    upstream: String,
    kind: Upstream,
    client: reqwest::Client,
    fault: watch::Receiver<Fault>,
    forwarded: AtomicU64,
    injected: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    switch: watch::Sender<Fault>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`, no trailing slash).
    pub async fn start(upstream: &str, kind: Upstream) -> Result<Self, ProxyError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (switch, fault) = watch::channel(Fault::None);
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            kind,
            // No client timeout: long-polls take as long as the caller asked for, and the
            // caller's own timeout still applies on its side of the proxy.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            fault,
            forwarded: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            switch,
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the fault for every later request (and releases hung ones when it is not `Hang`).
    pub fn set(&self, fault: Fault) {
        self.switch.send_replace(fault);
    }

    /// Requests forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Requests answered with an injected fault so far (so a scenario can prove it bit).
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error_response(kind: Upstream, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match kind {
        Upstream::Hub => json!({"detail": message}),
        Upstream::OpenAi => {
            let (t, c) = match status {
                429 => ("requests", Some("rate_limit_exceeded")),
                s if s >= 500 => ("server_error", None),
                _ => ("invalid_request_error", None),
            };
            json!({"error": {"message": message, "type": t, "param": null, "code": c}})
        }
    };
    let mut resp = (code, axum::Json(body)).into_response();
    if status == 429 {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    resp
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "proxy-connection",
    "te",
    "trailer",
];

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = *shared.fault.borrow();
    match fault {
        Fault::None => {}
        Fault::Status(s) => {
            shared.injected.fetch_add(1, Ordering::Relaxed);
            return error_response(shared.kind, s, "injected fault (botburrow-bench)");
        }
        Fault::Hang => {
            shared.injected.fetch_add(1, Ordering::Relaxed);
            let mut rx = shared.fault.clone();
            let _ = rx.wait_for(|f| *f != Fault::Hang).await;
            return error_response(shared.kind, 503, "upstream restarted after a hang");
        }
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (k, v) in &headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            req = req.header(k, v);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return error_response(shared.kind, 502, &format!("proxy: {e}")),
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out_headers.insert(k.clone(), v.clone());
        }
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return error_response(shared.kind, 502, &format!("proxy: {e}")),
    };
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    out
}
