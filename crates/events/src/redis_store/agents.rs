//! The queue for agents in Redis: every key carries the `{agents}` hash tag, so each script
//! touches one Cluster slot.
//!
//! - `agency:{agents}:items`: item id -> the item's JSON;
//! - `agency:{agents}:meta`: item id -> `<claim timeout ms>|<type>`;
//! - `agency:{agents}:pending:<type>`: waiting ids, pushed left, claimed from the right;
//! - `agency:{agents}:claims`: item id -> `<token>|<deadline ms>|<agent>`;
//! - `agency:{agents}:deadlines`: claimed ids by deadline (ms by Redis's clock);
//! - `agency:{agents}:tokens`: token -> item id;
//! - `agency:{agents}:counts`: item id -> times claimed.

use super::{corrupt, unavailable};
use crate::agents::{AgentClaim, AgentItem};
use crate::error::Result;
use redis::aio::ConnectionManager;

const ITEMS: &str = "agency:{agents}:items";
const META: &str = "agency:{agents}:meta";
const PENDING: &str = "agency:{agents}:pending:";
const CLAIMS: &str = "agency:{agents}:claims";
const DEADLINES: &str = "agency:{agents}:deadlines";
const TOKENS: &str = "agency:{agents}:tokens";
const COUNTS: &str = "agency:{agents}:counts";

/// KEYS: items, meta. ARGV: the pending prefix, then (id, type, timeout ms, JSON) per item.
const OFFER: &str = r#"
for i = 2, #ARGV, 4 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 3]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2] .. '|' .. ARGV[i + 1])
    redis.call('LPUSH', ARGV[1] .. ARGV[i + 1], ARGV[i])
  end
end
return 1
"#;

/// Takes the claim `token` holds off every key, with its item; `false` when it holds none.
/// Defines `take(token)`; KEYS: items, meta, claims, deadlines, tokens, counts.
const TAKE: &str = r#"
local function take(token)
  local id = redis.call('HGET', KEYS[5], token)
  if not id then return false end
  redis.call('HDEL', KEYS[5], token)
  local claim = redis.call('HGET', KEYS[3], id)
  if not claim or string.sub(claim, 1, #token + 1) ~= token .. '|' then return false end
  local item = redis.call('HGET', KEYS[1], id)
  local count = redis.call('HGET', KEYS[6], id) or '0'
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('ZREM', KEYS[4], id)
  return {item, count, claim}
end
"#;

/// KEYS: items, meta, claims, deadlines, tokens, counts. ARGV: pending prefix, agent, token,
/// then the types in order of preference.
const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, #ARGV do
  local list = ARGV[1] .. ARGV[i]
  while true do
    local id = redis.call('RPOP', list)
    if not id then break end
    local item = redis.call('HGET', KEYS[1], id)
    local meta = redis.call('HGET', KEYS[2], id)
    if item and meta then
      local timeout = tonumber(string.match(meta, '^(%d+)|'))
      local deadline = now + timeout
      local count = redis.call('HINCRBY', KEYS[6], id, 1)
      redis.call('HSET', KEYS[3], id, ARGV[3] .. '|' .. deadline .. '|' .. ARGV[2])
      redis.call('ZADD', KEYS[4], deadline, id)
      redis.call('HSET', KEYS[5], ARGV[3], id)
      return {item, tostring(count), ARGV[3] .. '|' .. deadline .. '|' .. ARGV[2]}
    end
  end
end
return false
"#;

/// KEYS as `TAKE`. ARGV: the token.
const SETTLE: &str = "return take(ARGV[1])";

/// KEYS as `TAKE`. ARGV: the pending prefix, the token.
const RELEASE: &str = r#"
local id = redis.call('HGET', KEYS[5], ARGV[2])
if not id then return false end
local claim = redis.call('HGET', KEYS[3], id)
if not claim or string.sub(claim, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then
  redis.call('HDEL', KEYS[5], ARGV[2])
  return false
end
local meta = redis.call('HGET', KEYS[2], id)
redis.call('HDEL', KEYS[5], ARGV[2])
redis.call('HDEL', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('RPUSH', ARGV[1] .. string.match(meta, '^%d+|(.*)$'), id)
return redis.call('HGET', KEYS[1], id)
"#;

/// KEYS as `TAKE`. ARGV: the most to take.
const EXPIRED: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(due) do
  local claim = redis.call('HGET', KEYS[3], id)
  local taken = claim and take(string.match(claim, '^([^|]*)|'))
  if taken then
    for _, part in ipairs(taken) do table.insert(out, part) end
  else
    redis.call('ZREM', KEYS[4], id)
  end
end
return out
"#;

/// The queue's scripts.
#[derive(Clone)]
pub(super) struct AgentScripts {
    offer: redis::Script,
    claim: redis::Script,
    settle: redis::Script,
    release: redis::Script,
    expired: redis::Script,
}

impl AgentScripts {
    pub(super) fn new() -> Self {
        Self {
            offer: redis::Script::new(OFFER),
            claim: redis::Script::new(CLAIM),
            settle: redis::Script::new(&format!("{TAKE}{SETTLE}")),
            release: redis::Script::new(RELEASE),
            expired: redis::Script::new(&format!("{TAKE}{EXPIRED}")),
        }
    }

    pub(super) async fn offer(
        &self,
        mut connection: ConnectionManager,
        items: &[AgentItem],
    ) -> Result<()> {
        // Bounded calls: a range of thousands of instances is offered in slices.
        for slice in items.chunks(512) {
            let mut invocation = self.offer.key(ITEMS);
            invocation.key(META).arg(PENDING);
            for item in slice {
                let json = crate::encode("an item for agents", item)?;
                invocation
                    .arg(&item.id)
                    .arg(&item.kind)
                    .arg(item.claim_timeout_ms)
                    .arg(json);
            }
            let _: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(super) async fn claim(
        &self,
        mut connection: ConnectionManager,
        agent: &str,
        types: &[String],
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        let mut invocation = self.claim.key(ITEMS);
        with_keys(&mut invocation)
            .arg(PENDING)
            .arg(agent)
            .arg(token);
        for kind in types {
            invocation.arg(kind);
        }
        let found: Option<Vec<Vec<u8>>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        found.map(|parts| claim_of(&parts)).transpose()
    }

    pub(super) async fn settle(
        &self,
        mut connection: ConnectionManager,
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        let mut invocation = self.settle.key(ITEMS);
        with_keys(&mut invocation).arg(token);
        let found: Option<Vec<Vec<u8>>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        found.map(|parts| claim_of(&parts)).transpose()
    }

    pub(super) async fn release(
        &self,
        mut connection: ConnectionManager,
        token: &str,
    ) -> Result<Option<AgentItem>> {
        let mut invocation = self.release.key(ITEMS);
        with_keys(&mut invocation).arg(PENDING).arg(token);
        let found: Option<Vec<u8>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        found
            .map(|json| serde_json::from_slice(&json).map_err(|e| corrupt("an item for agents", e)))
            .transpose()
    }

    pub(super) async fn expired(
        &self,
        mut connection: ConnectionManager,
        limit: usize,
    ) -> Result<Vec<AgentClaim>> {
        let mut invocation = self.expired.key(ITEMS);
        with_keys(&mut invocation).arg(limit);
        let parts: Vec<Vec<u8>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        parts.chunks(3).map(claim_of).collect()
    }
}

/// The keys after `items`, in `TAKE`'s order.
fn with_keys<'s, 'a>(
    invocation: &'s mut redis::ScriptInvocation<'a>,
) -> &'s mut redis::ScriptInvocation<'a> {
    invocation
        .key(META)
        .key(CLAIMS)
        .key(DEADLINES)
        .key(TOKENS)
        .key(COUNTS)
}

/// A claim from a script's answer: the item's JSON, its claim count, `<token>|<deadline>|<agent>`.
fn claim_of(parts: &[Vec<u8>]) -> Result<AgentClaim> {
    let [item, count, claim] = parts else {
        return Err(corrupt("a claim", format!("{} parts, not 3", parts.len())));
    };
    let item: AgentItem =
        serde_json::from_slice(item).map_err(|e| corrupt("an item for agents", e))?;
    let count = String::from_utf8_lossy(count);
    let claim = String::from_utf8_lossy(claim);
    let mut fields = claim.splitn(3, '|');
    let (Some(token), Some(_deadline), Some(agent)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(corrupt("a claim", format!("`{claim}`")));
    };
    Ok(AgentClaim {
        token: token.to_string(),
        agent: agent.to_string(),
        item,
        claims: count.parse().map_err(|e| corrupt("a claim count", e))?,
    })
}
