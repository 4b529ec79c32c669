//! `botburrow queue ...` and `botburrow activation ...`: what an operator would otherwise do with
//! `redis-cli`, through the same queue code the fleet uses (so scripts stay atomic and fenced).

use crate::output;
use botburrow_shared::ids::{ActivationId, AgentId, WorkItemId};
use botburrow_shared::queue::{QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::work::Priority;
use clap::Subcommand;
use std::process::ExitCode;

/// `botburrow queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth per priority, active leases, agents in backoff, dead letters, oldest wait.
    Stats,
    /// Show waiting items of one priority (default: all), next to be claimed first.
    Peek {
        /// high, normal or low.
        #[arg(long)]
        priority: Option<Priority>,
        /// How many per list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Agents whose circuit breaker is open; `backoff clear AGENT` closes it.
    Backoff {
        /// `clear`.
        #[command(subcommand)]
        action: Option<BackoffAction>,
    },
    /// Dead-lettered items; `dlq retry ID` requeues one, `dlq purge` empties the list.
    Dlq {
        /// `retry ID` or `purge`.
        #[command(subcommand)]
        action: Option<DlqAction>,
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// `botburrow queue backoff clear AGENT`
#[derive(Debug, Subcommand)]
pub enum BackoffAction {
    /// Reset an agent's failures and backoff.
    Clear {
        /// The agent id.
        agent: String,
    },
}

/// `botburrow queue dlq retry|purge`
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Put a dead item back in the queue (attempts reset).
    Retry {
        /// The work item id (see `dlq`).
        id: String,
    },
    /// Delete every dead letter.
    Purge,
}

/// `botburrow activation ...`
#[derive(Debug, Subcommand)]
pub enum ActivationCommand {
    /// Leased activations: agent, runner, age, deadline.
    List,
    /// Force-stop one activation (deletes `activation:{id}`; its runner cancels within seconds).
    Stop {
        /// The activation id.
        id: String,
    },
}

fn fmt_age_ms(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    if s >= 3600 { format!("{}h{}m", s / 3600, (s % 3600) / 60) } else if s >= 60 { format!("{}m{}s", s / 60, s % 60) } else { format!("{s}s") }
}

async fn connect(url: &str) -> Result<ValkeyQueue, String> {
    ValkeyQueue::connect(url, QueueConfig::default())
        .await
        .map_err(|e| format!("cannot reach Valkey at {}: {e}", botburrow_shared::settings::redact_url(url)))
}

/// Runs a `queue` subcommand against Valkey.
pub async fn run_queue(url: &str, cmd: QueueCommand, json: bool) -> Result<ExitCode, String> {
    let q = connect(url).await?;
    let err = |e: botburrow_shared::queue::QueueError| e.to_string();
    match cmd {
        QueueCommand::Stats => {
            let s = q.stats().await.map_err(err)?;
            let oldest = s.oldest_waiting_age.map(|d| d.as_secs_f64());
            if json {
                println!("{}", output::json(&serde_json::json!({
                    "high": s.depth_of(Priority::High), "normal": s.depth_of(Priority::Normal), "low": s.depth_of(Priority::Low),
                    "waiting": s.total_waiting(), "active": s.active, "in_backoff": s.in_backoff, "dead": s.dead,
                    "oldest_waiting_seconds": oldest })));
            } else {
                let rows = vec![
                    vec!["work:queue:high".into(), s.depth_of(Priority::High).to_string()],
                    vec!["work:queue:normal".into(), s.depth_of(Priority::Normal).to_string()],
                    vec!["work:queue:low".into(), s.depth_of(Priority::Low).to_string()],
                    vec!["active (leased)".into(), s.active.to_string()],
                    vec!["agents in backoff".into(), s.in_backoff.to_string()],
                    vec!["dead letters".into(), s.dead.to_string()],
                    vec!["oldest waiting".into(), oldest.map(|o| format!("{o:.1}s")).unwrap_or_else(|| "-".into())],
                ];
                print!("{}", output::table(&["WHAT", "VALUE"], &rows));
            }
        }
        QueueCommand::Peek { priority, limit } => {
            let prios: Vec<Priority> = match priority { Some(p) => vec![p], None => Priority::ALL.to_vec() };
            let mut rows = Vec::new();
            let mut items = Vec::new();
            for p in prios {
                for item in q.peek(p, limit).await.map_err(err)? {
                    rows.push(vec![p.as_str().into(), item.id.to_string(), item.agent_id.to_string(), item.task_type.as_str().into(), item.attempt.to_string()]);
                    items.push(serde_json::json!({"priority": p.as_str(), "item": item}));
                }
            }
            if json { println!("{}", output::json(&serde_json::Value::Array(items))); } else { print!("{}", output::table(&["PRIORITY", "ID", "AGENT", "TASK", "ATTEMPT"], &rows)); }
        }
        QueueCommand::Backoff { action: Some(BackoffAction::Clear { agent }) } => {
            let cleared = q.clear_backoff(&AgentId::new(agent.clone())).await.map_err(err)?;
            if json { println!("{}", serde_json::json!({"agent": agent, "cleared": cleared})); } else if cleared { println!("cleared backoff of {agent}"); } else { println!("{agent} was not in backoff"); }
        }
        QueueCommand::Backoff { action: None } => {
            let entries = q.backoffs().await.map_err(err)?;
            if json {
                let v: Vec<_> = entries.iter().map(|b| serde_json::json!({"agent": b.agent_id, "until": b.until.to_rfc3339(), "failures": b.failures})).collect();
                println!("{}", output::json(&serde_json::Value::Array(v)));
            } else {
                let rows: Vec<Vec<String>> = entries.iter().map(|b| vec![b.agent_id.to_string(), b.failures.to_string(), b.until.to_rfc3339()]).collect();
                print!("{}", output::table(&["AGENT", "FAILURES", "UNTIL"], &rows));
            }
        }
        QueueCommand::Dlq { action: Some(DlqAction::Retry { id }), .. } => {
            let ok = q.retry_dead(&WorkItemId::new(id.clone())).await.map_err(err)?;
            if json { println!("{}", serde_json::json!({"id": id, "requeued": ok})); } else if ok { println!("requeued {id}"); } else { println!("no dead letter with id {id}"); }
            if !ok { return Ok(ExitCode::from(1)); }
        }
        QueueCommand::Dlq { action: Some(DlqAction::Purge), .. } => {
            let n = q.purge_dead().await.map_err(err)?;
            if json { println!("{}", serde_json::json!({"purged": n})); } else { println!("purged {n} dead letter(s)"); }
        }
        QueueCommand::Dlq { action: None, limit } => {
            let dead = q.dead_letters(limit).await.map_err(err)?;
            if json {
                let v: Vec<_> = dead.iter().map(|d| serde_json::json!({"item": d.item, "raw_item": d.raw_item, "error": d.error, "failed_at": d.failed_at.to_rfc3339()})).collect();
                println!("{}", output::json(&serde_json::Value::Array(v)));
            } else {
                let rows: Vec<Vec<String>> = dead.iter().map(|d| {
                    let (id, agent) = d.item.as_ref().map(|i| (i.id.to_string(), i.agent_id.to_string())).unwrap_or_else(|| ("(malformed)".into(), "-".into()));
                    vec![id, agent, d.failed_at.to_rfc3339(), d.error.clone()]
                }).collect();
                print!("{}", output::table(&["ID", "AGENT", "FAILED AT", "ERROR"], &rows));
            }
        }
    }
    q.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Runs an `activation` subcommand against Valkey.
pub async fn run_activation(url: &str, cmd: ActivationCommand, json: bool) -> Result<ExitCode, String> {
    let q = connect(url).await?;
    let err = |e: botburrow_shared::queue::QueueError| e.to_string();
    let code = match cmd {
        ActivationCommand::List => {
            let now = chrono::Utc::now().timestamp_millis();
            let active = q.active().await.map_err(err)?;
            if json {
                let v: Vec<_> = active.iter().map(|a| serde_json::json!({"activation_id": a.activation_id, "agent": a.agent_id,
                    "runner": a.runner, "started_at_ms": a.started_at_ms, "deadline_ms": a.deadline_ms, "stopped": a.stopped,
                    "task_type": a.item.as_ref().map(|i| i.task_type.as_str())})).collect();
                println!("{}", output::json(&serde_json::Value::Array(v)));
            } else {
                let rows: Vec<Vec<String>> = active.iter().map(|a| vec![
                    a.activation_id.to_string(), a.agent_id.to_string(),
                    a.runner.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                    if a.started_at_ms > 0 { fmt_age_ms(now - a.started_at_ms) } else { "-".into() },
                    if a.stopped { "stopped".into() } else { format!("in {}", fmt_age_ms(a.deadline_ms - now)) },
                ]).collect();
                print!("{}", output::table(&["ACTIVATION", "AGENT", "RUNNER", "AGE", "LEASE"], &rows));
            }
            ExitCode::SUCCESS
        }
        ActivationCommand::Stop { id } => {
            let stopped = q.stop_activation(&ActivationId::new(id.clone())).await.map_err(err)?;
            if json { println!("{}", serde_json::json!({"activation_id": id, "stopped": stopped})); }
            else if stopped { println!("stopped {id}: its runner cancels it at the next lease renewal"); }
            else { println!("no activation {id}"); }
            if stopped { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    };
    q.close().await;
    Ok(code)
}
