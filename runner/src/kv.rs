//! The runner's small key-value needs outside the work queue: heartbeats, the `cache:agent:{id}`
//! config cache and the per-day discovery limit counters. This module owns the fred adapter for
//! them (fred types stop here) and an in-memory twin for `botburrow up` without Valkey.
//!
//! Key names always come from [`botburrow_shared::valkey`]; callers pass the formatted key.

use async_trait::async_trait;
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a key-value operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The server could not be reached or refused the command.
    #[error("valkey {op} failed: {message}")]
    Valkey {
        /// The operation (`set`, `hincr`, ...).
        op: &'static str,
        /// The client's message (never contains the URL's password).
        message: String,
    },
}

/// The operations the runner needs besides the queue.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// `SET key value EX ttl`.
    async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> Result<(), KvError>;
    /// `GET key`.
    async fn get(&self, key: &str) -> Result<Option<String>, KvError>;
    /// `EXISTS key`.
    async fn exists(&self, key: &str) -> Result<bool, KvError>;
    /// `HINCRBY key field by` and (re)sets the key's TTL, atomically; returns the new value.
    async fn hincr(&self, key: &str, field: &str, by: i64, ttl: Duration) -> Result<i64, KvError>;
    /// `HSET key field value` and (re)sets the key's TTL, atomically.
    async fn hset(&self, key: &str, field: &str, value: &str, ttl: Duration)
    -> Result<(), KvError>;
    /// `HGETALL key`.
    async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>, KvError>;
    /// `DEL key`; returns whether it existed.
    async fn del(&self, key: &str) -> Result<bool, KvError>;
    /// `PING`, for `/ready`.
    async fn ping(&self) -> Result<(), KvError>;
}

fn err(op: &'static str) -> impl Fn(fred::error::Error) -> KvError {
    move |e| KvError::Valkey {
        op,
        message: e.details().to_string(),
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    ttl.as_secs().max(1) as i64
}

const HINCR_EXPIRE: &str = "local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) \
     redis.call('EXPIRE', KEYS[1], ARGV[3]) return v";
const HSET_EXPIRE: &str = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
     redis.call('EXPIRE', KEYS[1], ARGV[3]) return 1";

/// [`KvStore`] on Valkey through fred.
#[derive(Clone)]
pub struct ValkeyKv {
    client: Client,
}

impl ValkeyKv {
    /// Connects (with reconnects forever and a 5 s command timeout, so a dead server reads as an
    /// error rather than a hang).
    pub async fn connect(url: &str) -> Result<Self, KvError> {
        let config = Config::from_url(url).map_err(err("connect"))?;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(err("connect"))?;
        client.init().await.map_err(err("connect"))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl KvStore for ValkeyKv {
    async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> Result<(), KvError> {
        self.client
            .set::<(), _, _>(key, value, Some(Expiration::EX(ttl_secs(ttl))), None, false)
            .await
            .map_err(err("set"))
    }

    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.client
            .get::<Option<String>, _>(key)
            .await
            .map_err(err("get"))
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.client
            .exists::<i64, _>(key)
            .await
            .map(|n| n > 0)
            .map_err(err("exists"))
    }

    async fn hincr(&self, key: &str, field: &str, by: i64, ttl: Duration) -> Result<i64, KvError> {
        self.client
            .eval::<i64, _, _, _>(
                HINCR_EXPIRE,
                vec![key],
                vec![field.to_string(), by.to_string(), ttl_secs(ttl).to_string()],
            )
            .await
            .map_err(err("hincr"))
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), KvError> {
        self.client
            .eval::<i64, _, _, _>(
                HSET_EXPIRE,
                vec![key],
                vec![
                    field.to_string(),
                    value.to_string(),
                    ttl_secs(ttl).to_string(),
                ],
            )
            .await
            .map(|_| ())
            .map_err(err("hset"))
    }

    async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>, KvError> {
        self.client
            .hgetall::<HashMap<String, String>, _>(key)
            .await
            .map_err(err("hgetall"))
    }

    async fn del(&self, key: &str) -> Result<bool, KvError> {
        self.client
            .del::<i64, _>(key)
            .await
            .map(|n| n > 0)
            .map_err(err("del"))
    }

    async fn ping(&self) -> Result<(), KvError> {
        self.client
            .ping::<String>(None)
            .await
            .map(|_| ())
            .map_err(err("ping"))
    }
}

#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Hash(HashMap<String, String>),
}

/// [`KvStore`] in process memory with TTLs, for a single-process fleet (`botburrow up`).
#[derive(Default)]
pub struct MemoryKv {
    data: Mutex<HashMap<String, (Value, Instant)>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Value, Instant)>> {
        match self.data.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn live(map: &mut HashMap<String, (Value, Instant)>, key: &str) -> Option<Value> {
        match map.get(key) {
            Some((_, until)) if *until <= Instant::now() => {
                map.remove(key);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }
}

#[async_trait]
impl KvStore for MemoryKv {
    async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> Result<(), KvError> {
        self.lock().insert(
            key.to_string(),
            (Value::Str(value.to_string()), Instant::now() + ttl),
        );
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        Ok(match Self::live(&mut self.lock(), key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(Self::live(&mut self.lock(), key).is_some())
    }

    async fn hincr(&self, key: &str, field: &str, by: i64, ttl: Duration) -> Result<i64, KvError> {
        let mut map = self.lock();
        let mut hash = match Self::live(&mut map, key) {
            Some(Value::Hash(h)) => h,
            _ => HashMap::new(),
        };
        let n = hash
            .get(field)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            + by;
        hash.insert(field.to_string(), n.to_string());
        map.insert(key.to_string(), (Value::Hash(hash), Instant::now() + ttl));
        Ok(n)
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let mut map = self.lock();
        let mut hash = match Self::live(&mut map, key) {
            Some(Value::Hash(h)) => h,
            _ => HashMap::new(),
        };
        hash.insert(field.to_string(), value.to_string());
        map.insert(key.to_string(), (Value::Hash(hash), Instant::now() + ttl));
        Ok(())
    }

    async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>, KvError> {
        Ok(match Self::live(&mut self.lock(), key) {
            Some(Value::Hash(h)) => h,
            _ => HashMap::new(),
        })
    }

    async fn del(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.lock().remove(key).is_some())
    }

    async fn ping(&self) -> Result<(), KvError> {
        Ok(())
    }
}
