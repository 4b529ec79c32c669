//! Work queue benchmark (issue 5): throughput of enqueue -> claim -> complete cycles and the
//! enqueue-to-claim latency of an idle (blocked) claimer, against a local valkey/redis server
//! started through the testkit.
//!
//! Run: `cargo run --release -p botburrow-shared --example queue_bench -- [cycles] [tasks] [latency_samples]`
//! (defaults 100000, 64, 2000). Prints a Markdown block for docs/benchmarks.md.

use botburrow_shared::ids::RunnerId;
use botburrow_shared::queue::{QueueConfig, ValkeyQueue, WorkQueue};
use botburrow_shared::work::{RunnerMode, WorkItem};
use botburrow_testkit::Valkey;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The server's CPU seconds (user + sys) so far, from `INFO cpu`.
fn server_cpu(v: &Valkey) -> f64 {
    let info = v.command(&["INFO", "cpu"]).unwrap_or_default();
    ["used_cpu_user:", "used_cpu_sys:"]
        .iter()
        .filter_map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|n| n.trim().parse::<f64>().ok())
        })
        .sum()
}

fn blocked_clients(v: &Valkey) -> u64 {
    v.command(&["INFO", "clients"])
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cycles = arg(1, 100_000);
    let tasks = arg(2, 64).max(1);
    let samples = arg(3, 2_000);
    let v = Valkey::start();
    let queue = Arc::new(ValkeyQueue::connect(&v.url(), QueueConfig::default()).await?);
    let lease = Duration::from_secs(300);

    // warm up: load the scripts, open connections
    for i in 0..100 {
        queue
            .enqueue(WorkItem::inbox(format!("warm-{i}"), "", 1))
            .await?;
        let runner = RunnerId::new("warm");
        if let Some(c) = queue
            .claim(RunnerMode::Hybrid, &runner, lease, Duration::from_secs(1))
            .await?
        {
            queue.complete(&c.activation_id).await?;
        }
    }

    // 1. throughput: `tasks` concurrent loops of enqueue -> claim -> complete on one client
    let per_task = cycles / tasks;
    let cpu_before = server_cpu(&v);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let q = queue.clone();
        handles.push(tokio::spawn(async move {
            let runner = RunnerId::new(format!("bench-{t}"));
            for i in 0..per_task {
                q.enqueue(WorkItem::inbox(format!("agent-{t}-{i}"), "", 1))
                    .await?;
                let claim = q
                    .claim(RunnerMode::Hybrid, &runner, lease, Duration::from_secs(5))
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no item within 5 s"))?;
                anyhow::ensure!(q.complete(&claim.activation_id).await?, "lease lost");
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let elapsed = started.elapsed();
    let server_cpu_s = server_cpu(&v) - cpu_before;
    let done = per_task * tasks;
    let rate = done as f64 / elapsed.as_secs_f64();
    let stats = queue.stats().await?;
    anyhow::ensure!(
        stats.total_waiting() == 0 && stats.active == 0,
        "queue not drained: {stats:?}"
    );

    // 2. latency: one idle claimer blocked in the queue, then one enqueue
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let q = queue.clone();
        let claimer = tokio::spawn(async move {
            let c = q
                .claim(
                    RunnerMode::Notification,
                    &RunnerId::new("idle"),
                    lease,
                    Duration::from_secs(10),
                )
                .await;
            (c, Instant::now())
        });
        let wait_started = Instant::now();
        while blocked_clients(&v) == 0 {
            anyhow::ensure!(
                wait_started.elapsed() < Duration::from_secs(10),
                "claimer never blocked"
            );
            tokio::task::yield_now().await;
        }
        let sent = Instant::now();
        queue
            .enqueue(WorkItem::inbox(format!("lat-{i}"), "", 1))
            .await?;
        let (claim, got) = claimer.await?;
        let claim = claim?.ok_or_else(|| anyhow::anyhow!("idle claimer got nothing"))?;
        latencies.push(got - sent);
        queue.complete(&claim.activation_id).await?;
    }
    latencies.sort();

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("| metric | result |");
    println!("|---|---|");
    println!(
        "| enqueue->claim->complete cycles | {done} with {tasks} concurrent tasks on one connection |"
    );
    println!(
        "| throughput | **{rate:.0} cycles/s** ({:.2} s) |",
        elapsed.as_secs_f64()
    );
    println!(
        "| idle-claimer enqueue-to-claim latency ({samples} samples) | p50 {:?}, p99 **{:?}**, max {:?} |",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "| server CPU during throughput phase | {server_cpu_s:.2} s ({:.1} µs per cycle) |",
        server_cpu_s * 1e6 / done.max(1) as f64
    );
    println!("| cores visible | {cores} |");
    Ok(())
}
