-- ARGV: a workflow, then key and JSON value pairs to set (none to only read). Setting changes
-- the workflow (its times). Returns its metadata (key, JSON value, ...) and its times
-- (`initialized_ms`, `updated_ms`, ..., empty before it has either).
local metadata = workflow_key(ARGV[1], 'metadata')
if #ARGV > 1 then
  redis.call('HSET', metadata, unpack(ARGV, 2))
  touch(ARGV[1], now_ms())
end
return {redis.call('HGETALL', metadata), redis.call('HGETALL', workflow_key(ARGV[1], 'times'))}
