//! An in-test fake of the `coordination.k8s.io/v1` Lease endpoints, strict where it matters:
//! monotonically increasing `metadata.resourceVersion`, 409 `Conflict` for a PUT carrying a stale
//! resourceVersion, 409 `AlreadyExists` for a duplicate POST, 404 `NotFound` Status bodies.
//! Like the real apiserver, a PUT without a resourceVersion is accepted unconditionally (which is
//! exactly what the negative-control test exploits). Fault injection: fail every write with 500,
//! or hold GETs at a barrier so racing candidates all read the same version.

#![allow(dead_code)]

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct FakeState {
    leases: Mutex<HashMap<(String, String), Value>>,
    rv: AtomicU64,
    pub conflicts: AtomicU64,
    pub writes_ok: AtomicU64,
    pub unconditional_writes: AtomicU64,
    pub fail_writes: AtomicBool,
    get_barrier: Mutex<Option<Arc<Barrier>>>,
}

pub struct FakeApiserver {
    pub url: String,
    pub state: Arc<FakeState>,
    shutdown: CancellationToken,
}

impl Drop for FakeApiserver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn status(code: StatusCode, reason: &str, message: String, name: &str) -> Response {
    (
        code,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason,
            "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases"},
            "code": code.as_u16(),
        })),
    )
        .into_response()
}

impl FakeApiserver {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                axum::routing::post(create),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(read).put(replace),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake apiserver");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Self {
            url: format!("http://{addr}"),
            state,
            shutdown,
        }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("fake apiserver uri"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Holds the next `n` GETs until all `n` have arrived.
    pub fn hold_gets(&self, n: usize) {
        *self.state.get_barrier.lock().expect("lock") = Some(Arc::new(Barrier::new(n)));
    }

    pub fn release_gets(&self) {
        *self.state.get_barrier.lock().expect("lock") = None;
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .leases
            .lock()
            .expect("lock")
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn holder(&self, ns: &str, name: &str) -> Option<String> {
        self.lease(ns, name)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
            .filter(|h| !h.is_empty())
    }

    /// Writes a lease directly (as another controller would), bumping the resourceVersion.
    pub fn overwrite_holder(&self, ns: &str, name: &str, holder: &str) {
        let mut leases = self.state.leases.lock().expect("lock");
        let l = leases
            .get_mut(&(ns.to_string(), name.to_string()))
            .expect("lease exists");
        l["spec"]["holderIdentity"] = json!(holder);
        let rv = self.state.rv.fetch_add(1, Ordering::SeqCst) + 1;
        l["metadata"]["resourceVersion"] = json!(rv.to_string());
    }
}

async fn read(
    State(st): State<Arc<FakeState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    // Read first, then wait: every held GET answers with the version it read before anyone wrote.
    let snapshot = st
        .leases
        .lock()
        .expect("lock")
        .get(&(ns, name.clone()))
        .cloned();
    let barrier = st.get_barrier.lock().expect("lock").clone();
    if let Some(b) = barrier {
        b.wait().await;
    }
    match snapshot {
        Some(l) => Json(l).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
            &name,
        ),
    }
}

fn stamp(st: &FakeState, body: &mut Value, ns: &str, name: &str) {
    let rv = st.rv.fetch_add(1, Ordering::SeqCst) + 1;
    body["apiVersion"] = json!("coordination.k8s.io/v1");
    body["kind"] = json!("Lease");
    body["metadata"]["name"] = json!(name);
    body["metadata"]["namespace"] = json!(ns);
    body["metadata"]["resourceVersion"] = json!(rv.to_string());
    if body["metadata"]["uid"].is_null() {
        body["metadata"]["uid"] = json!(format!("uid-{rv}"));
    }
}

async fn create(
    State(st): State<Arc<FakeState>>,
    Path(ns): Path<String>,
    Json(mut body): Json<Value>,
) -> Response {
    let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value".into(),
            "",
        );
    };
    if st.fail_writes.load(Ordering::SeqCst) {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcd unavailable".into(),
            &name,
        );
    }
    if !body["metadata"]["resourceVersion"].is_null() {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "resourceVersion should not be set on objects to be created".into(),
            &name,
        );
    }
    let mut leases = st.leases.lock().expect("lock");
    let key = (ns.clone(), name.clone());
    if leases.contains_key(&key) {
        st.conflicts.fetch_add(1, Ordering::SeqCst);
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
            &name,
        );
    }
    stamp(&st, &mut body, &ns, &name);
    leases.insert(key, body.clone());
    st.writes_ok.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn replace(
    State(st): State<Arc<FakeState>>,
    Path((ns, name)): Path<(String, String)>,
    Json(mut body): Json<Value>,
) -> Response {
    if st.fail_writes.load(Ordering::SeqCst) {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "etcd unavailable".into(),
            &name,
        );
    }
    let mut leases = st.leases.lock().expect("lock");
    let key = (ns.clone(), name.clone());
    let Some(current) = leases.get(&key) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
            &name,
        );
    };
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) if Some(rv) != current["metadata"]["resourceVersion"].as_str() => {
            st.conflicts.fetch_add(1, Ordering::SeqCst);
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
                &name,
            );
        }
        Some(_) => {}
        None => {
            st.unconditional_writes.fetch_add(1, Ordering::SeqCst);
        }
    }
    body["metadata"]["uid"] = current["metadata"]["uid"].clone();
    stamp(&st, &mut body, &ns, &name);
    leases.insert(key, body.clone());
    st.writes_ok.fetch_add(1, Ordering::SeqCst);
    Json(body).into_response()
}
