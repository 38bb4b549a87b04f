-- ARGV: id, workflow, type, claim timeout ms, data JSON, parent id ('' for none), item JSON.
-- Returns '' when created, else why not.
local key = task_key(ARGV[1])
if redis.call('EXISTS', key) == 1 then return 'task `' .. ARGV[1] .. '` exists already' end
if ARGV[6] ~= '' then
  local theirs = redis.call('HGET', task_key(ARGV[6]), 'workflow')
  if not theirs then return 'parent task `' .. ARGV[6] .. '` does not exist' end
  if theirs ~= ARGV[2] then
    return 'parent task `' .. ARGV[6] .. '` is of workflow `' .. theirs .. '`, not `' .. ARGV[2] .. '`'
  end
  redis.call('RPUSH', P .. 'children:' .. ARGV[6], ARGV[1])
end
local now = now_ms()
redis.call('HSET', key, 'workflow', ARGV[2], 'type', ARGV[3], 'status', 'pending',
  'claim_timeout_ms', ARGV[4], 'data', ARGV[5], 'parent', ARGV[6], 'claims', 0,
  'created_ms', now, 'updated_ms', now)
redis.call('HINCRBY', workflow_key(ARGV[2], 'counts'), 'pending|' .. ARGV[3], 1)
redis.call('RPUSH', workflow_key(ARGV[2], 'tasks'), ARGV[1])
touch(ARGV[2], now)
redis.call('HSET', ITEMS, ARGV[1], ARGV[7])
redis.call('HSET', META, ARGV[1], ARGV[4] .. '|' .. ARGV[3])
enqueue(ARGV[1], ARGV[3], ARGV[2], false)
return ''
