-- ARGV: a task id. A pending or claimed task is cancelled (a claim on it ends); returns '' when
-- cancelled, else why not.
local status = redis.call('HGET', task_key(ARGV[1]), 'status')
if not status then return 'task `' .. ARGV[1] .. '` does not exist' end
if status ~= 'pending' and status ~= 'in_progress' then
  return 'task `' .. ARGV[1] .. '` is ' .. status .. ' already'
end
local claim = redis.call('HGET', CLAIMS, ARGV[1])
if claim then unclaim(ARGV[1], string.match(claim, '^([^|]*)|')) end
local kind, workflow = kind_of(ARGV[1]), redis.call('HGET', task_key(ARGV[1]), 'workflow')
redis.call('LREM', P .. 'pending:' .. kind, 1, ARGV[1])
redis.call('LREM', workflow_key(workflow, 'pending:' .. kind), 1, ARGV[1])
forget(ARGV[1])
local now = now_ms()
set_status(ARGV[1], 'cancelled', now, {'completed_ms', now}, {'locked_by', 'locked_ms'})
return ''
