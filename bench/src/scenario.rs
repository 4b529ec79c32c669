//! Scenarios: start a fleet, write mentions (a burst or a target rate), inject the scenario's fault
//! on a schedule, wait until every mention is answered (or the timeout), let the queue drain, then
//! account for every mention (answered once, lost, duplicated) from the Hub's `/_dev/state` and
//! collect latency, throughput, queue wait, Valkey commands and per-process cost into a [`Report`].

use crate::fleet::{
    Fleet, FleetError, FleetOptions, histogram_buckets, histogram_quantile, metric_sum,
};
use crate::procs::Binaries;
use crate::proxy::Fault;
use crate::report::{Accounting, Check, FaultLog, Report, account, percentile};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a scenario could not run to the end (a lost mention is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The fleet failed.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A mention could not be written to the Hub.
    #[error("writing mentions: {0}")]
    Mentions(String),
}

/// Which fault, if any, is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No fault: throughput and latency.
    Load,
    /// SIGKILL a random runner every `kill_every` during the fault window; each is restarted.
    KillRunner,
    /// Two coordinators (`LEADER_ELECTION=valkey`); SIGKILL the leader, measure failover.
    KillLeader,
    /// Valkey with AOF is SIGKILLed and restarted after `fault_for`.
    RestartValkey,
    /// The Hub answers 500 to the fleet for `fault_for`.
    Hub500,
    /// The Hub hangs for `fault_for`.
    HubHang,
    /// The LLM answers 429 (`Retry-After: 1`) for `fault_for`.
    Llm429,
    /// The LLM answers 500 for `fault_for`.
    Llm500,
    /// The LLM hangs for `fault_for`.
    LlmHang,
    /// A runner and the leader SIGKILLed at the same moment (the test suite's reduced run).
    KillRunnerAndLeader,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::KillRunner => "kill-runner",
            Self::KillLeader => "kill-leader",
            Self::RestartValkey => "restart-valkey",
            Self::Hub500 => "hub-500",
            Self::HubHang => "hub-hang",
            Self::Llm429 => "llm-429",
            Self::Llm500 => "llm-500",
            Self::LlmHang => "llm-hang",
            Self::KillRunnerAndLeader => "kill-runner-and-leader",
        }
    }

    /// Every fault scenario, in the order `all-faults` runs them.
    pub const FAULTS: [Scenario; 9] = [
        Self::KillRunner,
        Self::KillLeader,
        Self::RestartValkey,
        Self::Hub500,
        Self::HubHang,
        Self::Llm429,
        Self::Llm500,
        Self::LlmHang,
        Self::KillRunnerAndLeader,
    ];

    fn needs_two_coordinators(self) -> bool {
        matches!(self, Self::KillLeader | Self::KillRunnerAndLeader)
    }
}

/// Everything a run needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioOptions {
    /// The fault.
    pub scenario: Scenario,
    /// Agents.
    pub agents: usize,
    /// Mentions written by `ron`.
    pub mentions: usize,
    /// Mentions per second; 0 writes them as a burst.
    pub rate: f64,
    /// Parallel writers of a burst.
    pub writers: usize,
    /// Runner processes.
    pub runners: usize,
    /// Coordinator processes (raised to 2 for leader scenarios).
    pub coordinators: usize,
    /// `MAX_CONCURRENT_ACTIVATIONS`.
    pub concurrency: u32,
    /// Mock LLM latency.
    pub llm_latency_ms: u64,
    /// When the fault starts, after the first mention is written.
    pub fault_at: Duration,
    /// How long it lasts (the window for kill-runner).
    pub fault_for: Duration,
    /// Period of runner kills in kill-runner.
    pub kill_every: Duration,
    /// Give up waiting for replies after this long.
    pub timeout: Duration,
    /// Coordinators' and runners' `LOG_LEVEL`.
    pub log_level: String,
    /// Coordinators' `POLL_INTERVAL` (`None`: the product default).
    pub poll_interval: Option<u64>,
    /// Where process logs go.
    #[serde(skip)]
    pub log_dir: PathBuf,
    /// The binaries.
    #[serde(skip)]
    pub bins: Option<Binaries>,
}

impl ScenarioOptions {
    /// Sensible defaults for `scenario`: load is a burst; faults use a steady rate so that work
    /// is in flight when the fault hits.
    pub fn defaults(scenario: Scenario, bins: Binaries, log_dir: PathBuf) -> Self {
        let load = scenario == Scenario::Load;
        Self {
            scenario,
            agents: 20,
            mentions: if load { 2000 } else { 600 },
            rate: if load { 0.0 } else { 40.0 },
            writers: 16,
            runners: if load { 1 } else { 2 },
            coordinators: if scenario.needs_two_coordinators() {
                2
            } else {
                1
            },
            concurrency: 32,
            llm_latency_ms: 0,
            fault_at: Duration::from_secs(3),
            fault_for: Duration::from_secs(5),
            kill_every: Duration::from_secs(3),
            timeout: Duration::from_secs(120),
            log_level: "info".into(),
            poll_interval: None,
            log_dir,
            bins: Some(bins),
        }
    }
}

/// One written mention.
#[derive(Debug, Clone)]
pub struct Mention {
    /// Mentioned agent.
    pub agent: String,
    /// The post.
    pub post_id: String,
}

async fn write_mentions(
    fleet: &Fleet,
    opts: &ScenarioOptions,
) -> Result<Vec<Mention>, ScenarioError> {
    let jobs: Vec<(usize, String)> = (0..opts.mentions)
        .map(|i| (i, fleet.agent_ids[i % fleet.agent_ids.len()].clone()))
        .collect();
    let start = tokio::time::Instant::now();
    let rate = opts.rate;
    let results: Vec<Result<Mention, FleetError>> = futures::stream::iter(jobs)
        .map(|(i, agent)| async move {
            if rate > 0.0 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            }
            let post_id = fleet.post_mention(&agent, i).await?;
            Ok(Mention { agent, post_id })
        })
        .buffer_unordered(if rate > 0.0 {
            opts.mentions.max(1)
        } else {
            opts.writers.max(1)
        })
        .collect()
        .await;
    results
        .into_iter()
        .map(|r| r.map_err(|e| ScenarioError::Mentions(e.to_string())))
        .collect()
}

fn secs_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// Runs the scenario's fault schedule; returns what happened and when the fault was cleared.
async fn drive_faults(fleet: Arc<Fleet>, opts: ScenarioOptions, t0: Instant) -> FaultLog {
    let mut log = FaultLog::default();
    let at = t0 + opts.fault_at;
    tokio::time::sleep_until(at.into()).await;
    let note = |log: &mut FaultLog, what: String| log.events.push((secs_since(t0), what));
    let proxy_fault = |fault: Fault| match opts.scenario {
        Scenario::Hub500 | Scenario::HubHang => fleet.hub_proxy.as_ref().map(|p| (p, fault)),
        _ => fleet.llm_proxy.as_ref().map(|p| (p, fault)),
    };
    match opts.scenario {
        Scenario::Load => return log,
        Scenario::KillRunner => {
            let end = at + opts.fault_for;
            loop {
                let n = fleet.runners.lock().await.len();
                let i = rand::rng().random_range(0..n.max(1));
                match fleet.kill_and_replace_runner(i).await {
                    Ok(name) => note(&mut log, format!("SIGKILL {name}, replacement started")),
                    Err(e) => note(&mut log, format!("runner replacement failed: {e}")),
                }
                log.cleared_at = Some(Utc::now());
                let next = Instant::now() + opts.kill_every;
                if next > end {
                    break;
                }
                tokio::time::sleep_until(next.into()).await;
            }
        }
        Scenario::KillLeader | Scenario::KillRunnerAndLeader => {
            if opts.scenario == Scenario::KillRunnerAndLeader {
                let n = fleet.runners.lock().await.len();
                let i = rand::rng().random_range(0..n.max(1));
                match fleet.kill_and_replace_runner(i).await {
                    Ok(name) => note(&mut log, format!("SIGKILL {name}, replacement started")),
                    Err(e) => note(&mut log, format!("runner replacement failed: {e}")),
                }
            }
            let Some(leader) = fleet.leader().await else {
                note(&mut log, "no leader found to kill".into());
                return log;
            };
            let killed_at = Instant::now();
            let name = fleet.kill_coordinator(leader).await.unwrap_or_default();
            note(&mut log, format!("SIGKILL leader {name}"));
            log.cleared_at = Some(Utc::now());
            let deadline = killed_at + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Some(i) = fleet.leader().await
                    && i != leader {
                        let s = killed_at.elapsed().as_secs_f64();
                        log.failover_s = Some(s);
                        note(
                            &mut log,
                            format!("coordinator index {i} leads after {s:.2}s"),
                        );
                        break;
                    }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match fleet.replace_coordinator(leader).await {
                Ok(()) => note(&mut log, "killed coordinator replaced".into()),
                Err(e) => note(&mut log, format!("coordinator replacement failed: {e}")),
            }
        }
        Scenario::RestartValkey => {
            fleet.kill_valkey().await;
            note(&mut log, "SIGKILL valkey".into());
            tokio::time::sleep(opts.fault_for).await;
            match fleet.restart_valkey().await {
                Ok(()) => note(&mut log, "valkey restarted (AOF)".into()),
                Err(e) => note(&mut log, format!("valkey restart failed: {e}")),
            }
            log.cleared_at = Some(Utc::now());
        }
        Scenario::Hub500
        | Scenario::HubHang
        | Scenario::Llm429
        | Scenario::Llm500
        | Scenario::LlmHang => {
            let fault = match opts.scenario {
                Scenario::Hub500 | Scenario::Llm500 => Fault::Status(500),
                Scenario::Llm429 => Fault::Status(429),
                _ => Fault::Hang,
            };
            let Some((proxy, fault)) = proxy_fault(fault) else {
                note(&mut log, "no proxy to inject into".into());
                return log;
            };
            proxy.set(fault);
            note(&mut log, format!("fault on: {fault:?}"));
            tokio::time::sleep(opts.fault_for).await;
            proxy.set(Fault::None);
            log.cleared_at = Some(Utc::now());
            log.injected = proxy.injected();
            let injected = log.injected;
            note(
                &mut log,
                format!("fault off after {injected} injected answers"),
            );
        }
    }
    log
}

fn parse_ts(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Runs one scenario end to end.
pub async fn run(opts: ScenarioOptions) -> Result<Report, ScenarioError> {
    let Some(bins) = opts.bins.clone() else {
        return Err(ScenarioError::Fleet(FleetError::NotReady(
            "binaries".into(),
            Duration::ZERO,
        )));
    };
    let s = opts.scenario;
    let fleet = Arc::new(
        Fleet::start(FleetOptions {
            bins,
            agents: opts.agents,
            runners: opts.runners,
            coordinators: if s.needs_two_coordinators() {
                opts.coordinators.max(2)
            } else {
                opts.coordinators
            },
            concurrency: opts.concurrency,
            llm_latency_ms: opts.llm_latency_ms,
            aof: s == Scenario::RestartValkey,
            hub_proxy: matches!(s, Scenario::Hub500 | Scenario::HubHang),
            llm_proxy: matches!(s, Scenario::Llm429 | Scenario::Llm500 | Scenario::LlmHang),
            log_level: opts.log_level.clone(),
            poll_interval: opts.poll_interval,
            log_dir: opts.log_dir.clone(),
        })
        .await?,
    );
    let result = measure(&fleet, &opts).await;
    fleet.shutdown().await;
    result
}

async fn measure(fleet: &Arc<Fleet>, opts: &ScenarioOptions) -> Result<Report, ScenarioError> {
    let calls_before = fleet.valkey_total_calls().await?;
    let t0 = Instant::now();
    let driver = tokio::spawn(drive_faults(fleet.clone(), opts.clone(), t0));
    let mentions = write_mentions(fleet, opts).await?;
    let written_s = secs_since(t0);

    // Wait until every mention has a reply and the fault schedule is over.
    let deadline = t0 + opts.timeout;
    let mut acc: Accounting;
    loop {
        let state = fleet.state().await?;
        acc = account(&state, &mentions);
        if (acc.answered == mentions.len() && driver.is_finished()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answered_s = secs_since(t0);
    let faults = if driver.is_finished() {
        driver.await.unwrap_or_default()
    } else {
        driver.abort();
        FaultLog {
            events: vec![(answered_s, "fault schedule still running at timeout".into())],
            ..FaultLog::default()
        }
    };

    // Let the bookkeeping settle: leases of killed runners expire and are reaped.
    let drain_deadline = Instant::now() + Duration::from_secs(40);
    let mut leftovers = fleet.queue_leftovers().await.unwrap_or((-1, -1, -1, -1));
    while (leftovers.0 != 0 || leftovers.1 != 0 || leftovers.2 != 0)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        leftovers = fleet.queue_leftovers().await.unwrap_or((-1, -1, -1, -1));
    }
    let failures = fleet.agents_with_failures().await.unwrap_or(-1);
    // Final accounting after the drain, so late duplicates are counted too.
    let state = fleet.state().await?;
    let acc_final = account(&state, &mentions);
    let activations: u64 = state["agents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| {
                    a["id"]
                        .as_str()
                        .is_some_and(|id| fleet.agent_ids.iter().any(|x| x == id))
                })
                .filter_map(|a| a["activation_count"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    let calls_after = fleet.valkey_total_calls().await.unwrap_or(0);

    let mut wait_page = String::new();
    let ports: Vec<u16> = fleet
        .runners
        .lock()
        .await
        .iter()
        .map(|m| m.metrics_port)
        .collect();
    for port in ports {
        wait_page.push_str(&fleet.scrape(port).await);
        wait_page.push('\n');
    }
    let buckets = histogram_buckets(&wait_page, "botburrow_queue_wait_seconds");
    let wait_count = metric_sum(&wait_page, "botburrow_queue_wait_seconds_count");
    let wait_sum = metric_sum(&wait_page, "botburrow_queue_wait_seconds_sum");

    let latencies_ms: Vec<f64> = acc_final
        .latencies
        .iter()
        .map(|d| d.num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    let window_s = match (acc_final.first_mention, acc_final.last_reply) {
        (Some(a), Some(b)) if b > a => (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    let recovery_s = faults.cleared_at.map(|cleared| {
        // Until every mention written before the fault cleared was answered.
        let last = acc_final
            .reply_times
            .iter()
            .filter(|(mention_at, _)| *mention_at <= cleared)
            .map(|(_, reply_at)| *reply_at)
            .max();
        last.map(|l| ((l - cleared).num_milliseconds() as f64 / 1000.0).max(0.0))
            .unwrap_or(0.0)
    });
    let hub_requests_per_activation = fleet.hub_proxy.as_ref().and_then(|p| {
        (activations > 0).then(|| (p.forwarded() + p.injected()) as f64 / activations as f64)
    });
    let valkey_calls_per_activation = (calls_after >= calls_before && activations > 0)
        .then(|| (calls_after - calls_before) as f64 / activations as f64);

    let processes = fleet.process_reports().await;
    let mut checks = vec![
        Check::new(
            "every mention answered",
            acc_final.lost == 0,
            format!("{} lost of {}", acc_final.lost, mentions.len()),
        ),
        Check::new(
            "no duplicate replies",
            acc_final.duplicates == 0 && acc_final.stray == 0,
            format!(
                "{} duplicates, {} replies on posts that did not mention the agent",
                acc_final.duplicates, acc_final.stray
            ),
        ),
        Check::new(
            "work:active, work:leases and the queues empty",
            leftovers.0 == 0 && leftovers.1 == 0 && leftovers.2 == 0,
            format!(
                "active {}, leases {}, waiting {}",
                leftovers.0, leftovers.1, leftovers.2
            ),
        ),
        Check::new(
            "no agent in backoff without failures",
            leftovers.3 == 0 || failures > 0,
            format!("in backoff {}, with failures {}", leftovers.3, failures),
        ),
    ];
    if opts.scenario.needs_two_coordinators() {
        checks.push(Check::new(
            "leader failover <= 20 s",
            faults.failover_s.is_some_and(|s| s <= 20.0),
            format!("{:?}", faults.failover_s),
        ));
    }
    Ok(Report {
        scenario: opts.scenario.name().into(),
        date: Utc::now().to_rfc3339(),
        options: opts.clone(),
        mentions: mentions.len(),
        answered: acc_final.answered,
        lost: acc_final.lost,
        duplicates: acc_final.duplicates,
        stray_replies: acc_final.stray,
        activations,
        written_s,
        answered_s,
        window_s,
        replies_per_s: if window_s > 0.0 {
            acc_final.answered as f64 / window_s
        } else {
            0.0
        },
        activations_per_s: if window_s > 0.0 {
            activations as f64 / window_s
        } else {
            0.0
        },
        latency_ms_p50: percentile(&latencies_ms, 0.50),
        latency_ms_p95: percentile(&latencies_ms, 0.95),
        latency_ms_p99: percentile(&latencies_ms, 0.99),
        latency_ms_max: percentile(&latencies_ms, 1.0),
        queue_wait_mean_ms: (wait_count > 0.0).then(|| wait_sum / wait_count * 1000.0),
        queue_wait_p50_le_ms: histogram_quantile(&buckets, 0.50).map(|v| v * 1000.0),
        queue_wait_p95_le_ms: histogram_quantile(&buckets, 0.95).map(|v| v * 1000.0),
        queue_wait_p99_le_ms: histogram_quantile(&buckets, 0.99).map(|v| v * 1000.0),
        valkey_calls_per_activation,
        hub_requests_per_activation,
        faults,
        recovery_s,
        leftovers_active: leftovers.0,
        leftovers_leases: leftovers.1,
        leftovers_waiting: leftovers.2,
        agents_in_backoff: leftovers.3,
        processes,
        checks,
        early_answered: acc.answered,
    })
}

/// Parses a Hub timestamp (exposed for the accounting in [`crate::report`]).
pub(crate) fn hub_time(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    parse_ts(v)
}
