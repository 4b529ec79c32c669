//! One whole fleet as separate processes on loopback: a real Valkey (testkit), the dev Hub, the
//! mock LLM, coordinators and runners (the built binaries), agent definitions on disk, and the
//! optional fault proxies. Owns starting, killing and restarting members, and reading the fleet's
//! state (Hub `/_dev/state`, Valkey keys and INFO, each process's `/metrics` and `/proc`).

use crate::procs::{Binaries, Proc, ProcError, Usage};
use crate::proxy::{FaultProxy, ProxyError, Upstream};
use botburrow_shared::valkey;
use botburrow_testkit::{Valkey, free_port};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Admin key of the benchmark's dev Hub (loopback only, never a real secret).
const ADMIN_KEY: &str = "botburrow_admin_bench";
/// Service key the fleet uses on the dev Hub.
const SERVICE_KEY: &str = "botburrow_service_bench";
/// Key of the human `ron` who writes the mentions.
const RON_KEY: &str = "botburrow_human_bench_ron";
/// Env var the agents name in `brain.api_key_env`, and its value (the mock accepts only it).
const MOCK_KEY_VAR: &str = "MOCK_KEY";
const MOCK_KEY_VALUE: &str = "sk-bench-mock";

/// Why the fleet could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A process problem.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A proxy problem.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// An HTTP call to a fleet member failed.
    #[error("{what}: {message}")]
    Http {
        /// The call.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A file of the agent definitions could not be written.
    #[error("agent definitions: {0}")]
    Definitions(std::io::Error),
    /// A member did not become healthy in time.
    #[error("{0} did not become ready within {1:?}")]
    NotReady(String, Duration),
    /// Valkey answered something unexpected.
    #[error("valkey: {0}")]
    Valkey(String),
}

fn http_err(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Http {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The binaries.
    pub bins: Binaries,
    /// Native agents to create (`bench-agent-000`...).
    pub agents: usize,
    /// Runner processes.
    pub runners: usize,
    /// Coordinator processes (more than one turns on `LEADER_ELECTION=valkey`).
    pub coordinators: usize,
    /// `MAX_CONCURRENT_ACTIVATIONS` per runner.
    pub concurrency: u32,
    /// Mock LLM latency per request.
    pub llm_latency_ms: u64,
    /// Valkey with AOF (`appendfsync always`), for restart scenarios.
    pub aof: bool,
    /// Put a fault proxy in front of the Hub.
    pub hub_proxy: bool,
    /// Put a fault proxy in front of the mock LLM.
    pub llm_proxy: bool,
    /// `LOG_LEVEL` of coordinators and runners.
    pub log_level: String,
    /// `POLL_INTERVAL` of the coordinators (also caps their busy re-poll pause); `None` = default.
    pub poll_interval: Option<u64>,
    /// Where each process's output goes (`<name>.log`).
    pub log_dir: PathBuf,
}

/// Role of a fleet member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `botburrow-coordinator`.
    Coordinator,
    /// `botburrow-runner`.
    Runner,
}

/// One coordinator or runner process.
#[derive(Debug)]
pub struct Member {
    /// Its name (`runner-3`), also its `RUNNER_ID` / `POD_NAME`.
    pub name: String,
    /// The process.
    pub proc: Proc,
    /// Its `/metrics` port.
    pub metrics_port: u16,
    /// Idle resident set measured after start, KiB.
    pub idle_rss_kib: u64,
}

/// Usage of a process at the end of a run (or when it was killed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessReport {
    /// Process name.
    pub name: String,
    /// `coordinator`, `runner`, `devhub`, `mock-llm`, `valkey`.
    pub role: String,
    /// Idle RSS after start (0 when not measured), KiB.
    pub idle_rss_kib: u64,
    /// Usage from `/proc`.
    pub usage: Usage,
    /// Whether it was killed during the run.
    pub killed: bool,
}

/// The running fleet.
pub struct Fleet {
    opts: FleetOptions,
    valkey: Arc<Mutex<Valkey>>,
    valkey_url: String,
    /// The dev Hub's own URL.
    pub hub_url: String,
    hub: tokio::sync::Mutex<Proc>,
    mock: tokio::sync::Mutex<Proc>,
    mock_base: String,
    /// Proxy between the fleet and the Hub (hub-* scenarios).
    pub hub_proxy: Option<FaultProxy>,
    /// Proxy between the runners and the mock LLM (llm-* scenarios).
    pub llm_proxy: Option<FaultProxy>,
    /// Coordinators, in start order.
    pub coordinators: tokio::sync::Mutex<Vec<Member>>,
    /// Runners, in start order.
    pub runners: tokio::sync::Mutex<Vec<Member>>,
    retired: Mutex<Vec<ProcessReport>>,
    defs: tempfile::TempDir,
    workspaces: tempfile::TempDir,
    http: reqwest::Client,
    /// Agent ids, `bench-agent-000`...
    pub agent_ids: Vec<String>,
    next_name: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sum of every sample of `name` (exact metric name, any labels) in a Prometheus text page.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Cumulative histogram buckets `(le, count)` of `name`, summed over label sets, sorted by `le`.
pub fn histogram_buckets(page: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for l in page.lines().filter(|l| l.starts_with(&bucket)) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let Some(le) = series
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match out.iter_mut().find(|(b, _)| *b == le) {
            Some(e) => e.1 += v,
            None => out.push((le, v)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The upper bucket bound under which fraction `q` of the observations fall (`None` if empty).
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

fn resp_integer(reply: &str) -> Result<i64, FleetError> {
    reply
        .strip_prefix(':')
        .and_then(|r| r.trim_end().parse().ok())
        .ok_or_else(|| FleetError::Valkey(format!("expected an integer reply, got {reply:?}")))
}

impl Fleet {
    /// Starts everything and waits until every member is healthy and one coordinator leads.
    pub async fn start(opts: FleetOptions) -> Result<Self, FleetError> {
        std::fs::create_dir_all(&opts.log_dir).map_err(FleetError::Definitions)?;
        let aof = opts.aof;
        let valkey = tokio::task::spawn_blocking(move || {
            if aof {
                Valkey::start_with_aof()
            } else {
                Valkey::start()
            }
        })
        .await
        .map_err(|e| FleetError::Valkey(e.to_string()))?;
        let valkey_url = valkey.url();

        let mut cmd = Command::new(&opts.bins.devhub);
        cmd.env_clear()
            .args(["--listen", "127.0.0.1:0", "--dev"])
            .args(["--admin-key", ADMIN_KEY, "--service-key", SERVICE_KEY])
            .env("LOG_LEVEL", "warn");
        let (hub, hub_url) = Proc::spawn("devhub", cmd, &opts.log_dir, true).await?;
        let hub_url = hub_url.ok_or_else(|| ProcError::NoListenLine("devhub".into()))?;

        let mut cmd = Command::new(&opts.bins.mock_llm);
        cmd.env_clear()
            .args(["--listen", "127.0.0.1:0", "--flavor", "openai"])
            .args(["--latency-ms", &opts.llm_latency_ms.to_string()])
            .args(["--api-key", MOCK_KEY_VALUE]);
        let (mock, mock_url) = Proc::spawn("mock-llm", cmd, &opts.log_dir, true).await?;
        let mock_url = mock_url.ok_or_else(|| ProcError::NoListenLine("mock-llm".into()))?;

        let hub_proxy = if opts.hub_proxy {
            Some(FaultProxy::start(&hub_url, Upstream::Hub).await?)
        } else {
            None
        };
        let llm_proxy = if opts.llm_proxy {
            Some(FaultProxy::start(&mock_url, Upstream::OpenAi).await?)
        } else {
            None
        };
        let mock_base = format!(
            "{}/v1",
            llm_proxy.as_ref().map(|p| p.url()).unwrap_or(mock_url)
        );
        let agent_ids: Vec<String> = (0..opts.agents)
            .map(|i| format!("bench-agent-{i:03}"))
            .collect();
        let fleet = Self {
            valkey: Arc::new(Mutex::new(valkey)),
            valkey_url,
            hub_url,
            hub: tokio::sync::Mutex::new(hub),
            mock: tokio::sync::Mutex::new(mock),
            mock_base,
            hub_proxy,
            llm_proxy,
            coordinators: tokio::sync::Mutex::new(Vec::new()),
            runners: tokio::sync::Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            defs: tempfile::tempdir().map_err(FleetError::Definitions)?,
            workspaces: tempfile::tempdir().map_err(FleetError::Definitions)?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| http_err("http client", e))?,
            agent_ids,
            next_name: AtomicU32::new(0),
            opts,
        };
        fleet.seed_hub().await?;
        fleet.write_definitions()?;
        for _ in 0..fleet.opts.coordinators {
            let m = fleet.spawn_member(Role::Coordinator).await?;
            fleet.coordinators.lock().await.push(m);
        }
        for _ in 0..fleet.opts.runners {
            let m = fleet.spawn_member(Role::Runner).await?;
            fleet.runners.lock().await.push(m);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while fleet.leader().await.is_none() {
            if Instant::now() > deadline {
                return Err(FleetError::NotReady(
                    "a leading coordinator".into(),
                    Duration::from_secs(30),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(fleet)
    }

    /// The options it was started with.
    pub fn options(&self) -> &FleetOptions {
        &self.opts
    }

    /// The Hub URL the fleet is given (the proxy when there is one).
    pub fn fleet_hub_url(&self) -> String {
        self.hub_proxy
            .as_ref()
            .map(|p| p.url())
            .unwrap_or_else(|| self.hub_url.clone())
    }

    async fn seed_hub(&self) -> Result<(), FleetError> {
        let mut agents = vec![json!({"name": "ron", "type": "human", "api_key": RON_KEY})];
        for id in &self.agent_ids {
            agents.push(json!({"name": id, "type": "native"}));
        }
        let body = json!({"agents": agents, "communities": ["m/general"]});
        let resp = self
            .http
            .post(format!("{}/_dev/seed", self.hub_url))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .map_err(|e| http_err("seed", e))?;
        if !resp.status().is_success() {
            return Err(http_err("seed", resp.status()));
        }
        Ok(())
    }

    fn write_definitions(&self) -> Result<(), FleetError> {
        for id in &self.agent_ids {
            let dir = self.defs.path().join("agents").join(id);
            std::fs::create_dir_all(&dir).map_err(FleetError::Definitions)?;
            let config = format!(
                "name: {id}\ntype: native\nbrain:\n  provider: openai\n  model: mock\n  api_base: \"{}\"\n  api_key_env: {MOCK_KEY_VAR}\ncapabilities:\n  grants: [hub:read, hub:write]\n",
                self.mock_base
            );
            std::fs::write(dir.join("config.yaml"), config).map_err(FleetError::Definitions)?;
            std::fs::write(
                dir.join("system-prompt.md"),
                format!("You are {id}, a benchmark agent. Answer briefly."),
            )
            .map_err(FleetError::Definitions)?;
        }
        Ok(())
    }

    /// Starts one more coordinator or runner and waits for its `/health`.
    pub async fn spawn_member(&self, role: Role) -> Result<Member, FleetError> {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        let (name, bin) = match role {
            Role::Coordinator => (format!("coordinator-{n}"), &self.opts.bins.coordinator),
            Role::Runner => (format!("runner-{n}"), &self.opts.bins.runner),
        };
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HUB_URL", self.fleet_hub_url())
            .env("HUB_API_KEY", SERVICE_KEY)
            .env("VALKEY_URL", &self.valkey_url)
            .env("METRICS_PORT", port.to_string())
            .env("LOG_LEVEL", &self.opts.log_level)
            .env("LOG_FORMAT", "json")
            .env("SHUTDOWN_GRACE", "5");
        match role {
            Role::Coordinator => {
                let election = if self.opts.coordinators > 1 {
                    "valkey"
                } else {
                    "none"
                };
                cmd.env("LEADER_ELECTION", election)
                    .env("POD_NAME", &name)
                    // Benchmarks measure mentions only: keep discovery work out of the queue.
                    .env("DISCOVERY_INTERVAL", "86400");
                if let Some(p) = self.opts.poll_interval {
                    cmd.env("POLL_INTERVAL", p.to_string());
                }
            }
            Role::Runner => {
                cmd.env("RUNNER_ID", &name)
                    .env("RUNNER_MODE", "notification")
                    .env(
                        "MAX_CONCURRENT_ACTIVATIONS",
                        self.opts.concurrency.to_string(),
                    )
                    .env("AGENT_DEFINITIONS_PATH", self.defs.path())
                    .env("WORKSPACE_ROOT", self.workspaces.path())
                    .env(MOCK_KEY_VAR, MOCK_KEY_VALUE);
            }
        }
        let (mut proc, _) = Proc::spawn(&name, cmd, &self.opts.log_dir, false).await?;
        let within = Duration::from_secs(30);
        let deadline = Instant::now() + within;
        loop {
            if proc.exited() {
                return Err(FleetError::NotReady(format!("{name} (exited)"), within));
            }
            let ok = self
                .http
                .get(format!("http://127.0.0.1:{port}/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(FleetError::NotReady(name, within));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let idle_rss_kib = proc.usage().rss_kib;
        Ok(Member {
            name,
            proc,
            metrics_port: port,
            idle_rss_kib,
        })
    }

    /// `GET /metrics` of a member (empty when it does not answer).
    pub async fn scrape(&self, port: u16) -> String {
        match self
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Index of the coordinator whose `botburrow_coordinator_is_leader` is 1.
    pub async fn leader(&self) -> Option<usize> {
        let ports: Vec<u16> = self
            .coordinators
            .lock()
            .await
            .iter()
            .map(|m| m.metrics_port)
            .collect();
        for (i, port) in ports.into_iter().enumerate() {
            let page = self.scrape(port).await;
            if metric_sum(&page, "botburrow_coordinator_is_leader") >= 1.0 {
                return Some(i);
            }
        }
        None
    }

    fn retire(&self, m: &mut Member, role: &str) {
        let usage = m.proc.usage();
        lock(&self.retired).push(ProcessReport {
            name: m.name.clone(),
            role: role.into(),
            idle_rss_kib: m.idle_rss_kib,
            usage,
            killed: true,
        });
    }

    /// SIGKILLs runner `i` and starts a fresh one (new id and port) in its place.
    pub async fn kill_and_replace_runner(&self, i: usize) -> Result<String, FleetError> {
        let killed = {
            let mut runners = self.runners.lock().await;
            let Some(m) = runners.get_mut(i) else {
                return Err(FleetError::NotReady(
                    format!("runner index {i}"),
                    Duration::ZERO,
                ));
            };
            m.proc.kill().await;
            self.retire(m, "runner");
            m.name.clone()
        };
        let fresh = self.spawn_member(Role::Runner).await?;
        self.runners.lock().await[i] = fresh;
        Ok(killed)
    }

    /// SIGKILLs coordinator `i` (not restarted; see [`Fleet::replace_coordinator`]).
    pub async fn kill_coordinator(&self, i: usize) -> Option<String> {
        let mut cs = self.coordinators.lock().await;
        let m = cs.get_mut(i)?;
        m.proc.kill().await;
        self.retire(m, "coordinator");
        Some(m.name.clone())
    }

    /// Starts a new coordinator in place of (killed) coordinator `i`.
    pub async fn replace_coordinator(&self, i: usize) -> Result<(), FleetError> {
        let fresh = self.spawn_member(Role::Coordinator).await?;
        if let Some(slot) = self.coordinators.lock().await.get_mut(i) {
            *slot = fresh;
        }
        Ok(())
    }

    /// SIGKILLs Valkey (with AOF its data survives a restart).
    pub async fn kill_valkey(&self) {
        let v = self.valkey.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&v).kill()).await;
    }

    /// Starts Valkey again on the same port and directory.
    pub async fn restart_valkey(&self) -> Result<(), FleetError> {
        let v = self.valkey.clone();
        tokio::task::spawn_blocking(move || lock(&v).restart())
            .await
            .map_err(|e| FleetError::Valkey(format!("restart panicked: {e}")))
    }

    /// One raw Valkey command (RESP reply text).
    pub async fn valkey_command(&self, args: &[&str]) -> Result<String, FleetError> {
        let v = self.valkey.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            lock(&v).command(&refs)
        })
        .await
        .map_err(|e| FleetError::Valkey(e.to_string()))?
        .map_err(|e| FleetError::Valkey(e.to_string()))
    }

    /// Total `calls` over every command in `INFO commandstats`.
    pub async fn valkey_total_calls(&self) -> Result<u64, FleetError> {
        let info = self.valkey_command(&["INFO", "commandstats"]).await?;
        Ok(info
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum())
    }

    /// Valkey's own pid (INFO server `process_id`), for its CPU and memory.
    pub async fn valkey_pid(&self) -> Option<u32> {
        let info = self.valkey_command(&["INFO", "server"]).await.ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// What is left in the queue's bookkeeping: `(work:active, work:leases, waiting items,
    /// work:backoff)`.
    pub async fn queue_leftovers(&self) -> Result<(i64, i64, i64, i64), FleetError> {
        use botburrow_shared::work::Priority;
        let active = resp_integer(&self.valkey_command(&["HLEN", valkey::ACTIVE]).await?)?;
        let leases = resp_integer(&self.valkey_command(&["ZCARD", valkey::LEASES]).await?)?;
        let mut waiting = 0;
        for p in [Priority::High, Priority::Normal, Priority::Low] {
            waiting += resp_integer(&self.valkey_command(&["LLEN", &valkey::queue(p)]).await?)?;
        }
        let backoff = resp_integer(&self.valkey_command(&["HLEN", valkey::BACKOFF]).await?)?;
        Ok((active, leases, waiting, backoff))
    }

    /// Agents with a positive failure count in `work:failures` (why an agent would back off).
    pub async fn agents_with_failures(&self) -> Result<i64, FleetError> {
        resp_integer(&self.valkey_command(&["HLEN", valkey::FAILURES]).await?)
    }

    /// `ron` writes a post mentioning `agent`; returns the post id.
    pub async fn post_mention(&self, agent: &str, n: usize) -> Result<String, FleetError> {
        let resp = self
            .http
            .post(format!("{}/api/v1/posts", self.hub_url))
            .bearer_auth(RON_KEY)
            .json(&json!({
                "title": format!("question {n}"),
                "content": format!("@{agent} benchmark question number {n}: what is a lifetime?"),
                "community": "m/general",
            }))
            .send()
            .await
            .map_err(|e| http_err("create post", e))?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| http_err("create post", e))?;
        match v["id"].as_str() {
            Some(id) if status.is_success() => Ok(id.to_string()),
            _ => Err(http_err("create post", format!("{status}: {v}"))),
        }
    }

    /// `GET /_dev/state` of the Hub (direct, not through the proxy).
    pub async fn state(&self) -> Result<Value, FleetError> {
        let resp = self
            .http
            .get(format!("{}/_dev/state", self.hub_url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .map_err(|e| http_err("dev state", e))?;
        resp.json().await.map_err(|e| http_err("dev state", e))
    }

    /// Usage of every process, current members first, then those killed during the run.
    pub async fn process_reports(&self) -> Vec<ProcessReport> {
        let mut out = Vec::new();
        for (role, members) in [
            ("coordinator", &self.coordinators),
            ("runner", &self.runners),
        ] {
            for m in members.lock().await.iter_mut() {
                out.push(ProcessReport {
                    name: m.name.clone(),
                    role: role.into(),
                    idle_rss_kib: m.idle_rss_kib,
                    usage: m.proc.usage(),
                    killed: false,
                });
            }
        }
        for (role, p) in [("devhub", &self.hub), ("mock-llm", &self.mock)] {
            let mut p = p.lock().await;
            out.push(ProcessReport {
                name: p.name.clone(),
                role: role.into(),
                idle_rss_kib: 0,
                usage: p.usage(),
                killed: false,
            });
        }
        if let Some(pid) = self.valkey_pid().await
            && let Some(u) = crate::procs::usage_of(pid) {
                out.push(ProcessReport {
                    name: "valkey".into(),
                    role: "valkey".into(),
                    idle_rss_kib: 0,
                    usage: u,
                    killed: false,
                });
            }
        out.extend(lock(&self.retired).iter().cloned());
        out
    }

    /// Stops coordinators and runners with SIGTERM (then the rest is killed on drop).
    pub async fn shutdown(&self) {
        for members in [&self.runners, &self.coordinators] {
            for m in members.lock().await.iter_mut() {
                m.proc.terminate(Duration::from_secs(6)).await;
            }
        }
    }
}
