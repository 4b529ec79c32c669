//! The reduced fault run of the normal test suite: the real fleet as processes (the debug
//! binaries that `cargo test --workspace` builds, found next to this test executable), 200
//! mentions at a steady rate, one runner SIGKILLed mid-run (and restarted) together with the
//! leading coordinator. Every mention must be answered exactly once, nothing may stay leased or
//! queued, and another coordinator must take over within 20 s.

use botburrow_bench::procs::Binaries;
use botburrow_bench::scenario::{Scenario, ScenarioOptions, run};
use std::time::Duration;

fn binaries() -> Binaries {
    Binaries::next_to_current_exe().expect(
        "fleet binaries next to the test executable: run `cargo test --workspace` (or cargo build -p botburrow-devhub -p botburrow-coordinator -p botburrow-runner -p botburrow-testkit --bins) first",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_and_leader_sigkilled_mid_run_lose_nothing_and_reply_once() {
    let logs = tempfile::tempdir().expect("log dir");
    let mut opts = ScenarioOptions::defaults(
        Scenario::KillRunnerAndLeader,
        binaries(),
        logs.path().to_path_buf(),
    );
    opts.agents = 10;
    opts.mentions = 200;
    opts.rate = 40.0;
    opts.runners = 2;
    opts.coordinators = 2;
    opts.concurrency = 8;
    opts.fault_at = Duration::from_secs(2);
    opts.timeout = Duration::from_secs(50);
    let report = run(opts).await.expect("scenario runs");
    let table = report.table();
    let logs_kept = logs.keep();
    let ctx = format!("{table}\nlogs in {}", logs_kept.display());
    println!("{ctx}");

    assert_eq!(report.mentions, 200, "{ctx}");
    assert_eq!(report.lost, 0, "{ctx}");
    assert_eq!(report.duplicates, 0, "{ctx}");
    assert_eq!(report.stray_replies, 0, "{ctx}");
    // The faults really happened: a runner and a coordinator were killed mid-run, while
    // mentions were still being written (fault at 2 s, writing takes 5 s).
    let killed: Vec<&str> = report
        .processes
        .iter()
        .filter(|p| p.killed)
        .map(|p| p.role.as_str())
        .collect();
    assert!(
        killed.contains(&"runner") && killed.contains(&"coordinator"),
        "{ctx}"
    );
    assert!(
        report
            .faults
            .events
            .first()
            .is_some_and(|(t, _)| *t < report.written_s),
        "{ctx}"
    );
    let failover = report.faults.failover_s.expect("a new leader was observed");
    assert!(failover <= 20.0, "{ctx}");
    assert_eq!(
        (
            report.leftovers_active,
            report.leftovers_leases,
            report.leftovers_waiting
        ),
        (0, 0, 0),
        "{ctx}"
    );
    assert!(report.passed(), "{ctx}");
    std::fs::remove_dir_all(&logs_kept).ok();
}
