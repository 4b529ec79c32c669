//! The dev Hub's Prometheus metrics (served on its own `/metrics`), declared and registered in
//! one place so every name follows `botburrow_devhub_<name>_<unit>` and each has an updater.

use botburrow_shared::health::SharedRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The matched route template, e.g. `/api/v1/posts/{id}` (never a concrete id).
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: u16,
}

/// Handles on every dev Hub metric (clones share the values).
#[derive(Clone, Default)]
pub struct DevHubMetrics {
    /// `botburrow_devhub_requests_total`: answered requests by route, method and status.
    pub requests: Family<RequestLabel, Counter>,
    /// `botburrow_devhub_long_polls_active`: long-polls currently waiting.
    pub long_polls_active: Gauge,
    /// `botburrow_devhub_notifications_created_total`: notifications created (fan-out and injected).
    pub notifications_created: Counter,
    /// `botburrow_devhub_idempotent_replays_total`: POSTs answered from the idempotency cache.
    pub idempotent_replays: Counter,
}

impl DevHubMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &SharedRegistry) -> Self {
        let m = Self::default();
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "botburrow_devhub_requests",
            "Requests answered, by route, method and status",
            m.requests.clone(),
        );
        r.register(
            "botburrow_devhub_long_polls_active",
            "Long-polls currently waiting",
            m.long_polls_active.clone(),
        );
        r.register(
            "botburrow_devhub_notifications_created",
            "Notifications created by mention/reply fan-out or injection",
            m.notifications_created.clone(),
        );
        r.register(
            "botburrow_devhub_idempotent_replays",
            "POSTs answered from the Idempotency-Key cache",
            m.idempotent_replays.clone(),
        );
        m
    }
}
