//! The in-process [`WorkQueue`]: the same contract as [`super::ValkeyQueue`] (the same test suite
//! runs against both), for `botburrow up` and for tests of callers that need no Valkey.
//!
//! State lives under one mutex, so every operation is atomic like a Lua script; items are kept as
//! the same JSON text Valkey would hold, so unknown fields and malformed entries behave alike.
//! Blocking claims wait on a `tokio::sync::Notify` that every change making work claimable wakes.

use super::{
    ActiveActivation, BackoffEntry, CLAIM_SCAN_LIMIT, Claim, Clock, DeadLetter, EnqueueOutcome,
    FailOutcome, QueueConfig, QueueError, QueueStats, REAP_LIMIT, ReapReport, RenewOutcome,
    SystemClock, WorkQueue, duration_ms, encode_item, ms_to_datetime, parse_dead_letter,
    priority_index, waited,
};
use crate::ids::{ActivationId, AgentId, RunnerId, WorkItemId};
use crate::work::{Priority, RunnerMode, WorkItem};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A leased item (what Valkey splits over `activation:{id}`, `work:inflight` and `work:leases`).
struct Lease {
    raw: String,
    agent: AgentId,
    runner: RunnerId,
    started_at_ms: i64,
    deadline_ms: i64,
    /// Stands in for the TTL of `activation:{id}` (real time, like Valkey's).
    key_expires: Instant,
    /// Stands in for `DEL activation:{id}`.
    stopped: bool,
}

impl Lease {
    fn key_exists(&self) -> bool {
        !self.stopped && Instant::now() < self.key_expires
    }
}

#[derive(Default)]
struct State {
    /// `[high, normal, low]`; front is where items are pushed, back is where claims take from.
    lists: [VecDeque<String>; 3],
    queued: HashSet<AgentId>,
    active: HashMap<AgentId, ActivationId>,
    leases: HashMap<ActivationId, Lease>,
    /// agent -> (consecutive failures, last failure epoch ms)
    failures: HashMap<AgentId, (u32, i64)>,
    /// agent -> backoff until epoch ms
    backoff: HashMap<AgentId, i64>,
    /// newest first, JSON `{"item", "error", "failed_at"}` like `work:dead`
    dead: VecDeque<String>,
}

/// Decrements the waiting count however the wait ends (including cancellation).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The in-memory work queue.
pub struct MemoryQueue {
    state: Mutex<State>,
    wake: Notify,
    /// Claims currently blocked waiting for work.
    waiting: AtomicUsize,
    config: QueueConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Sets fields of a stored item, keeping the ones this version does not know.
fn edit(raw: &str, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(mut map)) => {
            f(&mut map);
            Value::Object(map).to_string()
        }
        _ => raw.to_owned(),
    }
}

fn dead_entry(item: Value, error: &str, now_ms: i64) -> String {
    serde_json::json!({"item": item, "error": error, "failed_at": now_ms as f64 / 1000.0})
        .to_string()
}

fn item_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

impl MemoryQueue {
    /// An empty queue on the wall clock.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            waiting: AtomicUsize::new(0),
            config,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock (tests move time with a [`super::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Pushes raw text at the enqueue end of a list, bypassing every check: what an operator's
    /// `LPUSH` does to Valkey. For tests of malformed entries and for tooling.
    pub fn push_raw(&self, priority: Priority, raw: &str) {
        self.lock().lists[priority_index(priority)].push_front(raw.to_owned());
        self.wake.notify_waiters();
    }

    /// How many claims are blocked waiting for work right now (for tests and diagnostics).
    pub fn waiters(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a lease's bookkeeping; returns its raw item.
    fn end_lease(st: &mut State, id: &ActivationId) -> Option<String> {
        let lease = st.leases.remove(id)?;
        if st.active.get(&lease.agent) == Some(id) {
            st.active.remove(&lease.agent);
        }
        Some(lease.raw)
    }

    fn owned(st: &State, id: &ActivationId) -> bool {
        st.leases.get(id).is_some_and(Lease::key_exists)
    }

    fn bury(st: &mut State, item: Value, error: &str, now_ms: i64) {
        st.dead.push_front(dead_entry(item, error, now_ms));
    }

    /// Requeues to `low` with attempt + 1; returns the new attempt.
    fn requeue(st: &mut State, raw: &str, error: &str, now_ms: i64) -> u32 {
        let attempt = WorkItem::from_json(raw)
            .map(|i| i.attempt)
            .unwrap_or(0)
            .saturating_add(1);
        let agent = WorkItem::from_json(raw)
            .map(|i| i.agent_id)
            .unwrap_or_else(|_| AgentId::new(""));
        let updated = edit(raw, |m| {
            m.insert("attempt".into(), attempt.into());
            m.insert("last_error".into(), error.into());
            m.insert("priority".into(), "low".into());
            m.insert("enqueued_at".into(), now_ms.into());
        });
        if st.queued.insert(agent) {
            st.lists[priority_index(Priority::Low)].push_front(updated);
        }
        attempt
    }

    fn try_claim(&self, mode: RunnerMode, runner: &RunnerId, lease: Duration) -> Option<Claim> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let mut budget = CLAIM_SCAN_LIMIT;
        for &priority in mode.priorities() {
            let li = priority_index(priority);
            let mut pos = st.lists[li].len();
            while budget > 0 && pos > 0 {
                pos -= 1;
                budget -= 1;
                let raw = st.lists[li][pos].clone();
                let item = match WorkItem::from_json(&raw) {
                    Ok(item) => item,
                    Err(e) => {
                        st.lists[li].remove(pos);
                        tracing::warn!(reason = %e.reason, "malformed_work_dead_lettered");
                        Self::bury(&mut st, Value::String(raw), &e.to_string(), now);
                        continue;
                    }
                };
                if !mode.allows(item.task_type) || st.active.contains_key(&item.agent_id) {
                    continue;
                }
                st.lists[li].remove(pos);
                // items of the original fleet have no id: store the one they got, stable across retries
                let has_id = serde_json::from_str::<Value>(&raw)
                    .ok()
                    .and_then(|v| v.get("id")?.as_str().map(|s| !s.is_empty()))
                    .unwrap_or(false);
                let raw = if has_id {
                    raw
                } else {
                    edit(&raw, |m| {
                        m.insert("id".into(), item.id.as_str().into());
                    })
                };
                let id = ActivationId::generate();
                let lease_ms = duration_ms(lease).max(1);
                st.queued.remove(&item.agent_id);
                st.active.insert(item.agent_id.clone(), id.clone());
                st.leases.insert(
                    id.clone(),
                    Lease {
                        raw: raw.clone(),
                        agent: item.agent_id.clone(),
                        runner: runner.clone(),
                        started_at_ms: now,
                        deadline_ms: now + lease_ms,
                        key_expires: Instant::now() + Duration::from_millis(lease_ms as u64),
                        stopped: false,
                    },
                );
                return Some(Claim {
                    activation_id: id,
                    item,
                    deadline_ms: now + lease_ms,
                    queue_wait: waited(&raw, now),
                });
            }
        }
        None
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn enqueue(&self, item: WorkItem) -> Result<EnqueueOutcome, QueueError> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if st.active.contains_key(&item.agent_id) {
            return Ok(EnqueueOutcome::AgentActive);
        }
        if let Some(&until) = st.backoff.get(&item.agent_id) {
            if until > now {
                return Ok(EnqueueOutcome::InBackoff {
                    until: ms_to_datetime(until),
                });
            }
            st.backoff.remove(&item.agent_id);
        }
        if !st.queued.insert(item.agent_id.clone()) {
            return Ok(EnqueueOutcome::AlreadyQueued);
        }
        st.lists[priority_index(item.priority)].push_front(encode_item(&item, now));
        drop(st);
        self.wake.notify_waiters();
        Ok(EnqueueOutcome::Enqueued)
    }

    async fn claim(
        &self,
        mode: RunnerMode,
        runner: &RunnerId,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Claim>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a change between the look and the wait wakes us.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(claim) = self.try_claim(mode, runner, lease) {
                return Ok(Some(claim));
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = WaitingGuard(&self.waiting);
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn renew(
        &self,
        activation: &ActivationId,
        lease: Duration,
    ) -> Result<RenewOutcome, QueueError> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if !Self::owned(&st, activation) {
            return Ok(RenewOutcome::Lost);
        }
        let lease_ms = duration_ms(lease).max(1);
        if let Some(l) = st.leases.get_mut(activation) {
            l.deadline_ms = now + lease_ms;
            l.key_expires = Instant::now() + Duration::from_millis(lease_ms as u64);
        }
        Ok(RenewOutcome::Renewed)
    }

    async fn complete(&self, activation: &ActivationId) -> Result<bool, QueueError> {
        let mut st = self.lock();
        if !Self::owned(&st, activation) {
            return Ok(false);
        }
        let Some(raw) = Self::end_lease(&mut st, activation) else {
            return Ok(false);
        };
        if let Ok(item) = WorkItem::from_json(&raw) {
            st.failures.remove(&item.agent_id);
            st.backoff.remove(&item.agent_id);
        }
        drop(st);
        self.wake.notify_waiters();
        Ok(true)
    }

    async fn fail(
        &self,
        activation: &ActivationId,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        let now = self.clock.now_ms();
        let c = &self.config;
        let mut st = self.lock();
        if !Self::owned(&st, activation) {
            return Ok(FailOutcome::NotOwner);
        }
        let Some(raw) = Self::end_lease(&mut st, activation) else {
            return Ok(FailOutcome::NotOwner);
        };
        let Ok(item) = WorkItem::from_json(&raw) else {
            Self::bury(&mut st, Value::String(raw), error, now);
            return Ok(FailOutcome::Dead);
        };
        let (mut n, last) = st.failures.get(&item.agent_id).copied().unwrap_or((0, 0));
        if n > 0 && now - last >= duration_ms(c.failure_decay) {
            n = 0;
        }
        n = n.saturating_add(1);
        st.failures.insert(item.agent_id.clone(), (n, now));
        let backoff_until = c.backoff_for(n).map(|d| now + duration_ms(d));
        if let Some(until) = backoff_until {
            st.backoff.insert(item.agent_id.clone(), until);
        }
        let next_attempt = item.attempt.saturating_add(1);
        let outcome = if !retryable || next_attempt >= c.max_attempts {
            let updated = edit(&raw, |m| {
                m.insert("attempt".into(), next_attempt.into());
                m.insert("last_error".into(), error.into());
            });
            Self::bury(&mut st, item_value(&updated), error, now);
            FailOutcome::Dead
        } else if let Some(until) = backoff_until {
            tracing::warn!(activation_id = %activation, agent_id = %item.agent_id, failures = n,
                backoff_until = %ms_to_datetime(until), "backoff");
            FailOutcome::Backoff {
                until: ms_to_datetime(until),
                failures: n,
            }
        } else {
            FailOutcome::Requeued {
                attempt: Self::requeue(&mut st, &raw, error, now),
            }
        };
        drop(st);
        self.wake.notify_waiters();
        Ok(outcome)
    }

    async fn release(&self, activation: &ActivationId) -> Result<bool, QueueError> {
        let mut st = self.lock();
        if !Self::owned(&st, activation) {
            return Ok(false);
        }
        let Some(raw) = Self::end_lease(&mut st, activation) else {
            return Ok(false);
        };
        if let Ok(item) = WorkItem::from_json(&raw)
            && st.queued.insert(item.agent_id.clone())
        {
            st.lists[priority_index(item.priority)].push_back(raw);
        }
        drop(st);
        self.wake.notify_waiters();
        Ok(true)
    }

    async fn reap(&self, now_ms: i64) -> Result<ReapReport, QueueError> {
        let mut st = self.lock();
        let mut victims: Vec<(i64, ActivationId, &'static str)> = st
            .leases
            .iter()
            .filter_map(|(id, l)| {
                if l.deadline_ms <= now_ms {
                    Some((l.deadline_ms, id.clone(), "lease expired"))
                } else if !l.key_exists() {
                    Some((l.deadline_ms, id.clone(), "activation stopped"))
                } else {
                    None
                }
            })
            .collect();
        victims.sort();
        victims.truncate(REAP_LIMIT);
        let mut report = ReapReport::default();
        for (_, id, reason) in victims {
            let Some(raw) = Self::end_lease(&mut st, &id) else {
                continue;
            };
            match WorkItem::from_json(&raw) {
                Ok(item) if item.attempt.saturating_add(1) >= self.config.max_attempts => {
                    let updated = edit(&raw, |m| {
                        m.insert("attempt".into(), item.attempt.saturating_add(1).into());
                        m.insert("last_error".into(), reason.into());
                    });
                    Self::bury(&mut st, item_value(&updated), reason, now_ms);
                    report.dead += 1;
                }
                Ok(_) => {
                    Self::requeue(&mut st, &raw, reason, now_ms);
                    report.requeued += 1;
                }
                Err(_) => {
                    Self::bury(
                        &mut st,
                        Value::String(raw),
                        &format!("unreadable lease: {reason}"),
                        now_ms,
                    );
                    report.orphaned += 1;
                }
            }
        }
        let State { active, leases, .. } = &mut *st;
        let before = active.len();
        active.retain(|_, id| leases.contains_key(id));
        report.orphaned += u32::try_from(before - active.len()).unwrap_or(u32::MAX);
        drop(st);
        if !report.is_empty() {
            self.wake.notify_waiters();
        }
        Ok(report)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let now = self.clock.now_ms();
        let st = self.lock();
        Ok(QueueStats {
            depth: [
                st.lists[0].len() as u64,
                st.lists[1].len() as u64,
                st.lists[2].len() as u64,
            ],
            active: st.active.len() as u64,
            in_backoff: st.backoff.values().filter(|&&u| u > now).count() as u64,
            dead: st.dead.len() as u64,
            oldest_waiting_age: st
                .lists
                .iter()
                .filter_map(|l| l.back())
                .map(|raw| waited(raw, now))
                .max(),
        })
    }

    async fn active(&self) -> Result<Vec<ActiveActivation>, QueueError> {
        let st = self.lock();
        let mut out: Vec<ActiveActivation> = st
            .leases
            .iter()
            .map(|(id, l)| ActiveActivation {
                activation_id: id.clone(),
                agent_id: l.agent.clone(),
                runner: l.key_exists().then(|| l.runner.clone()),
                item: WorkItem::from_json(&l.raw).ok(),
                started_at_ms: if l.key_exists() { l.started_at_ms } else { 0 },
                deadline_ms: l.deadline_ms,
                stopped: !l.key_exists(),
            })
            .collect();
        out.sort_by_key(|a| a.deadline_ms);
        Ok(out)
    }

    async fn stop_activation(&self, activation: &ActivationId) -> Result<bool, QueueError> {
        let mut st = self.lock();
        match st.leases.get_mut(activation) {
            Some(l) if l.key_exists() => {
                l.stopped = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn peek(&self, priority: Priority, limit: usize) -> Result<Vec<WorkItem>, QueueError> {
        let st = self.lock();
        let list = &st.lists[priority_index(priority)];
        Ok(list
            .iter()
            .rev()
            .take(limit)
            .filter_map(|raw| WorkItem::from_json(raw).ok())
            .collect())
    }

    async fn backoffs(&self) -> Result<Vec<BackoffEntry>, QueueError> {
        let now = self.clock.now_ms();
        let st = self.lock();
        let mut out: Vec<BackoffEntry> = st
            .backoff
            .iter()
            .filter(|&(_, &until)| until > now)
            .map(|(agent, &until)| BackoffEntry {
                agent_id: agent.clone(),
                until: ms_to_datetime(until),
                failures: st.failures.get(agent).map(|f| f.0).unwrap_or(0),
            })
            .collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(out)
    }

    async fn clear_backoff(&self, agent: &AgentId) -> Result<bool, QueueError> {
        let mut st = self.lock();
        let a = st.backoff.remove(agent).is_some();
        let b = st.failures.remove(agent).is_some();
        Ok(a || b)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let st = self.lock();
        Ok(st
            .dead
            .iter()
            .take(limit)
            .map(|e| parse_dead_letter(e))
            .collect())
    }

    async fn retry_dead(&self, id: &WorkItemId) -> Result<bool, QueueError> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        let found = st.dead.iter().position(|e| {
            serde_json::from_str::<Value>(e)
                .ok()
                .and_then(|v| v.get("item")?.get("id")?.as_str().map(|s| s == id.as_str()))
                .unwrap_or(false)
        });
        let Some(pos) = found else { return Ok(false) };
        let entry: Value = serde_json::from_str(&st.dead[pos]).unwrap_or(Value::Null);
        let raw = entry.get("item").map(|v| v.to_string()).unwrap_or_default();
        let Ok(item) = WorkItem::from_json(&raw) else {
            return Ok(false);
        };
        if st.active.contains_key(&item.agent_id) || !st.queued.insert(item.agent_id.clone()) {
            return Ok(false);
        }
        st.dead.remove(pos);
        let updated = edit(&raw, |m| {
            m.insert("attempt".into(), 0.into());
            m.insert("enqueued_at".into(), now.into());
        });
        st.lists[priority_index(item.priority)].push_front(updated);
        drop(st);
        self.wake.notify_waiters();
        Ok(true)
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        let mut st = self.lock();
        let n = st.dead.len() as u64;
        st.dead.clear();
        Ok(n)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
