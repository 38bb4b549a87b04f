-- The queue for agents and the task manager (crates/events/src/agents.rs). Every script opens
-- with this file. Every key carries the `{agents}` hash tag, so a script touches one Cluster
-- slot; KEYS[1] is always `agency:{agents}:items`, which routes the call there.
local P = 'agency:{agents}:'
local ITEMS, META, CLAIMS = P .. 'items', P .. 'meta', P .. 'claims'
local DEADLINES, TOKENS, COUNTS = P .. 'deadlines', P .. 'tokens', P .. 'counts'
local REPORTS, DUE = P .. 'reports', P .. 'reports:due'
-- Instances' item ids settled in the last hour, by when: a range delivered again (a worker's
-- partitions moved) does not offer them anew while their reports wait to be recorded.
local SETTLED = P .. 'settled'
local SETTLED_KEPT_MS = 3600000
-- Every type an item was queued under; each item's place in line (lower first: queued items
-- count up, requeued ones down from zero, first in line), from `seq:counter`.
local TYPES, SEQ, COUNTER = P .. 'types', P .. 'seq', P .. 'seq:counter'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function task_key(id) return P .. 'task:' .. id end
local function workflow_key(workflow, what) return P .. 'workflow:' .. workflow .. ':' .. what end

-- A workflow's task was created, or changed: its times (`initialized_ms` once,
-- `updated_ms` each time), which its metadata shows.
local function touch(workflow, now)
  local times = workflow_key(workflow, 'times')
  redis.call('HSETNX', times, 'initialized_ms', now)
  redis.call('HSET', times, 'updated_ms', now)
end

-- Queues item `id` of type `kind` last in line (`first` false) or first, in its type's list
-- and, for a task of workflow `workflow` (false for an instance's item), in the workflow's
-- list of that type too. A list holds ids claimed or gone since: a claim skips them.
local function enqueue(id, kind, workflow, first)
  local seq, push = redis.call('INCR', COUNTER), 'LPUSH'
  if first then seq, push = -seq, 'RPUSH' end
  redis.call('HSET', SEQ, id, seq)
  redis.call('SADD', TYPES, kind)
  redis.call(push, P .. 'pending:' .. kind, id)
  if workflow then
    redis.call('SADD', workflow_key(workflow, 'types'), kind)
    redis.call(push, workflow_key(workflow, 'pending:' .. kind), id)
  end
end

-- The type an item waits under (its meta is `<claim timeout ms>|<type>`).
local function kind_of(id)
  local meta = redis.call('HGET', META, id)
  return meta and string.match(meta, '^%d+|(.*)$')
end

-- Moves task `id` to `status`, in its record and in its workflow's counts (`<status>|<type>`),
-- writing `fields` (name, value, ...) and deleting `gone` (names) with it. False when `id` is
-- no task of the task manager (an instance's item).
local function set_status(id, status, now, fields, gone)
  local key = task_key(id)
  local found = redis.call('HMGET', key, 'workflow', 'type', 'status')
  if not found[1] then return false end
  local counts = P .. 'workflow:' .. found[1] .. ':counts'
  redis.call('HINCRBY', counts, found[3] .. '|' .. found[2], -1)
  redis.call('HINCRBY', counts, status .. '|' .. found[2], 1)
  redis.call('HSET', key, 'status', status, 'updated_ms', now, unpack(fields))
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  touch(found[1], now)
  return true
end

-- The item `token` holds a claim on, or false; a stale token is dropped.
local function held(token)
  local id = redis.call('HGET', TOKENS, token)
  if not id then return false end
  local claim = redis.call('HGET', CLAIMS, id)
  if not claim or string.sub(claim, 1, #token + 1) ~= token .. '|' then
    redis.call('HDEL', TOKENS, token)
    return false
  end
  return id
end

-- Ends the claim on `id` under `token`; the item stays.
local function unclaim(id, token)
  redis.call('HDEL', TOKENS, token)
  redis.call('HDEL', CLAIMS, id)
  redis.call('ZREM', DEADLINES, id)
end

-- Takes item `id` off the queue.
local function forget(id)
  redis.call('HDEL', ITEMS, id)
  redis.call('HDEL', META, id)
  redis.call('HDEL', COUNTS, id)
  redis.call('HDEL', SEQ, id)
end

-- Puts item `id` back first in line of its type (and of its workflow's, for a task).
local function requeue(id)
  enqueue(id, kind_of(id), redis.call('HGET', task_key(id), 'workflow'), true)
end

-- An instance's outcome, reported for a worker to record (`AgentReport` in `outcome`); the id
-- is kept as settled.
local function report(id, agent, outcome, now)
  local item = redis.call('HGET', ITEMS, id)
  local claims = redis.call('HGET', COUNTS, id) or '0'
  redis.call('HSET', REPORTS, id, '{"agent":' .. cjson.encode(agent) .. ',"claims":' .. claims
    .. ',"outcome":' .. outcome .. ',"item":' .. item .. '}')
  redis.call('ZADD', DUE, 0, id)
  redis.call('ZADD', SETTLED, now, id)
end

-- Forgets up to 1,024 settled ids older than an hour.
local function trim_settled(now)
  local old = redis.call('ZRANGEBYSCORE', SETTLED, '-inf', now - SETTLED_KEPT_MS, 'LIMIT', 0, 1024)
  if #old > 0 then redis.call('ZREM', SETTLED, unpack(old)) end
end

-- A task back to pending, its claim gone.
local function back_to_pending(id, now)
  set_status(id, 'pending', now, {}, {'locked_by', 'locked_ms'})
end

-- Ends claims past their deadline at `now`, at most `limit`: an instance's attempt is reported
-- timed out (for a worker to record), a task of the task manager is pending again. Returns how
-- many ended.
local function expire_due(now, limit)
  local due = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local claim = redis.call('HGET', CLAIMS, id)
    if claim then
      local token, agent = string.match(claim, '^([^|]*)|[^|]*|(.*)$')
      if redis.call('EXISTS', task_key(id)) == 1 then
        unclaim(id, token)
        requeue(id)
        back_to_pending(id, now)
      else
        report(id, agent, '"timed_out"', now)
        unclaim(id, token)
        forget(id)
      end
    else
      redis.call('ZREM', DEADLINES, id)
    end
  end
  return #due
end
