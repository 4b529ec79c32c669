//! The coordinator's own direct Valkey reads and writes outside the work queue: counting runner
//! heartbeats for `botburrow_runners_alive` and deleting cached agent configs for the cache
//! webhook. Key names come from `botburrow_shared::valkey`; fred types stay in this module.

use botburrow_shared::ids::AgentId;
use botburrow_shared::valkey::{AGENT_CACHE_PATTERN, HEARTBEAT_PATTERN, agent_cache};
use fred::prelude::{ClientLike, KeysInterface};
use futures::TryStreamExt;
use std::time::Duration;

/// A Valkey command of the coordinator's key store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting or running a command failed (the URL is never included: it may hold a password).
    #[error("valkey: {0}")]
    Valkey(String),
}

fn err(e: fred::error::Error) -> StoreError {
    StoreError::Valkey(e.to_string())
}

/// Direct access to the heartbeat and agent-cache keys.
#[derive(Clone)]
pub struct KeyStore {
    client: fred::clients::Client,
}

impl KeyStore {
    /// Connects a dedicated client.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config = fred::prelude::Config::from_url(url).map_err(err)?;
        let mut builder = fred::prelude::Builder::from_config(config);
        builder
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
            .set_policy(fred::prelude::ReconnectPolicy::new_exponential(
                0, 100, 2_000, 2,
            ));
        let client = builder.build().map_err(err)?;
        client.init().await.map_err(err)?;
        Ok(Self { client })
    }

    async fn keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let keys: Vec<fred::types::Key> = self
            .client
            .scan_buffered(pattern, Some(500), None)
            .try_collect()
            .await
            .map_err(err)?;
        Ok(keys.into_iter().filter_map(|k| k.into_string()).collect())
    }

    /// How many runners have a live heartbeat key (expired ones are gone by TTL).
    pub async fn runners_alive(&self) -> Result<u64, StoreError> {
        Ok(self.keys(HEARTBEAT_PATTERN).await?.len() as u64)
    }

    /// Deletes one agent's cached config, or every cached config (SCAN, then DEL in batches).
    /// Returns how many keys were deleted.
    pub async fn invalidate_agent_cache(&self, agent: Option<&AgentId>) -> Result<u64, StoreError> {
        match agent {
            Some(a) => self.client.del::<u64, _>(agent_cache(a)).await.map_err(err),
            None => {
                let keys = self.keys(AGENT_CACHE_PATTERN).await?;
                let mut deleted = 0;
                for chunk in keys.chunks(200) {
                    deleted += self
                        .client
                        .del::<u64, _>(chunk.to_vec())
                        .await
                        .map_err(err)?;
                }
                Ok(deleted)
            }
        }
    }
}
