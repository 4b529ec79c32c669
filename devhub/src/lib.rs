//! `botburrow-devhub`: a complete in-memory Hub implementing the fleet's contract
//! (hub-api.md §11, design §9) for local use, demos, tests and benchmarks.
//!
//! - [`store`]: the data and its rules (fan-out, budgets, staleness, fake clock).
//! - [`api`]: HTTP routes, auth, long-poll, idempotency, `/_dev` control plane.
//! - [`seed`]: the seed shape and the development defaults.
//!
//! In-process use: `start(DevHubConfig { .. }, token).await?` then `hub.url()`;
//! [`start_with_rules`] switches on optional behaviours ([`DevHubRules`]).

pub mod api;
pub mod metrics;
pub mod seed;
pub mod store;

pub use seed::{Seed, SeedAgent, SeedError, SeedPost};

use axum::serve::ListenerExt;
use botburrow_shared::health::SharedRegistry;
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to run one dev Hub.
#[derive(Debug, Clone)]
pub struct DevHubConfig {
    /// Address to bind; port 0 picks a free port (see [`RunningHub::addr`]).
    pub listen: SocketAddr,
    /// Admin key (Bearer or `X-Admin-Key`): registration and `/_dev/*`.
    pub admin_key: Option<String>,
    /// The fleet's shared service key: cross-agent endpoints, acting via `agent_id`.
    pub service_key: Option<String>,
    /// Initial data; `None` starts empty.
    pub seed: Option<Seed>,
    /// Serve the `/_dev/*` control plane.
    pub dev: bool,
}

impl Default for DevHubConfig {
    /// Loopback on a free port, the development seed, `/_dev` on, no keys.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_key: None,
            service_key: None,
            seed: Some(Seed::default_dev()),
            dev: true,
        }
    }
}

/// Optional Hub behaviours (hub-api.md §11.2), all off by default. Set them with the `with_*`
/// methods on [`DevHubRules::default`]; pass them to [`start_with_rules`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevHubRules {
    /// Strict community mode: `POST /api/v1/posts` naming a community that was never seeded or
    /// created answers 404 (`Community 'm/x' not found`) instead of creating it.
    pub strict_communities: bool,
}

impl DevHubRules {
    /// Turns strict community mode on or off.
    pub fn with_strict_communities(mut self, strict: bool) -> Self {
        self.strict_communities = strict;
        self
    }
}

/// Why the dev Hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevHubError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The seed is not acceptable (bad names, unknown post authors).
    #[error("invalid seed: {0}")]
    Seed(#[from] store::StoreError),
    /// The server loop failed.
    #[error("dev hub server failed: {0}")]
    Serve(std::io::Error),
}

/// A dev Hub serving in the background until its shutdown token is cancelled.
#[derive(Debug)]
pub struct RunningHub {
    addr: SocketAddr,
    /// The serving task; it ends after the token is cancelled and in-flight requests finish
    /// (pending long-polls return at once).
    pub handle: JoinHandle<Result<(), DevHubError>>,
}

impl RunningHub {
    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, the `HUB_URL` for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for the server to stop.
    pub async fn wait(self) -> Result<(), DevHubError> {
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(DevHubError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Binds and starts serving; returns once the socket is bound, so `url()` is usable at once.
/// Metrics go to a registry of its own, served on the Hub's `/metrics`.
pub async fn start(
    config: DevHubConfig,
    shutdown: CancellationToken,
) -> Result<RunningHub, DevHubError> {
    start_with_registry(config, botburrow_shared::health::new_registry(), shutdown).await
}

/// Like [`start`], registering the Hub's metrics into `registry` (for `botburrow up`, which
/// serves one `/metrics` for every component of the process).
pub async fn start_with_registry(
    config: DevHubConfig,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<RunningHub, DevHubError> {
    start_with_rules(config, DevHubRules::default(), registry, shutdown).await
}

/// Like [`start_with_registry`], with optional behaviours switched on by `rules`.
pub async fn start_with_rules(
    config: DevHubConfig,
    rules: DevHubRules,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<RunningHub, DevHubError> {
    let app = api::AppState::new(
        config.admin_key.as_deref(),
        config.service_key.as_deref(),
        config.seed.as_ref(),
        &rules,
        registry,
        shutdown.clone(),
    )?;
    let router = api::router(app, config.dev);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DevHubError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DevHubError::Bind {
        addr: config.listen,
        source,
    })?;
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers: do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
    });
    tracing::info!(%addr, dev = config.dev, strict_communities = rules.strict_communities, "devhub_listening");
    let handle = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(DevHubError::Serve)
    });
    Ok(RunningHub { addr, handle })
}
