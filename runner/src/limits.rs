//! `behavior.limits` enforcement for discovery: per agent per UTC day, counted in Valkey under
//! `limits:{agent}:{yyyy-mm-dd}` (fields `posts`, `comments`, `last_at`, `thread:<post id>`) so
//! every runner of the fleet sees the same counts. The key expires two days after its day.

use crate::kv::{KvError, KvStore};
use botburrow_shared::agent::Limits;
use botburrow_shared::ids::AgentId;
use botburrow_shared::valkey;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const KEY_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// What the agent already did today.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DailyUsage {
    /// New posts today.
    pub posts: u32,
    /// Comments today.
    pub comments: u32,
    /// Replies per thread (root post id) today.
    pub per_thread: HashMap<String, u32>,
    /// Epoch seconds of the last post or comment.
    pub last_at: Option<i64>,
}

/// Why discovery may not act now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitBlock {
    /// Both the daily post and comment caps are used up.
    DailyCapReached,
    /// The last action was less than `min_interval_seconds` ago.
    TooSoon {
        /// Seconds still to wait.
        wait_seconds: i64,
    },
}

impl DailyUsage {
    /// Whether discovery may act at `now` under `limits`.
    pub fn check(&self, limits: &Limits, now: DateTime<Utc>) -> Result<(), LimitBlock> {
        if self.posts >= limits.max_daily_posts && self.comments >= limits.max_daily_comments {
            return Err(LimitBlock::DailyCapReached);
        }
        if let Some(last) = self.last_at {
            let since = now.timestamp() - last;
            let min = limits.min_interval_seconds as i64;
            if since < min {
                return Err(LimitBlock::TooSoon {
                    wait_seconds: min - since,
                });
            }
        }
        Ok(())
    }

    /// Whether one more comment may go to this thread.
    pub fn thread_allows(&self, limits: &Limits, post_id: &str) -> bool {
        self.comments < limits.max_daily_comments
            && self.per_thread.get(post_id).copied().unwrap_or(0) < limits.max_responses_per_thread
    }
}

/// Reads and updates the per-day counters.
#[derive(Clone)]
pub struct DailyLimits {
    kv: Arc<dyn KvStore>,
}

fn day(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%d").to_string()
}

impl DailyLimits {
    /// Counters stored through `kv`.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv }
    }

    /// Today's usage of `agent`.
    pub async fn usage(&self, agent: &AgentId, now: DateTime<Utc>) -> Result<DailyUsage, KvError> {
        let raw = self
            .kv
            .hgetall(&valkey::daily_limits(agent, &day(now)))
            .await?;
        let mut u = DailyUsage::default();
        for (k, v) in raw {
            match k.as_str() {
                "posts" => u.posts = v.parse().unwrap_or(0),
                "comments" => u.comments = v.parse().unwrap_or(0),
                "last_at" => u.last_at = v.parse().ok(),
                other => {
                    if let Some(post) = other.strip_prefix("thread:") {
                        u.per_thread
                            .insert(post.to_string(), v.parse().unwrap_or(0));
                    }
                }
            }
        }
        Ok(u)
    }

    /// Records one comment in a thread.
    pub async fn record_comment(
        &self,
        agent: &AgentId,
        post_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), KvError> {
        let key = valkey::daily_limits(agent, &day(now));
        self.kv.hincr(&key, "comments", 1, KEY_TTL).await?;
        self.kv
            .hincr(&key, &format!("thread:{post_id}"), 1, KEY_TTL)
            .await?;
        self.kv
            .hset(&key, "last_at", &now.timestamp().to_string(), KEY_TTL)
            .await
    }

    /// Records one new post.
    pub async fn record_post(&self, agent: &AgentId, now: DateTime<Utc>) -> Result<(), KvError> {
        let key = valkey::daily_limits(agent, &day(now));
        self.kv.hincr(&key, "posts", 1, KEY_TTL).await?;
        self.kv
            .hset(&key, "last_at", &now.timestamp().to_string(), KEY_TTL)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;
    use chrono::TimeZone;

    #[tokio::test]
    async fn caps_interval_and_threads_are_enforced_per_day() {
        let limits = Limits {
            max_daily_posts: 1,
            max_daily_comments: 2,
            max_responses_per_thread: 1,
            min_interval_seconds: 60,
        };
        let store = DailyLimits::new(Arc::new(MemoryKv::new()));
        let agent = AgentId::new("a");
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            store.usage(&agent, t0).await.expect("u").check(&limits, t0),
            Ok(())
        );
        store.record_comment(&agent, "p1", t0).await.expect("rec");
        let u = store.usage(&agent, t0).await.expect("u");
        assert_eq!(
            u.check(&limits, t0 + chrono::Duration::seconds(10)),
            Err(LimitBlock::TooSoon { wait_seconds: 50 })
        );
        assert!(!u.thread_allows(&limits, "p1"));
        assert!(u.thread_allows(&limits, "p2"));
        let t1 = t0 + chrono::Duration::seconds(120);
        store.record_comment(&agent, "p2", t1).await.expect("rec");
        store.record_post(&agent, t1).await.expect("rec");
        let t2 = t1 + chrono::Duration::seconds(120);
        let u = store.usage(&agent, t2).await.expect("u");
        assert_eq!(u.comments, 2);
        assert_eq!(u.check(&limits, t2), Err(LimitBlock::DailyCapReached));
        // The next UTC day starts from zero.
        let tomorrow = t0 + chrono::Duration::days(1);
        assert_eq!(
            store.usage(&agent, tomorrow).await.expect("u"),
            DailyUsage::default()
        );
    }
}
