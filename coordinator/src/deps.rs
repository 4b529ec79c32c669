//! Building the coordinator's dependencies from settings: the Valkey queue and key store, the Hub
//! client, and the election backend chosen by `LEADER_ELECTION` (`auto` = Kubernetes inside a
//! cluster, Valkey outside). Kept apart from [`crate::run`] so embedders can pass their own.

use crate::election::lease::LeaseElector;
use crate::election::valkey::ValkeyElector;
use crate::election::{ElectionTiming, LeaderElector, NoElection, SystemClock};
use crate::store::KeyStore;
use crate::{CoordinatorDeps, Tuning};
use anyhow::Context;
use botburrow_shared::health::SharedRegistry;
use botburrow_shared::hub::{HubClient, RetryPolicy};
use botburrow_shared::queue::ValkeyQueue;
use botburrow_shared::settings::{CoordinatorSettings, LeaderElection};
use botburrow_shared::startup::wait_for_dependencies;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The concrete election backend after resolving `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A Kubernetes Lease.
    Kubernetes,
    /// The Valkey lock.
    Valkey,
    /// Always leader.
    None,
}

/// Resolves `LEADER_ELECTION`: `auto` means Kubernetes when `KUBERNETES_SERVICE_HOST` is set.
pub fn choose_backend(mode: LeaderElection, in_cluster: bool) -> Backend {
    match mode {
        LeaderElection::Kubernetes => Backend::Kubernetes,
        LeaderElection::Valkey => Backend::Valkey,
        LeaderElection::None => Backend::None,
        LeaderElection::Auto if in_cluster => Backend::Kubernetes,
        LeaderElection::Auto => Backend::Valkey,
    }
}

/// Whether this process runs inside a Kubernetes pod.
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// Builds the election backend for `settings`.
pub async fn elector(
    settings: &CoordinatorSettings,
    backend: Backend,
) -> anyhow::Result<Box<dyn LeaderElector>> {
    let timing = ElectionTiming::default();
    let identity = settings.pod_name.clone();
    Ok(match backend {
        Backend::Kubernetes => {
            let client = LeaseElector::default_client()
                .await
                .context("kubernetes client for leader election")?;
            Box::new(LeaseElector::new(
                client,
                &settings.pod_namespace,
                settings.lease_name.clone(),
                identity,
                timing,
                Arc::new(SystemClock),
            ))
        }
        Backend::Valkey => Box::new(
            ValkeyElector::connect(settings.common.valkey_url.expose(), identity, timing)
                .await
                .context("valkey connection for leader election")?,
        ),
        Backend::None => Box::new(NoElection::new(identity)),
    })
}

/// Builds everything the binary needs: Valkey queue and key store, a single-attempt Hub client
/// (the loops own backoff), and the election backend.
pub async fn build(
    settings: &CoordinatorSettings,
    registry: SharedRegistry,
) -> anyhow::Result<CoordinatorDeps> {
    let url = settings.common.valkey_url.expose();
    let queue = ValkeyQueue::connect(url, settings.common.queue_config())
        .await
        .context("connecting the work queue to Valkey")?;
    let store = KeyStore::connect(url)
        .await
        .context("connecting the key store to Valkey")?;
    let hub = HubClient::new(
        &settings.common.hub_url,
        settings.common.hub_api_key.clone(),
    )
    .context("building the Hub client")?
    .with_retry(RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    })
    .with_timeout(Duration::from_secs(10));
    let backend = choose_backend(settings.leader_election, in_cluster());
    let elector = elector(settings, backend).await?;
    Ok(CoordinatorDeps {
        queue: Arc::new(queue),
        hub,
        elector,
        registry,
        store: Some(store),
        tuning: Tuning::from_settings(settings),
    })
}

/// [`build`], retried with backoff while Valkey or the apiserver is unreachable, so a coordinator
/// started before Valkey waits instead of crash-looping. Each distinct error is logged once.
/// Returns `None` when `shutdown` fires first.
pub async fn build_when_ready(
    settings: &CoordinatorSettings,
    registry: SharedRegistry,
    shutdown: &CancellationToken,
) -> Option<CoordinatorDeps> {
    // Every error is worth another try: configuration errors were caught with the settings.
    wait_for_dependencies(shutdown, || build(settings, registry.clone()), |_| true)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_kubernetes_only_in_a_cluster() {
        assert_eq!(
            choose_backend(LeaderElection::Auto, true),
            Backend::Kubernetes
        );
        assert_eq!(choose_backend(LeaderElection::Auto, false), Backend::Valkey);
        assert_eq!(
            choose_backend(LeaderElection::Valkey, true),
            Backend::Valkey
        );
        assert_eq!(choose_backend(LeaderElection::None, true), Backend::None);
        assert_eq!(
            choose_backend(LeaderElection::Kubernetes, false),
            Backend::Kubernetes
        );
    }
}
