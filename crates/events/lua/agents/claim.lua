-- ARGV: agent, token, a workflow ('' for any), then the types in order of preference (none for
-- any). With types, the oldest waiting item of the first that has one; without, the oldest
-- waiting item of every type. With a workflow, only its tasks. Returns the item's JSON, its
-- claim count and `<token>|<deadline ms>|<agent>`, or false. Claims past their deadline end
-- first, so a stale claim is released even where no worker runs (the task manager alone).
local now = now_ms()
expire_due(now, 64)
local workflow = ARGV[3]

local function list_of(kind)
  if workflow ~= '' then return workflow_key(workflow, 'pending:' .. kind) end
  return P .. 'pending:' .. kind
end

-- The oldest waiting id of `list`; ids claimed or gone since they were queued are dropped.
local function head(list)
  while true do
    local id = redis.call('LINDEX', list, -1)
    if not id then return false end
    if redis.call('HEXISTS', CLAIMS, id) == 0 and redis.call('HEXISTS', META, id) == 1 then
      return id
    end
    redis.call('RPOP', list)
  end
end

local function claim(list, id)
  redis.call('RPOP', list)
  local item = redis.call('HGET', ITEMS, id)
  local meta = redis.call('HGET', META, id)
  local deadline = now + tonumber(string.match(meta, '^(%d+)|'))
  local count = redis.call('HINCRBY', COUNTS, id, 1)
  local held_as = ARGV[2] .. '|' .. deadline .. '|' .. ARGV[1]
  redis.call('HSET', CLAIMS, id, held_as)
  redis.call('ZADD', DEADLINES, deadline, id)
  redis.call('HSET', TOKENS, ARGV[2], id)
  set_status(id, 'in_progress', now,
    {'locked_by', ARGV[1], 'locked_ms', now, 'claims', count}, {})
  return {item, tostring(count), held_as}
end

if #ARGV > 3 then
  for i = 4, #ARGV do
    local list = list_of(ARGV[i])
    local id = head(list)
    if id then return claim(list, id) end
  end
  return false
end
local kinds = redis.call('SMEMBERS', workflow ~= '' and workflow_key(workflow, 'types') or TYPES)
local best, best_list, best_seq = false, false, 0
for _, kind in ipairs(kinds) do
  local list = list_of(kind)
  local id = head(list)
  if id then
    local seq = tonumber(redis.call('HGET', SEQ, id) or '0')
    if not best or seq < best_seq then best, best_list, best_seq = id, list, seq end
  end
end
if best then return claim(best_list, best) end
return false
