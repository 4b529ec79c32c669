//! The Lua scripts of the Valkey queue: every multi-key change of the queue is exactly one of these,
//! so each runs atomically on the server.
//!
//! All scripts share one key layout ([`KEY_LAYOUT`], built by `valkey::keys`) and one prelude of
//! helpers, so the bookkeeping (ending a lease, requeueing, dead-lettering, waking claimers) is
//! written once. Key names come from [`crate::valkey`]; scripts only index `KEYS[n]`, except the
//! reaper, which derives `activation:{id}` from the prefix passed in `ARGV` for leases it finds.
//!
//! Numbers: times are epoch milliseconds in arguments, leases and deadlines; `work:backoff`,
//! `work:failures_at` and dead letters' `failed_at` store epoch seconds (as the design documents).

/// `KEYS[n]` of every script, 1-based, in order. `KEYS[1]` is the activation key the script is
/// about, or a placeholder when none.
pub const KEY_LAYOUT: [&str; 14] = [
    "activation:{id}",
    "work:leases",
    "work:inflight",
    "work:active",
    "work:queued",
    "work:failures",
    "work:failures_at",
    "work:backoff",
    "work:dead",
    "work:queue:high",
    "work:queue:normal",
    "work:queue:low",
    "work:signal:inbox",
    "work:signal:discovery",
];

/// Most wake-up tokens kept per task type; more would only cause spurious wake-ups.
pub const SIGNAL_CAP: usize = 1024;

macro_rules! prelude {
    () => {
        r#"
local SIGNAL_CAP = 1024
local function signal(task_type)
  local key = KEYS[14]
  if task_type == 'inbox' then key = KEYS[13] end
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, SIGNAL_CAP - 1)
end
local function list_for(priority)
  if priority == 'high' then return KEYS[10] end
  if priority == 'low' then return KEYS[12] end
  return KEYS[11]
end
local function owned(act_key, id)
  if redis.call('EXISTS', act_key) == 0 then return nil end
  local raw = redis.call('HGET', KEYS[3], id)
  if not raw then return nil end
  return raw
end
local function end_lease(act_key, id, agent)
  redis.call('DEL', act_key)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if agent then
    if redis.call('HGET', KEYS[4], agent) == id then redis.call('HDEL', KEYS[4], agent) end
    -- a waiting item of this agent could not be claimed while it was active: wake a claimer
    if redis.call('SISMEMBER', KEYS[5], agent) == 1 then signal('inbox'); signal('discovery') end
  end
end
local function bury(item, err, now)
  redis.call('LPUSH', KEYS[9], cjson.encode({item = item, error = err, failed_at = now / 1000}))
end
local function requeue(item, err, now)
  item.attempt = (tonumber(item.attempt) or 0) + 1
  item.last_error = err
  item.priority = 'low'
  item.enqueued_at = now
  if redis.call('SADD', KEYS[5], item.agent_id) == 1 then
    redis.call('LPUSH', KEYS[12], cjson.encode(item))
    signal(item.task_type)
  end
  return item.attempt
end
"#
    };
}

/// ARGV: agent, item JSON, now_ms, priority name, task type.
/// Returns `{'enqueued'}`, `{'queued'}`, `{'active'}` or `{'backoff', until_epoch_s}`.
pub const ENQUEUE: &str = concat!(
    prelude!(),
    r#"
local agent = ARGV[1]
if redis.call('HEXISTS', KEYS[4], agent) == 1 then return {'active'} end
local untl = redis.call('HGET', KEYS[8], agent)
if untl then
  local u = tonumber(untl)
  if u and u * 1000 > tonumber(ARGV[3]) then return {'backoff', untl} end
  redis.call('HDEL', KEYS[8], agent)
end
if redis.call('SADD', KEYS[5], agent) == 0 then return {'queued'} end
redis.call('LPUSH', list_for(ARGV[4]), ARGV[2])
signal(ARGV[5])
return {'enqueued'}
"#
);

/// ARGV: activation id, runner, now_ms, lease_ms, lists in order (`high,normal,low` subset),
/// allow inbox (`1`/`0`), allow discovery, consumed token type (`inbox`, `discovery` or empty),
/// scan budget. Pops the first claimable item (FIFO from the tail) and leases it, burying malformed
/// entries on the way. Returns `{item_json_or_nil, buried_count}`.
pub const CLAIM: &str = concat!(
    prelude!(),
    r#"
local id, runner = ARGV[1], ARGV[2]
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local allow = {inbox = ARGV[6] == '1', discovery = ARGV[7] == '1'}
local consumed = ARGV[8]
local budget = tonumber(ARGV[9])
local buried = 0
for name in string.gmatch(ARGV[5], '[^,]+') do
  local key = list_for(name)
  local offset = -1
  while budget > 0 do
    local raw = redis.call('LINDEX', key, offset)
    if not raw then break end
    budget = budget - 1
    local ok, item = pcall(cjson.decode, raw)
    local reason = nil
    if not ok or type(item) ~= 'table' then reason = 'not a JSON object'
    elseif type(item.agent_id) ~= 'string' or item.agent_id == '' then reason = 'agent_id missing or empty'
    elseif item.task_type ~= 'inbox' and item.task_type ~= 'discovery' then reason = 'task_type is not inbox or discovery'
    end
    if reason then
      redis.call('LREM', key, -1, raw)
      bury(raw, 'malformed work item: ' .. reason, now)
      buried = buried + 1
    elseif allow[item.task_type] and redis.call('HEXISTS', KEYS[4], item.agent_id) == 0 then
      if offset == -1 then redis.call('RPOP', key) else redis.call('LREM', key, -1, raw) end
      -- items of the original fleet have no id: give them one, stable across retries
      if type(item.id) ~= 'string' or item.id == '' then
        item.id = id
        raw = cjson.encode(item)
      end
      local deadline = now + lease
      redis.call('SREM', KEYS[5], item.agent_id)
      redis.call('HSET', KEYS[4], item.agent_id, id)
      redis.call('ZADD', KEYS[2], deadline, id)
      redis.call('HSET', KEYS[3], id, raw)
      redis.call('HSET', KEYS[1], 'item', raw, 'runner', runner, 'agent_id', item.agent_id,
        'started_at', now, 'deadline', deadline)
      redis.call('PEXPIRE', KEYS[1], lease)
      -- keep one token per waiting item: drop this item's token unless the claimer already
      -- consumed it, and hand back a token of another type the claimer consumed
      if consumed ~= item.task_type then
        if item.task_type == 'inbox' then redis.call('RPOP', KEYS[13]) else redis.call('RPOP', KEYS[14]) end
        if consumed ~= '' then signal(consumed) end
      end
      return {raw, buried}
    else
      offset = offset - 1
    end
  end
end
return {false, buried}
"#
);

/// ARGV: activation id, now_ms, lease_ms. Returns 1 if renewed, 0 if the lease is gone.
pub const RENEW: &str = concat!(
    prelude!(),
    r#"
if not owned(KEYS[1], ARGV[1]) then return 0 end
local deadline = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[1], 'deadline', deadline)
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return 1
"#
);

/// ARGV: activation id. Ends the lease and closes the agent's breaker. Returns 1, or 0 if not owned.
pub const COMPLETE: &str = concat!(
    prelude!(),
    r#"
local raw = owned(KEYS[1], ARGV[1])
if not raw then return 0 end
local agent = cjson.decode(raw).agent_id
end_lease(KEYS[1], ARGV[1], agent)
redis.call('HDEL', KEYS[6], agent)
redis.call('HDEL', KEYS[7], agent)
redis.call('HDEL', KEYS[8], agent)
return 1
"#
);

/// ARGV: activation id, error, retryable (`1`/`0`), now_ms, max_attempts, failure_threshold,
/// backoff_base_ms, backoff_max_ms, failure_decay_ms, malformed (`1`: the runner could not parse
/// the item; bury it without counting a failure).
/// Returns `{'not_owner'}`, `{'dead', failures}`, `{'backoff', failures, until_ms}` or
/// `{'requeued', failures, attempt}` (`{'backoff', failures, until_ms, agent}` names the agent for
/// the log).
pub const FAIL: &str = concat!(
    prelude!(),
    r#"
local id, err = ARGV[1], ARGV[2]
local now = tonumber(ARGV[4])
local raw = owned(KEYS[1], id)
if not raw then return {'not_owner'} end
local item = cjson.decode(raw)
local agent = item.agent_id
end_lease(KEYS[1], id, agent)
if ARGV[10] == '1' then
  bury(raw, err, now)
  return {'dead', 0}
end
local n = tonumber(redis.call('HGET', KEYS[6], agent)) or 0
local last = tonumber(redis.call('HGET', KEYS[7], agent))
if last and now - last * 1000 >= tonumber(ARGV[9]) then n = 0 end
n = n + 1
redis.call('HSET', KEYS[6], agent, n)
redis.call('HSET', KEYS[7], agent, string.format('%.3f', now / 1000))
local until_ms = nil
local threshold = tonumber(ARGV[6])
if n >= threshold then
  until_ms = now + math.min(tonumber(ARGV[7]) * math.pow(2, math.min(n - threshold, 62)), tonumber(ARGV[8]))
  redis.call('HSET', KEYS[8], agent, string.format('%.3f', until_ms / 1000))
end
local next_attempt = (tonumber(item.attempt) or 0) + 1
if ARGV[3] ~= '1' or next_attempt >= tonumber(ARGV[5]) then
  item.attempt = next_attempt
  item.last_error = err
  bury(item, err, now)
  return {'dead', n}
end
if until_ms then return {'backoff', n, until_ms, agent} end
return {'requeued', n, requeue(item, err, now)}
"#
);

/// ARGV: activation id. Puts the item back unchanged at the claim end of its list.
/// Returns 1, or 0 if not owned.
pub const RELEASE: &str = concat!(
    prelude!(),
    r#"
local raw = owned(KEYS[1], ARGV[1])
if not raw then return 0 end
local item = cjson.decode(raw)
end_lease(KEYS[1], ARGV[1], item.agent_id)
if redis.call('SADD', KEYS[5], item.agent_id) == 1 then
  redis.call('RPUSH', list_for(item.priority), raw)
  signal(item.task_type)
end
return 1
"#
);

/// ARGV: now_ms, max_attempts, limit, activation key prefix.
/// Returns `{requeued, dead, orphaned}`.
pub const REAP: &str = concat!(
    prelude!(),
    r#"
local now, max_attempts, limit, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local requeued, dead, orphaned = 0, 0, 0
local victims, seen = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  victims[#victims + 1] = {id, 'lease expired'}
  seen[id] = true
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, limit - 1)) do
  if not seen[id] and redis.call('EXISTS', prefix .. id) == 0 then
    victims[#victims + 1] = {id, 'activation stopped'}
  end
end
for _, v in ipairs(victims) do
  local id, reason = v[1], v[2]
  local raw = redis.call('HGET', KEYS[3], id)
  local ok, item = false, nil
  if raw then ok, item = pcall(cjson.decode, raw) end
  if ok and type(item) == 'table' and type(item.agent_id) == 'string' then
    end_lease(prefix .. id, id, item.agent_id)
    local next_attempt = (tonumber(item.attempt) or 0) + 1
    if next_attempt >= max_attempts then
      item.attempt = next_attempt
      item.last_error = reason
      bury(item, reason, now)
      dead = dead + 1
    else
      requeue(item, reason, now)
      requeued = requeued + 1
    end
  else
    end_lease(prefix .. id, id, nil)
    if raw then bury(raw, 'unreadable lease: ' .. reason, now) end
    orphaned = orphaned + 1
  end
end
-- a work:active entry without a lease would refuse the agent's work forever
local act = redis.call('HGETALL', KEYS[4])
for i = 1, #act, 2 do
  if redis.call('HEXISTS', KEYS[3], act[i + 1]) == 0 then
    redis.call('HDEL', KEYS[4], act[i])
    if redis.call('SISMEMBER', KEYS[5], act[i]) == 1 then signal('inbox'); signal('discovery') end
    orphaned = orphaned + 1
  end
end
-- a work:queued member without a waiting item (lists emptied by hand) would refuse it forever
local waiting = redis.call('LLEN', KEYS[10]) + redis.call('LLEN', KEYS[11]) + redis.call('LLEN', KEYS[12])
if redis.call('SCARD', KEYS[5]) > waiting then
  local present = {}
  for k = 10, 12 do
    for _, raw in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do
      local ok, item = pcall(cjson.decode, raw)
      if ok and type(item) == 'table' and type(item.agent_id) == 'string' then present[item.agent_id] = true end
    end
  end
  for _, agent in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if not present[agent] then
      redis.call('SREM', KEYS[5], agent)
      orphaned = orphaned + 1
    end
  end
end
return {requeued, dead, orphaned}
"#
);

/// ARGV: work item id, now_ms. Moves that dead item back to its list with attempt 0.
/// Returns 1, or 0 if not found or its agent already has work waiting or running.
pub const RETRY_DEAD: &str = concat!(
    prelude!(),
    r#"
for _, e in ipairs(redis.call('LRANGE', KEYS[9], 0, -1)) do
  local ok, d = pcall(cjson.decode, e)
  if ok and type(d) == 'table' and type(d.item) == 'table' and d.item.id == ARGV[1] then
    local item = d.item
    if type(item.agent_id) ~= 'string' or redis.call('HEXISTS', KEYS[4], item.agent_id) == 1 then return 0 end
    if redis.call('SADD', KEYS[5], item.agent_id) == 0 then return 0 end
    redis.call('LREM', KEYS[9], 1, e)
    item.attempt = 0
    item.enqueued_at = tonumber(ARGV[2])
    redis.call('LPUSH', list_for(item.priority), cjson.encode(item))
    signal(item.task_type)
    return 1
  end
end
return 0
"#
);

/// ARGV: agent. Closes its breaker. Returns how many of backoff/failures/failures_at existed.
pub const CLEAR_BACKOFF: &str = concat!(
    prelude!(),
    r#"
return redis.call('HDEL', KEYS[8], ARGV[1]) + redis.call('HDEL', KEYS[6], ARGV[1]) + redis.call('HDEL', KEYS[7], ARGV[1])
"#
);

/// No ARGV. Empties the dead letters, returning how many there were.
pub const PURGE_DEAD: &str = concat!(
    prelude!(),
    r#"
local n = redis.call('LLEN', KEYS[9])
redis.call('DEL', KEYS[9])
return n
"#
);

/// No ARGV. A consistent snapshot: `{len high, len normal, len low, active, dead,
/// tail high, tail normal, tail low, backoff hash values...}`.
pub const STATS: &str = concat!(
    prelude!(),
    r#"
local out = {
  redis.call('LLEN', KEYS[10]), redis.call('LLEN', KEYS[11]), redis.call('LLEN', KEYS[12]),
  redis.call('HLEN', KEYS[4]), redis.call('LLEN', KEYS[9]),
  redis.call('LINDEX', KEYS[10], -1), redis.call('LINDEX', KEYS[11], -1), redis.call('LINDEX', KEYS[12], -1),
}
for _, v in ipairs(redis.call('HVALS', KEYS[8])) do out[#out + 1] = v end
return out
"#
);
