//! The Valkey lock elector against a real valkey-server/redis-server.

use botburrow_coordinator::election::valkey::ValkeyElector;
use botburrow_coordinator::election::{ElectionTiming, LeaderElector, LeaderHandle, Leadership};
use botburrow_testkit::{Valkey, eventually};
use prometheus_client::metrics::gauge::Gauge;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn timing() -> ElectionTiming {
    ElectionTiming {
        lease_duration: Duration::from_millis(3000),
        renew_deadline: Duration::from_millis(2000),
        retry_period: Duration::from_millis(100),
    }
}

async fn candidate(v: &Valkey, id: &str) -> (Leadership, LeaderHandle, Gauge) {
    let e = ValkeyElector::connect(&v.url(), id, timing())
        .await
        .expect("connect");
    let gauge = Gauge::default();
    let (l, h) = Leadership::new(Box::new(e), gauge.clone());
    (l, h, gauge)
}

fn get_leader(v: &Valkey) -> String {
    v.command(&["GET", "coordinator:leader"]).expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_coordinator_takes_over_when_the_leader_dies() {
    let v = Valkey::start();
    let (la, ha, ga) = candidate(&v, "coord-a").await;
    let (lb, hb, gb) = candidate(&v, "coord-b").await;
    let stop = CancellationToken::new();
    let ta = tokio::spawn(la.run(stop.clone()));
    let tb = tokio::spawn(lb.run(stop.clone()));

    assert!(
        eventually(Duration::from_secs(5), || async {
            ha.is_leader() || hb.is_leader()
        })
        .await,
        "someone leads"
    );
    // Watch for a while: never two leaders.
    for _ in 0..30 {
        assert!(
            !eventually(Duration::from_millis(10), || async {
                ha.is_leader() && hb.is_leader()
            })
            .await
        );
    }
    let (leader_task, survivor, survivor_gauge, leader_id, dead_gauge) = if ha.is_leader() {
        (ta, hb.clone(), gb.clone(), "coord-a", ga.clone())
    } else {
        (tb, ha.clone(), ga.clone(), "coord-b", gb.clone())
    };
    assert!(get_leader(&v).contains(leader_id), "{}", get_leader(&v));
    assert_eq!(dead_gauge.get(), 1);
    assert_eq!(survivor_gauge.get(), 0);

    // Crash the leader: its task is dropped mid-flight, nothing is released.
    leader_task.abort();
    let _ = leader_task.await;
    let crashed_at = tokio::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(6), || async { survivor.is_leader() }).await,
        "survivor takes over"
    );
    let took = crashed_at.elapsed();
    assert!(
        took <= timing().lease_duration + Duration::from_millis(500),
        "takeover took {took:?}"
    );
    assert_eq!(survivor_gauge.get(), 1);
    assert!(!get_leader(&v).contains(leader_id), "{}", get_leader(&v));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_on_shutdown_hands_over_at_once_and_renewal_is_compare_and_set() {
    let v = Valkey::start();
    let (la, ha, _) = candidate(&v, "coord-a").await;
    assert!(la.tick().await);
    assert!(ha.is_leader());
    let pttl: i64 = v
        .command(&["PTTL", "coordinator:leader"])
        .expect("PTTL")
        .trim_start_matches(':')
        .trim()
        .parse()
        .expect("int");
    assert!(
        pttl > 2000 && pttl <= 3000,
        "lock expires after the lease duration: {pttl}"
    );

    let b = ValkeyElector::connect(&v.url(), "coord-b", timing())
        .await
        .expect("connect");
    assert!(
        !b.try_acquire_or_renew().await.expect("b"),
        "b cannot take a held lock"
    );
    assert!(get_leader(&v).contains("coord-a"));

    // Someone overwrites the lock: a's compare-and-renew fails and it steps down.
    v.command(&["SET", "coordinator:leader", "intruder", "PX", "3000"])
        .expect("SET");
    assert!(!la.tick().await);
    assert!(!ha.is_leader());
    assert!(
        get_leader(&v).contains("intruder"),
        "a must not extend or overwrite another's lock"
    );
    // a's release must not delete someone else's lock either.
    v.command(&["DEL", "coordinator:leader"]).expect("DEL");
    assert!(la.tick().await);
    la.shutdown().await;
    assert!(
        get_leader(&v).starts_with("$-1"),
        "released: {}",
        get_leader(&v)
    );
    assert!(b.try_acquire_or_renew().await.expect("b acquires at once"));
    // a releasing again (not the holder) leaves b's lock alone.
    let a2 = ValkeyElector::connect(&v.url(), "coord-a", timing())
        .await
        .expect("connect");
    a2.release().await.expect("release");
    assert!(get_leader(&v).contains("coord-b"));
}
