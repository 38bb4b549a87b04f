-- ARGV: agent, token, then the types in order of preference. Returns the item's JSON, its claim
-- count and `<token>|<deadline ms>|<agent>`, or false. Claims past their deadline end first,
-- so a stale claim is released even where no worker runs (the task manager alone).
local now = now_ms()
expire_due(now, 64)
for i = 3, #ARGV do
  local list = P .. 'pending:' .. ARGV[i]
  while true do
    local id = redis.call('RPOP', list)
    if not id then break end
    local item = redis.call('HGET', ITEMS, id)
    local meta = redis.call('HGET', META, id)
    if item and meta then
      local deadline = now + tonumber(string.match(meta, '^(%d+)|'))
      local count = redis.call('HINCRBY', COUNTS, id, 1)
      local claim = ARGV[2] .. '|' .. deadline .. '|' .. ARGV[1]
      redis.call('HSET', CLAIMS, id, claim)
      redis.call('ZADD', DEADLINES, deadline, id)
      redis.call('HSET', TOKENS, ARGV[2], id)
      set_status(id, 'in_progress', now,
        {'locked_by', ARGV[1], 'locked_ms', now, 'claims', count}, {})
      return {item, tostring(count), claim}
    end
  end
end
return false
