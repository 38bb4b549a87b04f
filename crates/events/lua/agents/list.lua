-- ARGV: workflow, status ('' for any), type ('' for any), the position to start at in the
-- workflow's tasks (creation order), the most to return. Returns the position to go on from
-- (-1 at the end), then the ids found. Looks at 10,000 tasks at most per call.
local tasks = workflow_key(ARGV[1], 'tasks')
local from, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids = redis.call('LRANGE', tasks, from, from + 9999)
local out = {-1}
local at = from
for _, id in ipairs(ids) do
  if #out - 1 >= limit then break end
  local found = redis.call('HMGET', task_key(id), 'status', 'type')
  if (ARGV[2] == '' or found[1] == ARGV[2]) and (ARGV[3] == '' or found[2] == ARGV[3]) then
    table.insert(out, id)
  end
  at = at + 1
end
if at < redis.call('LLEN', tasks) then out[1] = at end
return out
