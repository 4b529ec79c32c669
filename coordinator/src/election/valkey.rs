//! Valkey lock elector for clusters without the Lease API: `SET coordinator:leader <id> NX PX`
//! to acquire, and Lua compare-and-renew / compare-and-delete scripts so a candidate can only
//! extend or release a lock whose value is its own identity (the original's GET-then-EXPIRE race
//! is gone). fred types stay inside this module.

use super::{ElectionError, ElectionTiming, LeaderElector};
use async_trait::async_trait;
use botburrow_shared::valkey::LEADER;
use fred::prelude::{ClientLike, Expiration, KeysInterface, LuaInterface, SetOptions, Value};

/// Extends the lock only if it still holds our identity. Returns 1 when renewed.
const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Deletes the lock only if it still holds our identity. Returns 1 when deleted.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A Valkey command of the lock failed.
#[derive(Debug, thiserror::Error)]
pub enum ValkeyLockError {
    /// Connecting or running a command failed.
    #[error("valkey leader lock: {0}")]
    Command(String),
}

fn cmd_err(e: fred::error::Error) -> ValkeyLockError {
    ValkeyLockError::Command(e.to_string())
}

/// Leader election through the `coordinator:leader` key.
pub struct ValkeyElector {
    client: fred::clients::Client,
    identity: String,
    timing: ElectionTiming,
}

impl ValkeyElector {
    /// Connects a dedicated client to `url` (not logged: it may carry a password).
    pub async fn connect(
        url: &str,
        identity: impl Into<String>,
        timing: ElectionTiming,
    ) -> Result<Self, ValkeyLockError> {
        let config = fred::prelude::Config::from_url(url).map_err(cmd_err)?;
        let mut builder = fred::prelude::Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = std::time::Duration::from_secs(2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = std::time::Duration::from_secs(5);
            })
            .set_policy(fred::prelude::ReconnectPolicy::new_exponential(
                0, 100, 2_000, 2,
            ));
        let client = builder.build().map_err(cmd_err)?;
        client.init().await.map_err(cmd_err)?;
        Ok(Self {
            client,
            identity: identity.into(),
            timing,
        })
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.timing.lease_duration.as_millis()).unwrap_or(i64::MAX)
    }

    async fn attempt(&self) -> Result<bool, ValkeyLockError> {
        let renewed: i64 = self
            .client
            .eval(
                RENEW_SCRIPT,
                vec![LEADER],
                vec![self.identity.clone(), self.ttl_ms().to_string()],
            )
            .await
            .map_err(cmd_err)?;
        if renewed == 1 {
            return Ok(true);
        }
        let set: Value = self
            .client
            .set(
                LEADER,
                self.identity.as_str(),
                Some(Expiration::PX(self.ttl_ms())),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(cmd_err)?;
        Ok(!set.is_null())
    }

    async fn give_up(&self) -> Result<(), ValkeyLockError> {
        let _: i64 = self
            .client
            .eval(RELEASE_SCRIPT, vec![LEADER], vec![self.identity.clone()])
            .await
            .map_err(cmd_err)?;
        Ok(())
    }
}

#[async_trait]
impl LeaderElector for ValkeyElector {
    async fn try_acquire_or_renew(&self) -> Result<bool, ElectionError> {
        Ok(self.attempt().await?)
    }

    async fn release(&self) -> Result<(), ElectionError> {
        Ok(self.give_up().await?)
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn timing(&self) -> ElectionTiming {
        self.timing
    }

    fn backend(&self) -> &'static str {
        "valkey"
    }
}
