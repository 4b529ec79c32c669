//! Start-up resilience shared by the binaries: [`Backoff`] (exponential, with jitter) and
//! [`wait_for_dependencies`], which retries building a process's dependencies while they are
//! unreachable (Valkey, the Kubernetes API) so a process started before them waits instead of
//! crash-looping, and stops at once on shutdown.

use rand::Rng;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter: the n-th delay is uniform in `[d/2, d]`, `d = base * 2^n`
/// capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let d = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Calls `attempt` until it succeeds, waiting with a [`Backoff`] (0.5 s doubling to 30 s, with
/// jitter) after each error that `retryable` accepts; any other error is returned at once.
/// Each distinct error is logged once (`startup_dependency_unavailable`), and recovery after
/// one (`startup_dependencies_ready`). `Ok(None)` when `shutdown` fires first.
pub async fn wait_for_dependencies<T, E, F, Fut>(
    shutdown: &CancellationToken,
    mut attempt: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<Option<T>, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut last = String::new();
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = attempt() => r,
        };
        match result {
            Ok(value) => {
                if !last.is_empty() {
                    tracing::info!("startup_dependencies_ready");
                }
                return Ok(Some(value));
            }
            Err(e) if retryable(&e) => {
                let msg = format!("{e:#}");
                if msg != last {
                    tracing::warn!(error = %msg, "startup_dependency_unavailable");
                    last = msg;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d0 = b.next_delay();
        assert!(
            d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
            "{d0:?}"
        );
        let d1 = b.next_delay();
        assert!(
            d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200),
            "{d1:?}"
        );
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(1000));
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_millis(500), "{late:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_is_retryable_and_returns_the_rest() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let out: Result<Option<u32>, String> = wait_for_dependencies(
            &shutdown,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err("down".to_string())
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| true,
        )
        .await;
        assert_eq!(out, Ok(Some(3)));

        let out: Result<Option<u32>, String> = wait_for_dependencies(
            &shutdown,
            || async { Err("bad config".to_string()) },
            |e| e != "bad config",
        )
        .await;
        assert_eq!(out, Err("bad config".to_string()));

        shutdown.cancel();
        let out: Result<Option<u32>, String> =
            wait_for_dependencies(&shutdown, || async { Err("down".to_string()) }, |_| true).await;
        assert_eq!(out, Ok(None));
    }
}
