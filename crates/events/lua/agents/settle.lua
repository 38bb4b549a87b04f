-- ARGV: token, the `AgentReport` JSON, then what a task of the task manager becomes: its status
-- and the field that holds the answer (`result` JSON or `error` text), and the answer. Returns
-- as `claim.lua`, or false when the token holds no claim (and then nothing changed).
local ok, report_of = pcall(cjson.decode, ARGV[2])
if not ok or type(report_of) ~= 'table'
  or (report_of.completed == nil and type(report_of.failed) ~= 'string') then
  return redis.error_reply('agency: a report must be {"completed": <JSON>} or {"failed": "<error>"}, not ' .. ARGV[2])
end
local id = held(ARGV[1])
if not id then return false end
local claim = redis.call('HGET', CLAIMS, id)
local agent = string.match(claim, '^[^|]*|[^|]*|(.*)$')
local item = redis.call('HGET', ITEMS, id)
local count = redis.call('HGET', COUNTS, id) or '0'
local now = now_ms()
if not set_status(id, ARGV[3], now, {ARGV[4], ARGV[5], 'completed_ms', now}, {}) then
  report(id, agent, ARGV[2], now)
end
unclaim(id, ARGV[1])
forget(id)
return {item, count, claim}
