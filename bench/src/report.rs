//! What a run measured and whether it held: per-mention accounting from the Hub's state (answered
//! exactly once, lost, duplicated), percentiles, the fault log, pass/fail checks, and the table
//! and JSON renderings of a [`Report`].

use crate::fleet::ProcessReport;
use crate::scenario::{Mention, ScenarioOptions, hub_time};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Per-mention results, computed from `/_dev/state`.
#[derive(Debug, Default, Clone)]
pub struct Accounting {
    /// Mentions with at least one reply by the mentioned agent on that post.
    pub answered: usize,
    /// Mentions with none.
    pub lost: usize,
    /// Replies beyond the first, summed over mentions.
    pub duplicates: usize,
    /// Comments by benchmark agents on posts that did not mention them.
    pub stray: usize,
    /// Mention -> first reply, per answered mention.
    pub latencies: Vec<TimeDelta>,
    /// `(mention created_at, first reply created_at)` per answered mention.
    pub reply_times: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Earliest mention.
    pub first_mention: Option<DateTime<Utc>>,
    /// Latest first reply.
    pub last_reply: Option<DateTime<Utc>>,
}

/// Counts replies per `(agent, post)` for `mentions` in a Hub state dump.
pub fn account(state: &Value, mentions: &[Mention]) -> Accounting {
    let empty = Vec::new();
    let posts: HashMap<&str, DateTime<Utc>> = state["posts"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, hub_time(&p["created_at"])?)))
        .collect();
    let wanted: HashMap<(&str, &str), ()> = mentions
        .iter()
        .map(|m| ((m.agent.as_str(), m.post_id.as_str()), ()))
        .collect();
    let agents: std::collections::HashSet<&str> =
        mentions.iter().map(|m| m.agent.as_str()).collect();
    let mut replies: HashMap<(&str, &str), Vec<DateTime<Utc>>> = HashMap::new();
    let mut acc = Accounting::default();
    for c in state["comments"].as_array().unwrap_or(&empty) {
        let (Some(author), Some(post)) = (c["author"]["id"].as_str(), c["post_id"].as_str()) else {
            continue;
        };
        if !agents.contains(author) {
            continue;
        }
        if !wanted.contains_key(&(author, post)) {
            acc.stray += 1;
            continue;
        }
        if let Some(t) = hub_time(&c["created_at"]) {
            replies.entry((author, post)).or_default().push(t);
        }
    }
    for m in mentions {
        let created = posts.get(m.post_id.as_str()).copied();
        if let Some(c) = created {
            acc.first_mention = Some(acc.first_mention.map_or(c, |f| f.min(c)));
        }
        match replies.get(&(m.agent.as_str(), m.post_id.as_str())) {
            Some(times) if !times.is_empty() => {
                acc.answered += 1;
                acc.duplicates += times.len() - 1;
                let first = times.iter().copied().min().unwrap_or_default();
                acc.last_reply = Some(acc.last_reply.map_or(first, |l| l.max(first)));
                if let Some(c) = created {
                    acc.latencies.push(first - c);
                    acc.reply_times.push((c, first));
                }
            }
            _ => acc.lost += 1,
        }
    }
    acc
}

/// The `q` quantile (nearest rank) of `values`; `None` when empty.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// What the fault schedule did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FaultLog {
    /// `(seconds since the first mention, what happened)`.
    pub events: Vec<(f64, String)>,
    /// When the fault ended (restart done, switch off, leader killed).
    pub cleared_at: Option<DateTime<Utc>>,
    /// Leader kill -> another coordinator reports `is_leader 1`.
    pub failover_s: Option<f64>,
    /// Requests answered with an injected fault (proxy scenarios).
    pub injected: u64,
}

/// One pass/fail line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub pass: bool,
    /// The measured values.
    pub detail: String,
}

impl Check {
    /// A check.
    pub fn new(name: &str, pass: bool, detail: String) -> Self {
        Self {
            name: name.into(),
            pass,
            detail,
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// When it ended (RFC 3339).
    pub date: String,
    /// The options.
    pub options: ScenarioOptions,
    /// Mentions written.
    pub mentions: usize,
    /// Mentions answered at least once.
    pub answered: usize,
    /// Mentions never answered.
    pub lost: usize,
    /// Extra replies.
    pub duplicates: usize,
    /// Replies on posts that did not mention the agent.
    pub stray_replies: usize,
    /// Successful activations (sum of the agents' Hub `activation_count`).
    pub activations: u64,
    /// Seconds until the last mention was written.
    pub written_s: f64,
    /// Seconds until every mention was answered (or the timeout).
    pub answered_s: f64,
    /// First mention -> last first reply, seconds (Hub timestamps).
    pub window_s: f64,
    /// Answered mentions per second over the window.
    pub replies_per_s: f64,
    /// Activations per second over the window.
    pub activations_per_s: f64,
    /// Mention -> reply latency percentiles, ms.
    pub latency_ms_p50: Option<f64>,
    /// p95.
    pub latency_ms_p95: Option<f64>,
    /// p99.
    pub latency_ms_p99: Option<f64>,
    /// Worst.
    pub latency_ms_max: Option<f64>,
    /// Mean enqueue -> claim wait from the runners' `botburrow_queue_wait_seconds`, ms.
    pub queue_wait_mean_ms: Option<f64>,
    /// Bucket bound holding 50 % of the waits, ms.
    pub queue_wait_p50_le_ms: Option<f64>,
    /// 95 %.
    pub queue_wait_p95_le_ms: Option<f64>,
    /// 99 %.
    pub queue_wait_p99_le_ms: Option<f64>,
    /// Valkey commands (INFO commandstats delta) per activation.
    pub valkey_calls_per_activation: Option<f64>,
    /// Hub requests per activation (only when the Hub is behind the proxy).
    pub hub_requests_per_activation: Option<f64>,
    /// The fault schedule.
    pub faults: FaultLog,
    /// Fault cleared -> every mention written before it answered, seconds.
    pub recovery_s: Option<f64>,
    /// `work:active` entries after the drain.
    pub leftovers_active: i64,
    /// `work:leases` entries after the drain.
    pub leftovers_leases: i64,
    /// Items still waiting after the drain.
    pub leftovers_waiting: i64,
    /// Agents in `work:backoff` at the end.
    pub agents_in_backoff: i64,
    /// Per-process usage.
    pub processes: Vec<ProcessReport>,
    /// Pass/fail lines.
    pub checks: Vec<Check>,
    /// Answered count seen by the wait loop (before the final drain).
    pub early_answered: usize,
}

impl Report {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {}  agents {}  mentions {} ({})  runners {} x {}  coordinators {}  llm latency {} ms",
            self.scenario,
            o.agents,
            self.mentions,
            if o.rate > 0.0 {
                format!("{}/s", o.rate)
            } else {
                "burst".into()
            },
            o.runners,
            o.concurrency,
            o.coordinators,
            o.llm_latency_ms
        );
        let rows: Vec<(&str, String)> = vec![
            (
                "answered / lost / duplicates",
                format!(
                    "{} / {} / {}",
                    self.answered,
                    self.lost,
                    self.duplicates + self.stray_replies
                ),
            ),
            ("activations", self.activations.to_string()),
            (
                "window (first mention -> last reply)",
                format!("{:.2} s", self.window_s),
            ),
            ("replies/s", format!("{:.1}", self.replies_per_s)),
            ("activations/s", format!("{:.1}", self.activations_per_s)),
            (
                "mention->reply p50/p95/p99/max ms",
                format!(
                    "{} / {} / {} / {}",
                    f(self.latency_ms_p50),
                    f(self.latency_ms_p95),
                    f(self.latency_ms_p99),
                    f(self.latency_ms_max)
                ),
            ),
            (
                "enqueue->claim mean ms; p50/p95/p99 <= ms",
                format!(
                    "{}; {} / {} / {}",
                    f(self.queue_wait_mean_ms),
                    f(self.queue_wait_p50_le_ms),
                    f(self.queue_wait_p95_le_ms),
                    f(self.queue_wait_p99_le_ms)
                ),
            ),
            (
                "valkey commands / activation",
                f(self.valkey_calls_per_activation),
            ),
            (
                "hub requests / activation",
                f(self.hub_requests_per_activation),
            ),
            ("failover s", f(self.faults.failover_s)),
            ("recovery s", f(self.recovery_s)),
            (
                "left: active / leases / waiting / backoff",
                format!(
                    "{} / {} / {} / {}",
                    self.leftovers_active,
                    self.leftovers_leases,
                    self.leftovers_waiting,
                    self.agents_in_backoff
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<44} {v}");
        }
        let _ = writeln!(
            s,
            "  {:<22} {:>11} {:>14} {:>9} {:>7}",
            "process", "idle MiB", "peak RSS MiB", "CPU s", "killed"
        );
        for p in &self.processes {
            let _ = writeln!(
                s,
                "  {:<22} {:>11.1} {:>14.1} {:>9.2} {:>7}",
                p.name,
                p.idle_rss_kib as f64 / 1024.0,
                p.usage.peak_rss_kib as f64 / 1024.0,
                p.usage.cpu_seconds,
                if p.killed { "yes" } else { "" }
            );
        }
        for (t, e) in &self.faults.events {
            let _ = writeln!(s, "  fault t+{t:.2}s  {e}");
        }
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if c.pass { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(agent: &str, post: &str) -> Mention {
        Mention {
            agent: agent.into(),
            post_id: post.into(),
        }
    }

    #[test]
    fn accounting_finds_lost_duplicate_and_stray_replies() {
        let state = json!({
            "posts": [
                {"id": "p1", "created_at": "2026-11-25T07:00:00.000000Z"},
                {"id": "p2", "created_at": "2026-11-25T07:00:00.100000Z"},
                {"id": "p3", "created_at": "2026-11-25T07:00:00.200000Z"},
            ],
            "comments": [
                {"post_id": "p1", "author": {"id": "a"}, "created_at": "2026-11-25T07:00:00.050000Z"},
                {"post_id": "p2", "author": {"id": "b"}, "created_at": "2026-11-25T07:00:00.400000Z"},
                {"post_id": "p2", "author": {"id": "b"}, "created_at": "2026-11-25T07:00:00.300000Z"},
                {"post_id": "p1", "author": {"id": "b"}, "created_at": "2026-11-25T07:00:01Z"},
                {"post_id": "p3", "author": {"id": "ron"}, "created_at": "2026-11-25T07:00:01Z"},
            ],
        });
        let acc = account(&state, &[m("a", "p1"), m("b", "p2"), m("a", "p3")]);
        assert_eq!(acc.answered, 2);
        assert_eq!(acc.lost, 1, "p3 has no reply by a");
        assert_eq!(acc.duplicates, 1, "b answered p2 twice");
        assert_eq!(acc.stray, 1, "b replied on p1, which mentioned a");
        let mut ms: Vec<i64> = acc.latencies.iter().map(|d| d.num_milliseconds()).collect();
        ms.sort();
        assert_eq!(ms, vec![50, 200], "first reply counts");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
