//! Circuit breaker per provider endpoint: closed -> open after N consecutive failures ->
//! half-open once the cool-down has passed (one probe request) -> closed on success, open again
//! on failure. Time comes from an injectable [`Clock`] so tests can step it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic clock. The breaker only compares readings, so any origin works.
pub trait Clock: Send + Sync {
    /// Time since the clock's origin.
    fn now(&self) -> Duration;
}

/// The real clock, via `tokio::time` (so `tokio::time::pause` also freezes it).
#[derive(Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to, for tests of time-based transitions.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// The breaker's state; the metric `botburrow_llm_breaker_state` shows [`BreakerState::gauge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call is allowed to test recovery.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Duration },
    HalfOpen { probing: bool },
}

/// One endpoint's breaker, shared by all activations of a runner.
pub struct CircuitBreaker {
    label: String,
    threshold: u32,
    cooldown: Duration,
    clock: std::sync::Arc<dyn Clock>,
    inner: Mutex<Inner>,
    on_change: Box<dyn Fn(BreakerState) + Send + Sync>,
    /// Woken on every verdict and released probe, so callers waiting out an open breaker
    /// learn of a half-open probe's outcome at once.
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("label", &self.label)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cooldown`.
    /// `on_change` sees every transition (the runtime feeds the gauge from it).
    pub fn new(
        label: impl Into<String>,
        threshold: u32,
        cooldown: Duration,
        clock: std::sync::Arc<dyn Clock>,
        on_change: Box<dyn Fn(BreakerState) + Send + Sync>,
    ) -> Self {
        Self {
            label: label.into(),
            threshold: threshold.max(1),
            cooldown,
            clock,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            on_change,
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The current state (an open breaker whose cool-down has passed reads as half-open).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if self.clock.now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call. `false` means the breaker is open (or its one probe is in flight).
    pub fn try_acquire(&self) -> bool {
        let mut changed = None;
        let allowed = {
            let mut inner = self.lock();
            match *inner {
                Inner::Closed { .. } => true,
                Inner::Open { until } => {
                    if self.clock.now() >= until {
                        *inner = Inner::HalfOpen { probing: true };
                        changed = Some(BreakerState::HalfOpen);
                        true
                    } else {
                        false
                    }
                }
                Inner::HalfOpen { probing } => {
                    if probing {
                        false
                    } else {
                        *inner = Inner::HalfOpen { probing: true };
                        true
                    }
                }
            }
        };
        if let Some(s) = changed {
            self.announce(s);
        }
        allowed
    }

    /// Records a successful call: closes the breaker.
    pub fn record_success(&self) {
        let was = {
            let mut inner = self.lock();
            let was_closed = matches!(*inner, Inner::Closed { .. });
            *inner = Inner::Closed { failures: 0 };
            was_closed
        };
        self.changed.notify_waiters();
        if !was {
            self.announce(BreakerState::Closed);
        }
    }

    /// Records a failure that says something about the endpoint's health (5xx, 429, timeout,
    /// transport error). Opens the breaker at the threshold, or again after a failed probe.
    pub fn record_failure(&self) {
        let opened = {
            let mut inner = self.lock();
            let until = self.clock.now() + self.cooldown;
            match *inner {
                Inner::Closed { failures } if failures + 1 >= self.threshold => {
                    *inner = Inner::Open { until };
                    true
                }
                Inner::Closed { failures } => {
                    *inner = Inner::Closed {
                        failures: failures + 1,
                    };
                    false
                }
                Inner::HalfOpen { .. } => {
                    *inner = Inner::Open { until };
                    true
                }
                Inner::Open { .. } => false,
            }
        };
        self.changed.notify_waiters();
        if opened {
            self.announce(BreakerState::Open);
        }
    }

    /// Releases a probe slot without a verdict (e.g. the call was cancelled).
    pub fn release_probe(&self) {
        {
            let mut inner = self.lock();
            if let Inner::HalfOpen { probing: true } = *inner {
                *inner = Inner::HalfOpen { probing: false };
            }
        }
        self.changed.notify_waiters();
    }

    /// How long until this breaker may let a call through: zero when it would now (closed,
    /// cool-down over, or a free probe slot) and also while its one probe is in flight (the
    /// verdict is expected soon; [`CircuitBreaker::wait_callable`] waits for it).
    pub fn blocked_for(&self) -> Duration {
        match *self.lock() {
            Inner::Open { until } => until.saturating_sub(self.clock.now()),
            _ => Duration::ZERO,
        }
    }

    /// Waits, at most `max`, until a call could be let through: the cool-down of an open
    /// breaker passes, or the in-flight probe reaches a verdict. Returns at once when a call
    /// would be allowed now. Callers re-try [`CircuitBreaker::try_acquire`] afterwards.
    pub async fn wait_callable(&self, max: Duration) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = match *self.lock() {
            Inner::Closed { .. } | Inner::HalfOpen { probing: false } => return,
            Inner::Open { until } => until.saturating_sub(self.clock.now()),
            Inner::HalfOpen { probing: true } => max,
        };
        let wait = wait.min(max);
        if wait.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(wait, notified).await;
    }

    fn announce(&self, state: BreakerState) {
        match state {
            BreakerState::Open => {
                tracing::warn!(provider = %self.label, state = state.name(), cooldown_s = self.cooldown.as_secs(), "circuit_breaker")
            }
            _ => tracing::info!(provider = %self.label, state = state.name(), "circuit_breaker"),
        }
        (self.on_change)(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let clock = Arc::new(ManualClock::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let b = CircuitBreaker::new(
            "p",
            3,
            Duration::from_secs(30),
            clock.clone(),
            Box::new(move |s| seen2.lock().expect("lock").push(s)),
        );
        for _ in 0..2 {
            assert!(b.try_acquire());
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire());
        clock.advance(Duration::from_secs(29));
        assert!(!b.try_acquire());
        clock.advance(Duration::from_secs(1));
        assert!(b.try_acquire(), "half-open lets one probe through");
        assert!(!b.try_acquire(), "only one probe at a time");
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens");
        clock.advance(Duration::from_secs(30));
        assert!(b.try_acquire());
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
    }
}
