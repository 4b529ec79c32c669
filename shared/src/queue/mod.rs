//! The work queue (design §4, issue 5): the one place that moves [`WorkItem`]s between "waiting",
//! "leased to a runner", "backing off" and "dead".
//!
//! Two backends implement the same [`WorkQueue`] contract and pass the same test suite
//! (`shared/tests/queue_contract.rs`):
//! - [`ValkeyQueue`]: the production backend. Every multi-key change is one Lua script
//!   ([`scripts`]), so there is no instant at which a crash loses an item: it is always either in a
//!   `work:queue:*` list, or leased (`work:inflight` + `work:leases` + `activation:{id}`), or in
//!   `work:dead`.
//! - [`MemoryQueue`]: the same semantics in-process, for `botburrow up` and unit tests of callers.
//!
//! Semantics shared by both:
//! - **Dedup**: an agent has at most one waiting item (`work:queued`) and no waiting item while it
//!   is active (`work:active`); enqueue also refuses agents in circuit-breaker backoff.
//! - **Claim**: strict priority `high > normal > low` among the lists the runner mode reads, FIFO
//!   within a list. Every candidate's task type is re-checked (the `low` list mixes both), and an
//!   item whose agent is already active is left in place. Malformed entries are moved to
//!   `work:dead` with the reason and the scan continues. The scan examines at most
//!   [`CLAIM_SCAN_LIMIT`] entries per claim so a script never runs long.
//! - **Leases**: a claim creates activation `{id}` with a deadline. `renew`, `complete`, `fail` and
//!   `release` are fenced by that id: once the lease was reaped, or an operator deleted
//!   `activation:{id}`, they report `Lost` / `false` / `NotOwner` and change nothing.
//! - **Reaper**: leases past their deadline, or whose `activation:{id}` key vanished (TTL ran out,
//!   or `botburrow activation stop`), are requeued to `low` with `attempt + 1`, or dead-lettered
//!   once `attempt + 1 >= max_attempts`. Reaping does not count toward the circuit breaker (a dead
//!   runner is not the agent's fault). It also removes dedup bookkeeping that no longer matches
//!   anything (hand edits, the original fleet's eternal `work:active` entries), so no agent is
//!   refused work forever.
//! - **Circuit breaker** (per agent): every `fail` counts; a failure more than `failure_decay`
//!   after the previous one restarts the count at 1; at `failures >= failure_threshold` the agent
//!   backs off `min(backoff_base * 2^(failures - threshold), backoff_max)`. While it backs off the
//!   failed item is dropped (the coordinator derives work from the Hub again once the backoff ends)
//!   and enqueues answer [`EnqueueOutcome::InBackoff`]. A `complete` resets the count.
//! - **Blocking claim without polling**: see [`valkey`] for the wake-up tokens; the memory backend
//!   uses a `tokio::sync::Notify`.
//!
//! Cancellation: `claim` may be dropped at any await (e.g. on shutdown). If that happens after the
//! claim script ran, the lease exists but nobody knows its id; the reaper requeues it when the
//! lease runs out, so the item is late but never lost.
//!
//! Time: deadlines, backoff and decay use a [`Clock`] (epoch milliseconds) so tests can move time;
//! the TTL of `activation:{id}` (the force-stop and crash signal) is real time on both backends.

pub mod memory;
pub mod scripts;
pub mod valkey;

pub use memory::MemoryQueue;
pub use valkey::ValkeyQueue;

use crate::ids::{ActivationId, AgentId, RunnerId, WorkItemId};
use crate::work::{Priority, RunnerMode, WorkItem};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How many queue entries one claim examines at most (per call, across all lists it reads).
/// Bounds the script's run time when the head of `low` is full of the other mode's work.
pub const CLAIM_SCAN_LIMIT: usize = 100;

/// How many leases one reap call handles at most; the reaper runs every second, so a backlog drains.
pub const REAP_LIMIT: usize = 500;

/// Tunables of the queue. Defaults are the original fleet's constants.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Claims per item before it goes to `work:dead` (a fresh item has `attempt == 0`).
    pub max_attempts: u32,
    /// Consecutive failures at which an agent starts backing off.
    pub failure_threshold: u32,
    /// Backoff at exactly `failure_threshold` failures; doubles per further failure.
    pub backoff_base: Duration,
    /// Upper bound of one backoff.
    pub backoff_max: Duration,
    /// A failure this long after the previous one restarts the count.
    pub failure_decay: Duration,
    /// Client-side bound on one Valkey command, so callers see a typed `Timeout` while Valkey is
    /// down instead of hanging (blocking claims get their wait on top of it).
    pub command_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            failure_threshold: 5,
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            failure_decay: Duration::from_secs(3600),
            command_timeout: Duration::from_secs(5),
        }
    }
}

impl QueueConfig {
    /// Backoff for an agent with `failures` consecutive failures, `None` below the threshold.
    pub fn backoff_for(&self, failures: u32) -> Option<Duration> {
        if failures < self.failure_threshold {
            return None;
        }
        let exp = (failures - self.failure_threshold).min(62);
        let base = self.backoff_base.as_millis().min(u128::from(u64::MAX)) as u64;
        let ms = base.saturating_mul(1u64 << exp.min(63));
        Some(Duration::from_millis(ms).min(self.backoff_max))
    }
}

/// What `enqueue` did with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// It now waits in its priority list.
    Enqueued,
    /// The agent already has a waiting item; this one was dropped.
    AlreadyQueued,
    /// The agent is running an activation; this one was dropped.
    AgentActive,
    /// The agent's circuit breaker is open until `until`; this one was dropped.
    InBackoff {
        /// When enqueues are accepted again.
        until: DateTime<Utc>,
    },
}

/// A leased work item: the runner owns it until the deadline unless it renews.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Fences every later operation on this lease, and tags every log line of the activation.
    pub activation_id: ActivationId,
    /// The item as it waited in the queue (with `attempt` and `last_error` of earlier tries).
    pub item: WorkItem,
    /// Lease deadline, epoch ms of the queue's clock; renew before it.
    pub deadline_ms: i64,
    /// How long the item waited since it was (re)queued, for `botburrow_queue_wait_seconds`.
    pub queue_wait: Duration,
}

/// Result of `renew`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The lease now runs until now + lease.
    Renewed,
    /// The lease is gone (reaped, stopped by an operator, expired): stop working on it.
    Lost,
}

/// Result of `fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back in `low`, to be claimed again as attempt `attempt`.
    Requeued {
        /// The attempt number the next claim will see.
        attempt: u32,
    },
    /// The agent's breaker opened; the item was dropped and enqueues are refused until `until`.
    Backoff {
        /// End of the backoff.
        until: DateTime<Utc>,
        /// Consecutive failures counted so far.
        failures: u32,
    },
    /// Moved to `work:dead` (not retryable, or out of attempts).
    Dead,
    /// The activation is not (or no longer) leased: nothing changed.
    NotOwner,
}

/// What one `reap` pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired or stopped leases whose item went back to `low`.
    pub requeued: u32,
    /// Expired or stopped leases whose item ran out of attempts.
    pub dead: u32,
    /// Stale bookkeeping removed: a `work:active` entry without a lease, a lease without an item,
    /// a `work:queued` member without a waiting item (left by hand edits or older fleets).
    pub orphaned: u32,
}

impl ReapReport {
    /// Whether the pass changed anything.
    pub fn is_empty(&self) -> bool {
        self.requeued == 0 && self.dead == 0 && self.orphaned == 0
    }
}

/// A snapshot for metrics, `/ready` and `botburrow queue stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Waiting items per priority, highest first (`[high, normal, low]`).
    pub depth: [u64; 3],
    /// Leased activations.
    pub active: u64,
    /// Agents whose backoff has not ended yet.
    pub in_backoff: u64,
    /// Entries in `work:dead`.
    pub dead: u64,
    /// Age of the oldest waiting item (the next one to be claimed in each list), if any.
    pub oldest_waiting_age: Option<Duration>,
}

impl QueueStats {
    /// Waiting items in one priority list.
    pub fn depth_of(&self, priority: Priority) -> u64 {
        self.depth[priority_index(priority)]
    }

    /// Waiting items in all lists.
    pub fn total_waiting(&self) -> u64 {
        self.depth.iter().sum()
    }
}

/// One leased activation, for `botburrow activation list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveActivation {
    /// The lease's fence.
    pub activation_id: ActivationId,
    /// Whose activation it is.
    pub agent_id: AgentId,
    /// The runner holding it, if the activation key still exists.
    pub runner: Option<RunnerId>,
    /// The item being worked on (`None` if its stored JSON no longer parses).
    pub item: Option<WorkItem>,
    /// When it was claimed, epoch ms (0 if the activation key is gone).
    pub started_at_ms: i64,
    /// Lease deadline, epoch ms.
    pub deadline_ms: i64,
    /// The activation key is gone (stopped or expired): the reaper will requeue it.
    pub stopped: bool,
}

/// An agent whose circuit breaker is open.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffEntry {
    /// The agent.
    pub agent_id: AgentId,
    /// When enqueues are accepted again.
    pub until: DateTime<Utc>,
    /// Consecutive failures counted.
    pub failures: u32,
}

/// An entry of `work:dead`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The item, if it parses (a malformed entry has only `raw_item`).
    pub item: Option<WorkItem>,
    /// The item as stored (JSON text), so malformed entries can be inspected.
    pub raw_item: String,
    /// Why it died (last error, `lease expired`, or the parse error of a malformed entry).
    pub error: String,
    /// When it died.
    pub failed_at: DateTime<Utc>,
}

/// Errors of the queue. A blocking claim that simply times out is not an error (`Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Valkey is unreachable or the connection broke; retry later.
    #[error("valkey connection error: {0}")]
    Connection(String),
    /// A command got no answer within `command_timeout`.
    #[error("valkey command timed out: {0}")]
    Timeout(String),
    /// A Lua script failed on the server.
    #[error("queue script failed: {0}")]
    Script(String),
    /// Valkey answered something the queue cannot interpret.
    #[error("unexpected reply from valkey: {0}")]
    Malformed(String),
    /// The URL or client configuration is invalid (the URL itself is never echoed: it may hold a password).
    #[error("invalid valkey configuration: {0}")]
    Config(String),
    /// Any other error reply from Valkey.
    #[error("valkey error: {0}")]
    Server(String),
}

impl QueueError {
    /// Low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            QueueError::Connection(_) => "connection",
            QueueError::Timeout(_) => "timeout",
            QueueError::Script(_) => "script",
            QueueError::Malformed(_) => "malformed",
            QueueError::Config(_) => "config",
            QueueError::Server(_) => "server",
        }
    }

    /// Whether retrying later may succeed (Valkey down or slow), as opposed to a bug or bad config.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Connection(_) | QueueError::Timeout(_))
    }
}

/// The work queue contract; see the module docs for the semantics.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Adds an item unless its agent already has one waiting, is active or is backing off.
    async fn enqueue(&self, item: WorkItem) -> Result<EnqueueOutcome, QueueError>;
    /// Leases the next item this mode may run, waiting up to `wait` for one to arrive.
    async fn claim(
        &self,
        mode: RunnerMode,
        runner: &RunnerId,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Claim>, QueueError>;
    /// Extends a lease to now + `lease`; `Lost` means stop working on it.
    async fn renew(
        &self,
        activation: &ActivationId,
        lease: Duration,
    ) -> Result<RenewOutcome, QueueError>;
    /// Ends a lease successfully and resets the agent's failure count; `false` if not ours.
    async fn complete(&self, activation: &ActivationId) -> Result<bool, QueueError>;
    /// Ends a lease with an error: requeue, back off, or dead-letter.
    async fn fail(
        &self,
        activation: &ActivationId,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError>;
    /// Hands an unfinished item back (shutdown): same attempt, next in line in its list.
    async fn release(&self, activation: &ActivationId) -> Result<bool, QueueError>;
    /// Requeues or dead-letters leases past their deadline at `now_ms` or whose activation key vanished.
    async fn reap(&self, now_ms: i64) -> Result<ReapReport, QueueError>;
    /// Depths, active count, backoffs, dead letters and the oldest wait.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
    /// Every leased activation.
    async fn active(&self) -> Result<Vec<ActiveActivation>, QueueError>;
    /// Force-stops an activation (`DEL activation:{id}`): the owner's next renew is `Lost`.
    async fn stop_activation(&self, activation: &ActivationId) -> Result<bool, QueueError>;
    /// Up to `limit` waiting items of one list, next to be claimed first (malformed entries skipped).
    async fn peek(&self, priority: Priority, limit: usize) -> Result<Vec<WorkItem>, QueueError>;
    /// Agents whose backoff has not ended.
    async fn backoffs(&self) -> Result<Vec<BackoffEntry>, QueueError>;
    /// Closes an agent's breaker (backoff and failure count); `true` if there was anything to clear.
    async fn clear_backoff(&self, agent: &AgentId) -> Result<bool, QueueError>;
    /// Up to `limit` dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Moves a dead item back to its list with `attempt = 0`. `false` if there is no such dead item
    /// or its agent already has work waiting or running (then it stays dead).
    async fn retry_dead(&self, id: &WorkItemId) -> Result<bool, QueueError>;
    /// Empties `work:dead`, returning how many entries were removed.
    async fn purge_dead(&self) -> Result<u64, QueueError>;
    /// Whether the backend answers (for `/ready` and `doctor`).
    async fn ping(&self) -> Result<(), QueueError>;
}

/// A source of "now" in epoch milliseconds; tests substitute a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to, for backoff, decay and lease-expiry tests.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at `start_ms` epoch milliseconds.
    pub fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start_ms)))
    }

    /// Starts at the current wall-clock time.
    pub fn starting_now() -> Arc<Self> {
        Self::new(Utc::now().timestamp_millis())
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(duration_ms(by), Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

// ---- helpers shared by both backends ---------------------------------------------------------

/// Index of a priority in `[high, normal, low]` arrays.
pub(crate) fn priority_index(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// A duration as whole milliseconds (saturating), the unit every script argument uses.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Epoch milliseconds as a UTC timestamp (clamped to the epoch if out of range).
pub(crate) fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Epoch seconds (float, as stored in `work:backoff` and dead letters) as a UTC timestamp.
pub(crate) fn secs_to_datetime(secs: f64) -> DateTime<Utc> {
    ms_to_datetime((secs * 1000.0).round() as i64)
}

/// The JSON stored in a list: the item plus `enqueued_at` (epoch ms), which older readers ignore
/// and which gives `queue_wait` and `oldest_waiting_age` for retried items too.
pub(crate) fn encode_item(item: &WorkItem, enqueued_at_ms: i64) -> String {
    match serde_json::to_value(item) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert(
                "enqueued_at".into(),
                serde_json::Value::from(enqueued_at_ms),
            );
            serde_json::Value::Object(map).to_string()
        }
        _ => item.to_json(),
    }
}

/// When a stored item was (re)queued, epoch ms: `enqueued_at`, else `created_at`.
pub(crate) fn enqueued_at_ms(raw: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Times {
        enqueued_at: Option<f64>,
        created_at: Option<f64>,
    }
    let t: Times = serde_json::from_str(raw).ok()?;
    t.enqueued_at
        .map(|ms| ms as i64)
        .or(t.created_at.map(|s| (s * 1000.0) as i64))
}

/// How long an item stored as `raw` has waited at `now_ms`.
pub(crate) fn waited(raw: &str, now_ms: i64) -> Duration {
    enqueued_at_ms(raw)
        .map(|at| Duration::from_millis(u64::try_from(now_ms.saturating_sub(at)).unwrap_or(0)))
        .unwrap_or_default()
}

/// Parses a `work:dead` entry (`{"item", "error", "failed_at"}`).
pub(crate) fn parse_dead_letter(entry: &str) -> DeadLetter {
    let value: serde_json::Value = serde_json::from_str(entry).unwrap_or(serde_json::Value::Null);
    let raw_item = match value.get("item") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => entry.to_owned(),
    };
    let error = value
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let failed_at = value
        .get("failed_at")
        .and_then(|f| f.as_f64())
        .map(secs_to_datetime)
        .unwrap_or_default();
    DeadLetter {
        item: WorkItem::from_json(&raw_item).ok(),
        raw_item,
        error,
        failed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_sequence_doubles_and_caps() {
        let c = QueueConfig::default();
        assert_eq!(c.backoff_for(4), None);
        let secs: Vec<u64> = (5..=12)
            .map(|n| c.backoff_for(n).map(|d| d.as_secs()).unwrap_or(0))
            .collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(c.backoff_for(500).map(|d| d.as_secs()), Some(3600));
    }

    #[test]
    fn stored_items_carry_their_enqueue_time() {
        let item = WorkItem::inbox("a", "A", 1);
        let raw = encode_item(&item, 1_000);
        assert_eq!(enqueued_at_ms(&raw), Some(1_000));
        assert_eq!(waited(&raw, 1_250), Duration::from_millis(250));
        assert_eq!(WorkItem::from_json(&raw).expect("still a work item"), item);
    }

    #[test]
    fn dead_letters_parse_valid_and_malformed_items() {
        let item = WorkItem::discovery("b", "B");
        let entry = serde_json::json!({"item": serde_json::to_value(&item).expect("json"), "error": "boom", "failed_at": 12.5});
        let d = parse_dead_letter(&entry.to_string());
        assert_eq!(d.item.as_ref(), Some(&item));
        assert_eq!(d.error, "boom");
        assert_eq!(d.failed_at.timestamp_millis(), 12_500);
        let entry = serde_json::json!({"item": "not json", "error": "malformed work item: x", "failed_at": 1.0});
        let d = parse_dead_letter(&entry.to_string());
        assert!(d.item.is_none());
        assert_eq!(d.raw_item, "not json");
    }
}
