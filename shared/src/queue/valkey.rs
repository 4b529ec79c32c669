//! The production [`WorkQueue`] on Valkey (or Redis >= 7). Owns the fred clients and the mapping
//! between Redis replies and the queue's types; every state change is one script of
//! [`super::scripts`].
//!
//! ## Blocking claims without polling
//!
//! Every script that makes an item claimable (enqueue, requeue, release, retry, and the end of an
//! activation whose agent has an item waiting) also pushes a token onto `work:signal:inbox` or
//! `work:signal:discovery`, the task type of that item. A claimer first runs the claim script; if
//! it finds nothing it `BLPOP`s the token lists of its mode (notification: inbox; exploration:
//! discovery; hybrid: both) for the remaining wait, on a connection of its own, and claims again
//! when a token arrives. Tokens persist, so an enqueue that lands between the empty claim and the
//! `BLPOP` is not missed; the claim script keeps one token per waiting item (it drops the claimed
//! item's token unless the claimer consumed it, and gives back a token of the other type a hybrid
//! claimer consumed but did not use), so stale tokens cause at most a few spurious wake-ups, and
//! the lists are capped at [`super::scripts::SIGNAL_CAP`]. Waking is a server push: an idle
//! claimer starts within a round trip of the enqueue.
//!
//! Blocking pops hold their connection, so they run on a small pool of dedicated connections
//! (`clone_new`); a claim cancelled mid-`BLPOP` closes its connection instead of reusing it.
//!
//! ## Failures
//!
//! Commands are never replayed by the client (`max_command_attempts = 1`): replaying a claim whose
//! reply was lost could lease twice. A lost reply instead surfaces as [`QueueError::Connection`] or
//! [`QueueError::Timeout`]; a lease created by a claim whose reply was lost is requeued by the
//! reaper. The client reconnects in the background with exponential backoff.

use super::scripts;
use super::{
    ActiveActivation, BackoffEntry, CLAIM_SCAN_LIMIT, Claim, Clock, DeadLetter, EnqueueOutcome,
    FailOutcome, QueueConfig, QueueError, QueueStats, REAP_LIMIT, ReapReport, RenewOutcome,
    SystemClock, WorkQueue, duration_ms, encode_item, ms_to_datetime, parse_dead_letter,
    secs_to_datetime, waited,
};
use crate::ids::{ActivationId, AgentId, RunnerId, WorkItemId};
use crate::valkey as keys;
use crate::work::{Priority, RunnerMode, TaskType, WorkItem};
use async_trait::async_trait;
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::*;
use fred::types::Value;
use fred::types::config::Options;
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle blocking connections kept for reuse; more concurrent claimers open (and close) extra ones.
const MAX_IDLE_BLOCKERS: usize = 64;

struct Scripts {
    enqueue: Script,
    claim: Script,
    renew: Script,
    complete: Script,
    fail: Script,
    release: Script,
    reap: Script,
    retry_dead: Script,
    clear_backoff: Script,
    purge_dead: Script,
    stats: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            enqueue: Script::from_lua(scripts::ENQUEUE),
            claim: Script::from_lua(scripts::CLAIM),
            renew: Script::from_lua(scripts::RENEW),
            complete: Script::from_lua(scripts::COMPLETE),
            fail: Script::from_lua(scripts::FAIL),
            release: Script::from_lua(scripts::RELEASE),
            reap: Script::from_lua(scripts::REAP),
            retry_dead: Script::from_lua(scripts::RETRY_DEAD),
            clear_backoff: Script::from_lua(scripts::CLEAR_BACKOFF),
            purge_dead: Script::from_lua(scripts::PURGE_DEAD),
            stats: Script::from_lua(scripts::STATS),
        }
    }
}

/// Dedicated connections for blocking pops.
struct Blockers {
    template: Client,
    idle: Mutex<Vec<Client>>,
}

impl Blockers {
    async fn checkout(&self) -> Result<Client, QueueError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(c) = pooled {
            return Ok(c);
        }
        let client = self.template.clone_new();
        client.init().await.map_err(map_err)?;
        Ok(client)
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_BLOCKERS {
            idle.push(client);
        } else {
            drop(idle);
            close(client);
        }
    }
}

/// Closes a connection in the background (used from `Drop`, which cannot await).
fn close(client: Client) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = client.quit().await;
        });
    }
}

/// A blocking connection on loan; if the claim is cancelled before it is handed back, the
/// connection may still be inside a `BLPOP`, so it is closed rather than reused.
struct Loan<'a> {
    pool: &'a Blockers,
    client: Option<Client>,
}

impl Loan<'_> {
    fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    fn finish(mut self, reusable: bool) {
        if let Some(c) = self.client.take() {
            if reusable {
                self.pool.give_back(c)
            } else {
                close(c)
            }
        }
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            close(c);
        }
    }
}

enum ClaimStep {
    Claimed(Claim),
    Empty,
    /// Something was skipped (a malformed item buried by the runner side); look again at once.
    Again,
}

/// The Valkey-backed work queue. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct ValkeyQueue {
    client: Client,
    blockers: Blockers,
    scripts: Scripts,
    config: QueueConfig,
    clock: Arc<dyn Clock>,
    /// `KEYS` of every script with `KEYS[1]` (the activation key) left empty.
    layout: Vec<String>,
}

impl std::fmt::Debug for ValkeyQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Maps a fred error to the queue's typed error (never including the URL or credentials).
fn map_err(e: FredError) -> QueueError {
    let details = e.details().to_owned();
    match e.kind() {
        ErrorKind::Timeout => QueueError::Timeout(details),
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing | ErrorKind::Backpressure => {
            QueueError::Connection(details)
        }
        // fred reports "no connection to send on" (Valkey down, reconnecting) as Unknown
        ErrorKind::Unknown if details.starts_with("Failed to route") => {
            QueueError::Connection(details)
        }
        ErrorKind::Config | ErrorKind::Url | ErrorKind::Auth => QueueError::Config(details),
        ErrorKind::Parse | ErrorKind::Protocol | ErrorKind::NotFound => {
            QueueError::Malformed(details)
        }
        _ => QueueError::Server(details),
    }
}

/// Like [`map_err`], but an error reply to a script is a [`QueueError::Script`].
fn script_err(e: FredError) -> QueueError {
    match map_err(e) {
        QueueError::Server(d) => QueueError::Script(d),
        other => other,
    }
}

fn as_string(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => v.as_string(),
    }
}

fn as_i64(v: Option<&Value>) -> Result<i64, QueueError> {
    v.and_then(|v| v.as_i64())
        .ok_or_else(|| QueueError::Malformed(format!("expected an integer, got {v:?}")))
}

fn task_of_signal(key: &str) -> Option<TaskType> {
    if key == keys::signal(TaskType::Inbox) {
        Some(TaskType::Inbox)
    } else if key == keys::signal(TaskType::Discovery) {
        Some(TaskType::Discovery)
    } else {
        None
    }
}

/// The script key layout (see [`scripts::KEY_LAYOUT`]) with `KEYS[1]` empty.
fn layout() -> Vec<String> {
    vec![
        String::new(),
        keys::LEASES.to_owned(),
        keys::INFLIGHT.to_owned(),
        keys::ACTIVE.to_owned(),
        keys::QUEUED.to_owned(),
        keys::FAILURES.to_owned(),
        keys::FAILURES_AT.to_owned(),
        keys::BACKOFF.to_owned(),
        keys::DEAD.to_owned(),
        keys::queue(Priority::High),
        keys::queue(Priority::Normal),
        keys::queue(Priority::Low),
        keys::signal(TaskType::Inbox),
        keys::signal(TaskType::Discovery),
    ]
}

impl ValkeyQueue {
    /// Connects to `url` (`redis://[user:pass@]host:port[/db]`) and checks the server answers.
    /// The client reconnects on its own after a connection loss.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        let fred_config = Config::from_url(url)
            .map_err(|_| QueueError::Config("VALKEY_URL is not a valid redis:// URL".into()))?;
        let timeout = config.command_timeout;
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 2_000, 2))
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.max_command_attempts = 1;
            });
        let client = builder.build().map_err(map_err)?;
        client.init().await.map_err(map_err)?;
        Ok(Self {
            blockers: Blockers {
                template: client.clone_new(),
                idle: Mutex::new(Vec::new()),
            },
            client,
            scripts: Scripts::new(),
            config,
            clock: Arc::new(SystemClock),
            layout: layout(),
        })
    }

    /// Replaces the clock (tests move time with a [`super::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Closes the connections.
    pub async fn close(&self) {
        let _ = self.client.quit().await;
        let idle: Vec<Client> =
            std::mem::take(&mut *self.blockers.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for c in idle {
            let _ = c.quit().await;
        }
    }

    async fn eval(
        &self,
        script: &Script,
        activation: Option<&ActivationId>,
        args: Vec<String>,
    ) -> Result<Value, QueueError> {
        let mut k = self.layout.clone();
        k[0] = match activation {
            Some(id) => keys::activation(id),
            None => keys::ACTIVATION_PREFIX.to_owned(),
        };
        script
            .evalsha_with_reload::<Value, _, _>(&self.client, k, args)
            .await
            .map_err(script_err)
    }

    async fn try_claim(
        &self,
        mode: RunnerMode,
        runner: &RunnerId,
        lease: Duration,
        consumed: Option<TaskType>,
    ) -> Result<ClaimStep, QueueError> {
        let id = ActivationId::generate();
        let now = self.clock.now_ms();
        let order: Vec<&str> = mode.priorities().iter().map(|p| p.as_str()).collect();
        let flag = |t| if mode.allows(t) { "1" } else { "0" };
        let args = vec![
            id.to_string(),
            runner.to_string(),
            now.to_string(),
            duration_ms(lease).max(1).to_string(),
            order.join(","),
            flag(TaskType::Inbox).to_owned(),
            flag(TaskType::Discovery).to_owned(),
            consumed.map(|t| t.as_str()).unwrap_or("").to_owned(),
            CLAIM_SCAN_LIMIT.to_string(),
        ];
        let reply = self
            .eval(&self.scripts.claim, Some(&id), args)
            .await?
            .into_array();
        let buried = reply.get(1).and_then(|v| v.as_i64()).unwrap_or(0);
        if buried > 0 {
            tracing::warn!(count = buried, "malformed_work_dead_lettered");
        }
        let Some(raw) = as_string(reply.first()) else {
            return Ok(if buried > 0 {
                ClaimStep::Again
            } else {
                ClaimStep::Empty
            });
        };
        match WorkItem::from_json(&raw) {
            Ok(item) => Ok(ClaimStep::Claimed(Claim {
                queue_wait: waited(&raw, now),
                deadline_ms: now + duration_ms(lease).max(1),
                activation_id: id,
                item,
            })),
            Err(e) => {
                tracing::warn!(activation_id = %id, reason = %e.reason, "malformed_work_dead_lettered");
                self.fail_with(&id, &e.to_string(), false, true).await?;
                Ok(ClaimStep::Again)
            }
        }
    }

    /// Waits up to `wait` for a wake-up token of a type `mode` runs; `None` when none came.
    async fn wait_signal(
        &self,
        mode: RunnerMode,
        wait: Duration,
    ) -> Result<Option<TaskType>, QueueError> {
        let signal_keys: Vec<String> = [TaskType::Inbox, TaskType::Discovery]
            .into_iter()
            .filter(|t| mode.allows(*t))
            .map(keys::signal)
            .collect();
        let loan = Loan {
            pool: &self.blockers,
            client: Some(self.blockers.checkout().await?),
        };
        let Some(client) = loan.client() else {
            return Ok(None);
        };
        let options = Options {
            timeout: Some(wait + self.config.command_timeout),
            ..Default::default()
        };
        // BLPOP takes seconds; sub-millisecond waits would round to 0, which means "forever".
        let secs = (wait.as_secs_f64() * 1000.0).ceil().max(1.0) / 1000.0;
        let result: Result<Option<(String, String)>, FredError> =
            client.with_options(&options).blpop(signal_keys, secs).await;
        match result {
            Ok(popped) => {
                loan.finish(true);
                Ok(popped.and_then(|(key, _)| task_of_signal(&key)))
            }
            // fred reports BLPOP's nil reply (the wait ran out) as a timeout: no work, not an error.
            Err(e) if *e.kind() == ErrorKind::Timeout => {
                loan.finish(true);
                Ok(None)
            }
            Err(e) => {
                loan.finish(false);
                Err(map_err(e))
            }
        }
    }

    async fn fail_with(
        &self,
        activation: &ActivationId,
        error: &str,
        retryable: bool,
        malformed: bool,
    ) -> Result<FailOutcome, QueueError> {
        let c = &self.config;
        let args = vec![
            activation.to_string(),
            error.to_owned(),
            if retryable { "1" } else { "0" }.to_owned(),
            self.clock.now_ms().to_string(),
            c.max_attempts.to_string(),
            c.failure_threshold.max(1).to_string(),
            duration_ms(c.backoff_base).to_string(),
            duration_ms(c.backoff_max).to_string(),
            duration_ms(c.failure_decay).to_string(),
            if malformed { "1" } else { "0" }.to_owned(),
        ];
        let reply = self
            .eval(&self.scripts.fail, Some(activation), args)
            .await?
            .into_array();
        let tag = as_string(reply.first()).unwrap_or_default();
        let failures = || as_i64(reply.get(1)).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        Ok(match tag.as_str() {
            "not_owner" => FailOutcome::NotOwner,
            "dead" => FailOutcome::Dead,
            "backoff" => {
                let until = ms_to_datetime(as_i64(reply.get(2))?);
                let failures = failures()?;
                let agent = as_string(reply.get(3)).unwrap_or_default();
                tracing::warn!(activation_id = %activation, agent_id = %agent, failures,
                    backoff_until = %until, "backoff");
                FailOutcome::Backoff { until, failures }
            }
            "requeued" => {
                let attempt = u32::try_from(as_i64(reply.get(2))?).unwrap_or(u32::MAX);
                FailOutcome::Requeued { attempt }
            }
            other => {
                return Err(QueueError::Malformed(format!(
                    "fail script answered {other:?}"
                )));
            }
        })
    }
}

impl Drop for ValkeyQueue {
    /// fred keeps a connection (and its reconnect loop) alive until `QUIT`; close them all.
    fn drop(&mut self) {
        close(self.client.clone());
        close(self.blockers.template.clone());
        let idle =
            std::mem::take(&mut *self.blockers.idle.lock().unwrap_or_else(|p| p.into_inner()));
        idle.into_iter().for_each(close);
    }
}

#[async_trait]
impl WorkQueue for ValkeyQueue {
    async fn enqueue(&self, item: WorkItem) -> Result<EnqueueOutcome, QueueError> {
        let now = self.clock.now_ms();
        let args = vec![
            item.agent_id.to_string(),
            encode_item(&item, now),
            now.to_string(),
            item.priority.as_str().to_owned(),
            item.task_type.as_str().to_owned(),
        ];
        let reply = self
            .eval(&self.scripts.enqueue, None, args)
            .await?
            .into_array();
        Ok(
            match as_string(reply.first()).unwrap_or_default().as_str() {
                "enqueued" => EnqueueOutcome::Enqueued,
                "queued" => EnqueueOutcome::AlreadyQueued,
                "active" => EnqueueOutcome::AgentActive,
                "backoff" => {
                    let until = as_string(reply.get(1))
                        .and_then(|s| s.parse::<f64>().ok())
                        .unwrap_or_default();
                    EnqueueOutcome::InBackoff {
                        until: secs_to_datetime(until),
                    }
                }
                other => {
                    return Err(QueueError::Malformed(format!(
                        "enqueue script answered {other:?}"
                    )));
                }
            },
        )
    }

    async fn claim(
        &self,
        mode: RunnerMode,
        runner: &RunnerId,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Claim>, QueueError> {
        let deadline = Instant::now() + wait;
        let mut consumed = None;
        loop {
            match self.try_claim(mode, runner, lease, consumed.take()).await? {
                ClaimStep::Claimed(claim) => return Ok(Some(claim)),
                ClaimStep::Again => continue,
                ClaimStep::Empty => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            match self.wait_signal(mode, remaining).await? {
                Some(task) => consumed = Some(task),
                None if Instant::now() >= deadline => return Ok(None),
                None => {}
            }
        }
    }

    async fn renew(
        &self,
        activation: &ActivationId,
        lease: Duration,
    ) -> Result<RenewOutcome, QueueError> {
        let args = vec![
            activation.to_string(),
            self.clock.now_ms().to_string(),
            duration_ms(lease).max(1).to_string(),
        ];
        let reply = self
            .eval(&self.scripts.renew, Some(activation), args)
            .await?;
        Ok(if reply.as_i64() == Some(1) {
            RenewOutcome::Renewed
        } else {
            RenewOutcome::Lost
        })
    }

    async fn complete(&self, activation: &ActivationId) -> Result<bool, QueueError> {
        let reply = self
            .eval(
                &self.scripts.complete,
                Some(activation),
                vec![activation.to_string()],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    async fn fail(
        &self,
        activation: &ActivationId,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        self.fail_with(activation, error, retryable, false).await
    }

    async fn release(&self, activation: &ActivationId) -> Result<bool, QueueError> {
        let reply = self
            .eval(
                &self.scripts.release,
                Some(activation),
                vec![activation.to_string()],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    async fn reap(&self, now_ms: i64) -> Result<ReapReport, QueueError> {
        let args = vec![
            now_ms.to_string(),
            self.config.max_attempts.to_string(),
            REAP_LIMIT.to_string(),
            keys::ACTIVATION_PREFIX.to_owned(),
        ];
        let reply = self
            .eval(&self.scripts.reap, None, args)
            .await?
            .into_array();
        let n = |i: usize| as_i64(reply.get(i)).map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        Ok(ReapReport {
            requeued: n(0)?,
            dead: n(1)?,
            orphaned: n(2)?,
        })
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = self.clock.now_ms();
        let reply = self
            .eval(&self.scripts.stats, None, vec![])
            .await?
            .into_array();
        let count = |i: usize| as_i64(reply.get(i)).map(|v| u64::try_from(v).unwrap_or(0));
        let oldest_waiting_age = (5..8)
            .filter_map(|i| as_string(reply.get(i)))
            .map(|raw| waited(&raw, now))
            .max();
        let in_backoff = reply
            .iter()
            .skip(8)
            .filter_map(|v| v.as_string()?.parse::<f64>().ok())
            .filter(|until| until * 1000.0 > now as f64)
            .count() as u64;
        Ok(QueueStats {
            depth: [count(0)?, count(1)?, count(2)?],
            active: count(3)?,
            in_backoff,
            dead: count(4)?,
            oldest_waiting_age,
        })
    }

    async fn active(&self) -> Result<Vec<ActiveActivation>, QueueError> {
        let items: HashMap<String, String> =
            self.client.hgetall(keys::INFLIGHT).await.map_err(map_err)?;
        let deadlines: Vec<(String, f64)> = self
            .client
            .zrange(keys::LEASES, 0, -1, None, false, None, true)
            .await
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(deadlines.len());
        for (id, deadline) in deadlines {
            let id = ActivationId::new(id);
            let fields: HashMap<String, String> = self
                .client
                .hgetall(keys::activation(&id))
                .await
                .map_err(map_err)?;
            let raw = items.get(id.as_str()).cloned().unwrap_or_default();
            let item = WorkItem::from_json(&raw).ok();
            let agent_id = item
                .as_ref()
                .map(|i| i.agent_id.clone())
                .or_else(|| fields.get("agent_id").map(|a| AgentId::new(a.as_str())))
                .unwrap_or_else(|| AgentId::new(""));
            out.push(ActiveActivation {
                agent_id,
                runner: fields.get("runner").map(|r| RunnerId::new(r.as_str())),
                item,
                started_at_ms: fields
                    .get("started_at")
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0) as i64,
                deadline_ms: deadline as i64,
                stopped: fields.is_empty(),
                activation_id: id,
            });
        }
        Ok(out)
    }

    async fn stop_activation(&self, activation: &ActivationId) -> Result<bool, QueueError> {
        let removed: i64 = self
            .client
            .del(keys::activation(activation))
            .await
            .map_err(map_err)?;
        Ok(removed > 0)
    }

    async fn peek(&self, priority: Priority, limit: usize) -> Result<Vec<WorkItem>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = -i64::try_from(limit).unwrap_or(i64::MAX);
        let raws: Vec<String> = self
            .client
            .lrange(keys::queue(priority), start, -1)
            .await
            .map_err(map_err)?;
        Ok(raws
            .iter()
            .rev()
            .filter_map(|raw| WorkItem::from_json(raw).ok())
            .collect())
    }

    async fn backoffs(&self) -> Result<Vec<BackoffEntry>, QueueError> {
        let now = self.clock.now_ms();
        let until: HashMap<String, String> =
            self.client.hgetall(keys::BACKOFF).await.map_err(map_err)?;
        let failures: HashMap<String, String> =
            self.client.hgetall(keys::FAILURES).await.map_err(map_err)?;
        let mut out: Vec<BackoffEntry> = until
            .into_iter()
            .filter_map(|(agent, u)| {
                let secs = u.parse::<f64>().ok()?;
                (secs * 1000.0 > now as f64).then(|| BackoffEntry {
                    failures: failures
                        .get(&agent)
                        .and_then(|f| f.parse().ok())
                        .unwrap_or(0),
                    agent_id: AgentId::new(agent),
                    until: secs_to_datetime(secs),
                })
            })
            .collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(out)
    }

    async fn clear_backoff(&self, agent: &AgentId) -> Result<bool, QueueError> {
        let reply = self
            .eval(&self.scripts.clear_backoff, None, vec![agent.to_string()])
            .await?;
        Ok(reply.as_i64().unwrap_or(0) > 0)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let entries: Vec<String> = self
            .client
            .lrange(keys::DEAD, 0, stop)
            .await
            .map_err(map_err)?;
        Ok(entries.iter().map(|e| parse_dead_letter(e)).collect())
    }

    async fn retry_dead(&self, id: &WorkItemId) -> Result<bool, QueueError> {
        let args = vec![id.to_string(), self.clock.now_ms().to_string()];
        let reply = self.eval(&self.scripts.retry_dead, None, args).await?;
        Ok(reply.as_i64() == Some(1))
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        let reply = self.eval(&self.scripts.purge_dead, None, vec![]).await?;
        Ok(u64::try_from(reply.as_i64().unwrap_or(0)).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let _: String = self.client.ping(None).await.map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_key_layout_matches_the_documented_one() {
        let mut built = layout();
        built[0] = "activation:{id}".into();
        assert_eq!(built, scripts::KEY_LAYOUT.map(String::from).to_vec());
    }

    #[test]
    fn signal_keys_map_back_to_task_types() {
        assert_eq!(task_of_signal("work:signal:inbox"), Some(TaskType::Inbox));
        assert_eq!(
            task_of_signal("work:signal:discovery"),
            Some(TaskType::Discovery)
        );
        assert_eq!(task_of_signal("work:queue:high"), None);
    }
}
