//! `botburrow-bench <scenario> [options]`: builds (unless `--no-build`) and finds the fleet's
//! binaries next to itself, runs the scenario(s), prints a table per run and writes all reports
//! as JSON with `--json FILE`. Exits 1 when any check failed.

use anyhow::Context;
use botburrow_bench::procs::Binaries;
use botburrow_bench::report::Report;
use botburrow_bench::scenario::{Scenario, ScenarioOptions, run};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "botburrow-bench",
    about = "End-to-end benchmark and fault injection for the botburrow fleet"
)]
struct Args {
    /// load, kill-runner, kill-leader, restart-valkey, hub-500, hub-hang, llm-429, llm-500,
    /// llm-hang, kill-runner-and-leader, or all-faults (every fault scenario in turn).
    scenario: String,
    /// Agents.
    #[arg(long)]
    agents: Option<usize>,
    /// Mentions.
    #[arg(long)]
    mentions: Option<usize>,
    /// Mentions per second (0 = burst).
    #[arg(long)]
    rate: Option<f64>,
    /// Runner processes.
    #[arg(long)]
    runners: Option<usize>,
    /// Coordinator processes.
    #[arg(long)]
    coordinators: Option<usize>,
    /// MAX_CONCURRENT_ACTIVATIONS per runner.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Mock LLM latency in ms.
    #[arg(long)]
    llm_latency_ms: Option<u64>,
    /// Seconds after the first mention when the fault starts.
    #[arg(long)]
    fault_at: Option<f64>,
    /// Seconds the fault lasts.
    #[arg(long)]
    fault_for: Option<f64>,
    /// Seconds between runner kills (kill-runner).
    #[arg(long)]
    kill_every: Option<f64>,
    /// Seconds to wait for every reply.
    #[arg(long)]
    timeout: Option<f64>,
    /// LOG_LEVEL of coordinators and runners.
    #[arg(long)]
    log_level: Option<String>,
    /// POLL_INTERVAL of the coordinators (whole seconds); product default when absent.
    #[arg(long)]
    poll_interval: Option<u64>,
    /// Directory for process logs (default: a fresh temporary directory, kept).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Directory with the fleet binaries (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` for the fleet binaries first.
    #[arg(long)]
    no_build: bool,
    /// Write the reports (a JSON array) here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Builds the fleet's binaries with the same profile as this executable.
fn build_fleet() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("build").arg("--manifest-path").arg(manifest);
    if release {
        cmd.arg("--release");
    }
    for p in [
        "botburrow-devhub",
        "botburrow-coordinator",
        "botburrow-runner",
        "botburrow-testkit",
    ] {
        cmd.args(["-p", p]);
    }
    cmd.arg("--bins");
    let status = cmd
        .status()
        .context("running cargo build for the fleet binaries")?;
    anyhow::ensure!(
        status.success(),
        "cargo build of the fleet binaries failed: {status}"
    );
    Ok(())
}

fn options(args: &Args, scenario: Scenario, bins: Binaries, log_dir: PathBuf) -> ScenarioOptions {
    let mut o = ScenarioOptions::defaults(scenario, bins, log_dir);
    let secs = |v: f64| Duration::from_secs_f64(v.max(0.0));
    if let Some(v) = args.agents {
        o.agents = v.max(1);
    }
    if let Some(v) = args.mentions {
        o.mentions = v;
    }
    if let Some(v) = args.rate {
        o.rate = v.max(0.0);
    }
    if let Some(v) = args.runners {
        o.runners = v.max(1);
    }
    if let Some(v) = args.coordinators {
        o.coordinators = v.max(1);
    }
    if let Some(v) = args.concurrency {
        o.concurrency = v.max(1);
    }
    if let Some(v) = args.llm_latency_ms {
        o.llm_latency_ms = v;
    }
    if let Some(v) = args.fault_at {
        o.fault_at = secs(v);
    }
    if let Some(v) = args.fault_for {
        o.fault_for = secs(v);
    }
    if let Some(v) = args.kill_every {
        o.kill_every = secs(v.max(0.5));
    }
    if let Some(v) = args.timeout {
        o.timeout = secs(v);
    }
    if let Some(v) = &args.log_level {
        o.log_level = v.clone();
    }
    o.poll_interval = args.poll_interval;
    o
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let scenarios: Vec<Scenario> = if args.scenario == "all-faults" {
        Scenario::FAULTS.to_vec()
    } else {
        vec![
            Scenario::from_str(&args.scenario, true)
                .map_err(|e| anyhow::anyhow!("unknown scenario {:?}: {e}", args.scenario))?,
        ]
    };
    if !args.no_build && args.bin_dir.is_none() {
        build_fleet()?;
    }
    let bins = match &args.bin_dir {
        Some(d) => Binaries::in_dir(d)?,
        None => Binaries::next_to_current_exe()?,
    };
    let log_root = match &args.log_dir {
        Some(d) => d.clone(),
        None => tempfile::Builder::new()
            .prefix("botburrow-bench-")
            .tempdir()?
            .keep(),
    };
    let mut reports: Vec<Report> = Vec::new();
    for s in scenarios {
        let dir = log_root.join(s.name());
        let opts = options(&args, s, bins.clone(), dir.clone());
        eprintln!("running {} (logs in {})", s.name(), dir.display());
        let report = run(opts)
            .await
            .with_context(|| format!("scenario {}", s.name()))?;
        println!("{}", report.table());
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let ok = reports.iter().all(Report::passed);
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
