//! Every Valkey key name the fleet uses (design §4). Operators type these into `redis-cli`, so they
//! never change; code never formats a key anywhere else. Lua scripts live in submodules of the
//! components that own them but take their key names from here.

use crate::ids::{ActivationId, AgentId, RunnerId};
use crate::work::{Priority, TaskType};

/// `work:queue:high|normal|low`: LIST of WorkItem JSON.
pub fn queue(priority: Priority) -> String {
    format!("work:queue:{}", priority.as_str())
}

/// SET of agent ids with an item waiting (dedup).
pub const QUEUED: &str = "work:queued";
/// HASH agent id → activation id: at most one activation per agent fleet-wide.
pub const ACTIVE: &str = "work:active";
/// ZSET activation id by lease deadline (epoch ms); the reaper scans it.
pub const LEASES: &str = "work:leases";
/// HASH activation id → WorkItem JSON of every leased item: the durable copy the reaper requeues
/// from when `activation:{id}` has expired or was deleted.
pub const INFLIGHT: &str = "work:inflight";

/// `work:signal:inbox|discovery`: LIST of wake-up tokens, one per waiting item of that task type;
/// idle claimers block on it (BLPOP) instead of polling.
pub fn signal(task: TaskType) -> String {
    format!("work:signal:{}", task.as_str())
}

/// HASH agent id → consecutive failure count.
pub const FAILURES: &str = "work:failures";
/// HASH agent id → last failure time (epoch s), for decay.
pub const FAILURES_AT: &str = "work:failures_at";
/// HASH agent id → backoff-until (epoch s).
pub const BACKOFF: &str = "work:backoff";
/// LIST of dead-lettered items with their last error.
pub const DEAD: &str = "work:dead";
/// STRING leader lock when `LEADER_ELECTION=valkey`.
pub const LEADER: &str = "coordinator:leader";

/// `activation:{id}`: HASH item, runner, started_at, deadline; its TTL is the lease.
pub fn activation(id: &ActivationId) -> String {
    format!("activation:{id}")
}

/// Prefix of activation keys, for SCAN.
pub const ACTIVATION_PREFIX: &str = "activation:";

/// `runner:heartbeat:{runner_id}`: STRING JSON with TTL.
pub fn heartbeat(runner: &RunnerId) -> String {
    format!("runner:heartbeat:{runner}")
}

/// Pattern matching every runner heartbeat.
pub const HEARTBEAT_PATTERN: &str = "runner:heartbeat:*";

/// `cache:agent:{id}`: STRING JSON of the parsed agent config, with TTL.
pub fn agent_cache(agent: &AgentId) -> String {
    format!("cache:agent:{agent}")
}

/// Pattern matching every cached agent config.
pub const AGENT_CACHE_PATTERN: &str = "cache:agent:*";

/// `limits:{agent}:{yyyy-mm-dd}`: HASH of discovery counters (posts, comments, last action),
/// expiring two days after the UTC day it counts.
pub fn daily_limits(agent: &AgentId, day: &str) -> String {
    format!("limits:{agent}:{day}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_match_the_design() {
        assert_eq!(queue(Priority::High), "work:queue:high");
        assert_eq!(queue(Priority::Normal), "work:queue:normal");
        assert_eq!(queue(Priority::Low), "work:queue:low");
        assert_eq!(activation(&ActivationId::new("abc")), "activation:abc");
        assert_eq!(heartbeat(&RunnerId::new("r1")), "runner:heartbeat:r1");
        assert_eq!(agent_cache(&AgentId::new("a")), "cache:agent:a");
    }
}
