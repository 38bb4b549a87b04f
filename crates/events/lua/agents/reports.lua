-- ARGV: the most to take, a lease (ms). Reports not taken, or whose lease ran out, are leased
-- to the caller and returned (id, then JSON, each); the caller deletes them once recorded.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(due) do
  local found = redis.call('HGET', REPORTS, id)
  if found then
    redis.call('ZADD', DUE, now + tonumber(ARGV[2]), id)
    table.insert(out, id)
    table.insert(out, found)
  else
    redis.call('ZREM', DUE, id)
  end
end
return out
