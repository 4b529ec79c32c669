//! The Kubernetes Lease elector against an in-test fake of the Lease API (see
//! `support/fake_apiserver.rs`), with an injected clock so expiry needs no waiting.

mod support;

use async_trait::async_trait;
use botburrow_coordinator::election::lease::LeaseElector;
use botburrow_coordinator::election::{
    Clock, ElectionError, ElectionTiming, LeaderElector, Leadership, ManualClock, NoElection,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use support::fake_apiserver::FakeApiserver;

const NS: &str = "botburrow-agents";
const LEASE: &str = "botburrow-coordinator";

fn clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

fn elector(fake: &FakeApiserver, id: &str, clock: &ManualClock) -> Arc<LeaseElector> {
    Arc::new(LeaseElector::new(
        fake.client(),
        NS,
        LEASE,
        id,
        ElectionTiming::default(),
        Arc::new(clock.clone()),
    ))
}

/// All candidates attempt at once, every one reading the same resourceVersion (GETs are held at a
/// barrier until all have arrived). Returns the indices that believe they won.
async fn race(fake: &FakeApiserver, cands: &[Arc<dyn LeaderElector>]) -> Vec<usize> {
    fake.hold_gets(cands.len());
    let results = futures::future::join_all(cands.iter().map(|c| c.try_acquire_or_renew())).await;
    fake.release_gets();
    results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(true) => Some(i),
            Ok(false) => None,
            Err(e) => panic!("candidate {i} failed: {e}"),
        })
        .collect()
}

/// Runs `rounds` rounds: the leader renews, everyone else sees a live lease and loses, the clock
/// jumps past the lease duration, then all candidates race. Returns winners per race.
async fn rounds(
    fake: &FakeApiserver,
    cands: &[Arc<dyn LeaderElector>],
    clock: &ManualClock,
    n: usize,
) -> Vec<Vec<usize>> {
    let mut out = vec![race(fake, cands).await];
    for _ in 1..n {
        let Some(&leader) = out.last().and_then(|w| w.first()) else {
            break;
        };
        assert!(
            cands[leader].try_acquire_or_renew().await.expect("renew"),
            "leader renews its live lease"
        );
        let others = futures::future::join_all(
            cands
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != leader)
                .map(|(_, c)| c.try_acquire_or_renew()),
        )
        .await;
        for r in others {
            assert!(!r.expect("attempt"), "a live lease is never taken");
        }
        clock.advance(Duration::from_secs(20));
        out.push(race(fake, cands).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_leader_among_racing_candidates() {
    let fake = FakeApiserver::start().await;
    let clock = clock();
    let cands: Vec<Arc<dyn LeaderElector>> = (0..8)
        .map(|i| elector(&fake, &format!("coordinator-{i}"), &clock) as Arc<dyn LeaderElector>)
        .collect();
    let results = rounds(&fake, &cands, &clock, 20).await;
    assert_eq!(results.len(), 20);
    for (round, winners) in results.iter().enumerate() {
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
    }
    let last = results
        .last()
        .and_then(|w| w.first())
        .copied()
        .expect("a winner");
    assert_eq!(
        fake.holder(NS, LEASE).as_deref(),
        Some(format!("coordinator-{last}").as_str())
    );
    // The races were real: losers were turned away by the apiserver's optimistic concurrency.
    assert_eq!(
        fake.state.conflicts.load(Ordering::SeqCst),
        7 * 20,
        "every loser of every race got a 409"
    );
    assert_eq!(
        fake.state.unconditional_writes.load(Ordering::SeqCst),
        0,
        "every write carried a resourceVersion"
    );
    // leaseTransitions counts changes of holder.
    let lease = fake.lease(NS, LEASE).expect("lease");
    let mut changes = 0;
    for w in results.windows(2) {
        if w[0] != w[1] {
            changes += 1;
        }
    }
    assert_eq!(
        lease["spec"]["leaseTransitions"].as_i64(),
        Some(changes),
        "{lease}"
    );
    assert_eq!(lease["spec"]["leaseDurationSeconds"].as_i64(), Some(15));
}

/// A deliberately broken elector: the same read-check-write, but its PUT carries no
/// resourceVersion (an unconditional update, as a JSON merge patch would be).
struct Unconditional {
    api: Api<Lease>,
    id: String,
    clock: ManualClock,
}

#[async_trait]
impl LeaderElector for Unconditional {
    async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        let mut lease = self.api.get(LEASE).await.expect("get");
        let spec = lease.spec.clone().unwrap_or_default();
        let renew: SystemTime = spec
            .renew_time
            .as_ref()
            .map(|t| t.0.into())
            .expect("renew time");
        let live = renew + Duration::from_secs(15) > self.clock.now();
        if spec.holder_identity.as_deref() != Some(self.id.as_str()) && live {
            return Ok(false);
        }
        let mut spec = spec;
        spec.holder_identity = Some(self.id.clone());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            self.clock.now().try_into().expect("ts"),
        ));
        lease.spec = Some(spec);
        lease.metadata.resource_version = None;
        match self
            .api
            .replace(LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => panic!("replace: {e}"),
        }
    }
    async fn release(&self) -> Result<(), ElectionError> {
        Ok(())
    }
    fn identity(&self) -> &str {
        &self.id
    }
    fn timing(&self) -> ElectionTiming {
        ElectionTiming::default()
    }
    fn backend(&self) -> &'static str {
        "broken"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn negative_control_unconditional_update_is_caught_as_split_brain() {
    let fake = FakeApiserver::start().await;
    let clock = clock();
    // A real elector creates the lease; then it expires and the broken candidates race.
    assert!(
        elector(&fake, "seed", &clock)
            .try_acquire_or_renew()
            .await
            .expect("create")
    );
    clock.advance(Duration::from_secs(20));
    let cands: Vec<Arc<dyn LeaderElector>> = (0..8)
        .map(|i| {
            Arc::new(Unconditional {
                api: Api::namespaced(fake.client(), NS),
                id: format!("broken-{i}"),
                clock: clock.clone(),
            }) as Arc<dyn LeaderElector>
        })
        .collect();
    let winners = race(&fake, &cands).await;
    assert!(
        winners.len() > 1,
        "the harness must detect split brain, got winners {winners:?}"
    );
    assert_eq!(fake.state.unconditional_writes.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn stale_resource_version_conflicts_and_takeover_after_expiry() {
    let fake = FakeApiserver::start().await;
    let clock = clock();
    let a = elector(&fake, "a", &clock);
    let b = elector(&fake, "b", &clock);
    assert!(a.try_acquire_or_renew().await.expect("a acquires"));
    assert!(
        !b.try_acquire_or_renew().await.expect("b tries"),
        "b must not steal a live lease"
    );

    // A write carrying a stale resourceVersion is refused with 409 Conflict.
    let api: Api<Lease> = Api::namespaced(fake.client(), NS);
    let stale = api.get(LEASE).await.expect("get");
    let acquired = fake.lease(NS, LEASE).expect("lease")["spec"]["acquireTime"].clone();
    clock.advance(Duration::from_secs(2));
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    let renewed = fake.lease(NS, LEASE).expect("lease");
    assert_eq!(
        renewed["spec"]["acquireTime"], acquired,
        "a renewal keeps acquireTime"
    );
    assert_ne!(
        renewed["spec"]["renewTime"], acquired,
        "a renewal moves renewTime"
    );
    assert_eq!(renewed["spec"]["leaseTransitions"], 0);
    let err = api
        .replace(LEASE, &PostParams::default(), &stale)
        .await
        .expect_err("stale write must fail");
    match err {
        kube::Error::Api(s) => assert!(s.is_conflict(), "{s:?}"),
        other => panic!("unexpected error {other}"),
    }

    // b first saw the (renewed) record now; 10 s later it is still live for b.
    assert!(!b.try_acquire_or_renew().await.expect("b tries"));
    clock.advance(Duration::from_secs(10));
    assert!(!b.try_acquire_or_renew().await.expect("b tries at +10s"));
    // a dies (stops renewing). 16 s after b last saw a change, b takes over.
    clock.advance(Duration::from_secs(6));
    assert!(b.try_acquire_or_renew().await.expect("b takes over"));
    let lease = fake.lease(NS, LEASE).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // a comes back: it must notice it lost.
    assert!(!a.try_acquire_or_renew().await.expect("a tries again"));
    assert_eq!(fake.holder(NS, LEASE).as_deref(), Some("b"));
}

#[tokio::test]
async fn leader_steps_down_when_renewal_fails_and_releases_on_shutdown() {
    let fake = FakeApiserver::start().await;
    let clock = clock();
    let gauge = Gauge::default();
    let a = LeaseElector::new(
        fake.client(),
        NS,
        LEASE,
        "a",
        ElectionTiming::default(),
        Arc::new(clock.clone()),
    );
    let (leadership, handle) = Leadership::new(Box::new(a), gauge.clone());
    assert!(leadership.tick().await);
    assert!(handle.is_leader());
    assert_eq!(gauge.get(), 1);

    // The apiserver refuses writes: the very first failed renewal steps down.
    fake.state.fail_writes.store(true, Ordering::SeqCst);
    assert!(!leadership.tick().await);
    assert!(!handle.is_leader());
    assert_eq!(gauge.get(), 0);
    assert!(
        handle.last_error().is_some_and(|e| e.contains("500")),
        "{:?}",
        handle.last_error()
    );
    fake.state.fail_writes.store(false, Ordering::SeqCst);
    assert!(
        leadership.tick().await,
        "our own unexpired lease is renewed again"
    );
    assert_eq!(gauge.get(), 1);

    // Someone else takes the lease: the next renewal sees it and steps down.
    fake.overwrite_holder(NS, LEASE, "intruder");
    assert!(!leadership.tick().await);
    assert!(!handle.is_leader());
    assert_eq!(fake.holder(NS, LEASE).as_deref(), Some("intruder"));

    // Releasing on shutdown lets a successor in at once, without waiting for expiry.
    let fake2 = FakeApiserver::start().await;
    let a = LeaseElector::new(
        fake2.client(),
        NS,
        LEASE,
        "a",
        ElectionTiming::default(),
        Arc::new(clock.clone()),
    );
    let (leadership, handle) = Leadership::new(Box::new(a), Gauge::default());
    assert!(leadership.tick().await);
    let b = elector(&fake2, "b", &clock);
    assert!(!b.try_acquire_or_renew().await.expect("b tries"));
    leadership.shutdown().await;
    assert!(!handle.is_leader());
    assert_eq!(
        fake2.holder(NS, LEASE),
        None,
        "released lease has no holder"
    );
    assert!(
        b.try_acquire_or_renew()
            .await
            .expect("b acquires the released lease")
    );
    assert_eq!(
        fake2.lease(NS, LEASE).expect("lease")["spec"]["leaseTransitions"],
        1
    );
}

#[tokio::test(start_paused = true)]
async fn leadership_expires_without_a_successful_renewal() {
    let (leadership, handle) = Leadership::new(Box::new(NoElection::new("solo")), Gauge::default());
    assert!(leadership.tick().await);
    assert!(handle.is_leader());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(handle.is_leader(), "still within the renew deadline");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        !handle.is_leader(),
        "a leader that has not renewed for the renew deadline must not act"
    );
    // `lost` resolves once leadership is gone.
    tokio::time::timeout(Duration::from_secs(1), handle.lost())
        .await
        .expect("lost resolves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_apiserver_makes_the_leader_step_down_at_the_renew_deadline() {
    let fake = FakeApiserver::start().await;
    let clock = clock();
    let timing = ElectionTiming {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(300),
        retry_period: Duration::from_millis(100),
    };
    assert!(timing.validate().is_ok());
    let a = LeaseElector::new(
        fake.client(),
        NS,
        LEASE,
        "a",
        timing,
        Arc::new(clock.clone()),
    );
    let gauge = Gauge::default();
    let (leadership, handle) = Leadership::new(Box::new(a), gauge.clone());
    assert!(leadership.tick().await);
    // The next GET never completes (a barrier nobody else reaches).
    fake.hold_gets(2);
    let t0 = std::time::Instant::now();
    assert!(!leadership.tick().await);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(!handle.is_leader());
    assert_eq!(gauge.get(), 0);
    assert!(
        handle.last_error().is_some_and(|e| e.contains("timed out")),
        "{:?}",
        handle.last_error()
    );
    fake.release_gets();
}

#[test]
fn timings_must_follow_client_go_ordering() {
    assert!(ElectionTiming::default().validate().is_ok());
    let bad = ElectionTiming {
        lease_duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };
    assert!(bad.validate().is_err());
    let bad = ElectionTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_secs(2),
    };
    assert!(bad.validate().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_running_drivers_never_overlap_and_a_crashed_leader_is_replaced() {
    use botburrow_coordinator::election::{LeaderHandle, SystemClock};
    use botburrow_testkit::eventually;
    let fake = FakeApiserver::start().await;
    let timing = ElectionTiming {
        lease_duration: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let mut handles: Vec<LeaderHandle> = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let e = LeaseElector::new(
            fake.client(),
            NS,
            LEASE,
            format!("c{i}"),
            timing,
            Arc::new(SystemClock),
        );
        let (l, h) = Leadership::new(Box::new(e), Gauge::default());
        handles.push(h);
        tasks.push(tokio::spawn(l.run(stop.clone())));
    }
    let leaders = |hs: &[LeaderHandle]| {
        hs.iter()
            .enumerate()
            .filter(|(_, h)| h.is_leader())
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let mut overlaps = 0;
    let mut first = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = leaders(&handles);
            if now.len() > 1 {
                overlaps += 1;
            }
            first = now.first().copied();
            async move { now.len() == 1 }
        })
        .await
    );
    let first = first.expect("a leader");
    // Watch a while (renewals keep happening), then crash the leader without release.
    let mut seen_other = false;
    assert!(
        !eventually(Duration::from_millis(800), || {
            let now = leaders(&handles);
            if now.len() > 1 {
                overlaps += 1;
            }
            seen_other |= now.iter().any(|&i| i != first);
            async move { false }
        })
        .await
    );
    assert!(!seen_other, "a live, renewing leader is never replaced");
    tasks[first].abort();
    let crashed = std::time::Instant::now();
    let mut successor = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = leaders(&handles);
            if now.len() > 1 {
                overlaps += 1;
            }
            successor = now.iter().copied().find(|&i| i != first);
            async move { successor.is_some() }
        })
        .await,
        "someone takes over"
    );
    let took = crashed.elapsed();
    assert!(
        took < timing.lease_duration + Duration::from_millis(700),
        "takeover took {took:?}"
    );
    assert_eq!(
        overlaps, 0,
        "two drivers claimed leadership at the same time"
    );
    let successor = successor.expect("successor");
    assert_eq!(fake.holder(NS, LEASE), Some(format!("c{successor}")));
    assert_eq!(
        fake.lease(NS, LEASE).expect("lease")["spec"]["leaseTransitions"],
        1
    );
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(
        fake.holder(NS, LEASE),
        None,
        "the leader released the lease on shutdown"
    );
}
