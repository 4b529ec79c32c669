//! Token-bucket limits per provider endpoint (`brain.rpm`, `brain.tpm`), shared by all
//! activations of one runner so that concurrency does not multiply the provider's quota.
//!
//! Requests: a bucket refilled at `rpm / 60` per second holding at most one second's worth
//! (at least 1), so over any 60 s window at most `rpm + max(1, rpm/60)` requests start.
//! Tokens: the real usage is only known after the response, so it is debited afterwards and
//! the bucket may go into debt; a new request waits until the debt is repaid at `tpm / 60` per
//! second. Time is `tokio::time`, so tests drive it with `tokio::time::pause`.

use std::sync::Mutex;
use tokio::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        let capacity = (per_minute / 60.0).max(1.0);
        Self {
            per_minute,
            capacity,
            level: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.per_minute / 60.0).min(self.capacity);
        self.last = now;
    }

    /// Time until the level reaches `needed`.
    fn wait_for(&self, needed: f64) -> Duration {
        if self.level >= needed {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((needed - self.level) * 60.0 / self.per_minute)
    }
}

#[derive(Debug)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// One endpoint's limits.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// A limiter with the given per-minute limits (`None` = unlimited).
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> Self {
        let now = Instant::now();
        Self {
            buckets: Mutex::new(Buckets {
                requests: rpm.map(|r| Bucket::new(r, now)),
                tokens: tpm.map(|t| Bucket::new(t, now)),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Changes the limits (the latest agent config wins), keeping the current levels.
    pub fn set_limits(&self, rpm: Option<u32>, tpm: Option<u32>) {
        let now = Instant::now();
        let mut guard = self.lock();
        let b = &mut *guard;
        for (slot, limit) in [(&mut b.requests, rpm), (&mut b.tokens, tpm)] {
            match (slot.as_mut(), limit) {
                (Some(bucket), Some(l)) => {
                    bucket.refill(now);
                    let fresh = Bucket::new(l, now);
                    bucket.per_minute = fresh.per_minute;
                    bucket.capacity = fresh.capacity;
                    bucket.level = bucket.level.min(bucket.capacity);
                }
                (None, Some(l)) => *slot = Some(Bucket::new(l, now)),
                (_, None) => *slot = None,
            }
        }
    }

    /// Waits until one request may start, then takes its slot.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let now = Instant::now();
                let mut b = self.lock();
                if let Some(r) = b.requests.as_mut() {
                    r.refill(now);
                }
                if let Some(t) = b.tokens.as_mut() {
                    t.refill(now);
                }
                let w_req = b
                    .requests
                    .as_ref()
                    .map(|r| r.wait_for(1.0))
                    .unwrap_or_default();
                let w_tok = b
                    .tokens
                    .as_ref()
                    .map(|t| t.wait_for(0.0))
                    .unwrap_or_default();
                let wait = w_req.max(w_tok);
                if wait.is_zero() {
                    if let Some(r) = b.requests.as_mut() {
                        r.level -= 1.0;
                    }
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Debits the tokens a finished request used.
    pub fn record_tokens(&self, tokens: u64) {
        let now = Instant::now();
        let mut b = self.lock();
        if let Some(t) = b.tokens.as_mut() {
            t.refill(now);
            t.level -= tokens as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn token_debt_delays_the_next_request() {
        let l = RateLimiter::new(None, Some(600));
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // 610 tokens used against 10 per second with a 10-token bucket: 600 of debt = 60 s.
        l.record_tokens(610);
        l.acquire().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
            "{waited:?}"
        );
        l.set_limits(None, None);
        l.record_tokens(1_000_000);
        let before = Instant::now();
        l.acquire().await;
        assert_eq!(before.elapsed(), Duration::ZERO, "limits removed");
    }
}
