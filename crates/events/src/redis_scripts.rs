//! The Lua the Redis store runs: each script is one atomic step of the recording rule, the
//! lease or the result, so no other client sees it half done.

/// How long a session's result stays readable after its working state is deleted.
pub(crate) const RESULT_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Every working key of a session expires this long after its last write: a backstop, so that
/// state nothing cleans up (a run abandoned for good) does not stay for ever.
pub(crate) const WORKING_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// The recording rule, per instance. KEYS: outcomes, keys index, the session's current run.
/// ARGV: notices channel (empty for none), notice, the outcomes' run, the working TTL in
/// seconds, then (instance, `attempt|S or F|outcome JSON`) pairs: the value as stored. Outcomes
/// of a run that is not the session's current one (it ended and was cleaned up, or a later run
/// of the id started) are refused whole: the answer is `stale` and nothing is written. The
/// notice is published after the writes, when every outcome was accepted. Returns the number of
/// outcomes when all were accepted, else 1 or 0 per outcome.
///
/// An outcome is accepted unless its instance already holds a success or an attempt at least as
/// new. Per slice of `SLICE` outcomes the stored values are read with one `HMGET`; when none is
/// stored (a range recorded for the first time, the common case) the slice is written as sent
/// with one `HSET`, so Lua touches no string per outcome. Otherwise each outcome is judged, and
/// an instance twice in one batch is judged against the first's outcome, as if they came one
/// after the other. The slice keeps `unpack` far below Lua's stack limit.
pub(crate) const RECORD_SCRIPT: &str = r#"
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then return 'stale' end
local SLICE = 512
local accepted = {}
local all = true
local decided = {}
local function attempt_of(value) return tonumber(string.match(value, '^(%d+)|')) end
local function judge(first, fields, stored)
  local writes = {}
  for k = 1, #fields do
    local i = first + (k - 1) * 2
    local field, value = ARGV[i], ARGV[i + 1]
    local previous = decided[field] or stored[k]
    local ok = 1
    if previous then
      local stored_status = string.match(previous, '^%d+|(%a)|')
      if stored_status == 'S' or attempt_of(value) <= attempt_of(previous) then ok = 0 end
    end
    if ok == 1 then
      decided[field] = value
      writes[#writes + 1] = field
      writes[#writes + 1] = value
    else
      all = false
    end
    accepted[#accepted + 1] = ok
  end
  if #writes > 0 then redis.call('HSET', KEYS[1], unpack(writes)) end
end
for first = 5, #ARGV, 2 * SLICE do
  local last = math.min(first + 2 * SLICE - 1, #ARGV)
  local fields = {}
  for i = first, last, 2 do fields[#fields + 1] = ARGV[i] end
  local stored = redis.call('HMGET', KEYS[1], unpack(fields))
  local fresh = true
  for k = 1, #stored do
    if stored[k] then fresh = false break end
  end
  if not fresh then
    judge(first, fields, stored)
  elseif redis.call('HSET', KEYS[1], unpack(ARGV, first, last)) == #fields then
    for k = 1, #fields do accepted[#accepted + 1] = 1 end
  else
    -- An instance twice in the slice: nothing was stored before it, so undo and judge each.
    redis.call('HDEL', KEYS[1], unpack(fields))
    judge(first, fields, {})
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if all and ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
if all then return #accepted end
return accepted
"#;

/// KEYS: lease, origin, result, fence. ARGV: owner, lease ms, origin, origin TTL s, token. See
/// `Runs::claim`; whenever it takes the lease, `token` becomes the session's fence.
pub(crate) const CLAIM_SCRIPT: &str = r#"
local previous = redis.call('GET', KEYS[2])
if previous and previous ~= ARGV[3] then
  local at, offset = string.match(previous, '^(.*)/(%d+)$')
  local this_at, this_offset = string.match(ARGV[3], '^(.*)/(%d+)$')
  if at and at == this_at and tonumber(offset) > tonumber(this_offset) then return 'superseded' end
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 'held' end
if previous == ARGV[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 'finished' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[4])
if previous == ARGV[3] then return 'resume' end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('DEL', KEYS[3])
if previous then return 'stale' end
return 'fresh'
"#;

/// The check every fenced write opens with (see `Fence`). KEYS[1]: the session's fence; ARGV[1]:
/// the writer's token, `''` for none. A write whose token a later claim replaced answers
/// `fenced` and changes nothing; with no fence stored (the store lost the session) it goes ahead.
/// The write itself follows and answers `ok`.
pub(crate) const FENCE: &str = r#"
local fence = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and fence and fence ~= ARGV[1] then return 'fenced' end
"#;

/// After [`FENCE`]. KEYS: fence, result, origin. ARGV: token, result, TTL s, results channel,
/// announcement. The
/// origin and fence live as long as the result, so a redelivered action is recognised as done;
/// the result is announced once stored, and not again when the same result is stored again (a
/// retry of a write whose answer was lost).
pub(crate) const RESULT_SCRIPT: &str = r#"
local again = redis.call('GET', KEYS[2]) == ARGV[2]
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if not again then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, task record, keys index. ARGV: token, record, working TTL s.
pub(crate) const SAVE_TASK_SCRIPT: &str = r#"
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, hash. ARGV: token, working TTL s, then field and value pairs:
/// the hash becomes exactly those, written 500 pairs at a time (far below Lua's stack limit).
pub(crate) const REPLACE_HASH_SCRIPT: &str = r#"
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, hash. ARGV: token, working TTL s, field, value.
pub(crate) const SET_FIELD_SCRIPT: &str = r#"
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, the session's current run. ARGV: token, run, working TTL s.
pub(crate) const START_RUN_SCRIPT: &str = r#"
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, current run, cancel mark, pause mark. ARGV: token, run. The
/// run stops being the current one (its working state stays), if it still is.
pub(crate) const END_RUN_SCRIPT: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2], KEYS[3], KEYS[4]) end
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, document hash, keys index. ARGV: token, working TTL s, run,
/// document.
pub(crate) const SAVE_DOCUMENT_SCRIPT: &str = r#"
redis.call('HSET', KEYS[2], 'run', ARGV[3], 'document', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, state, keys index. ARGV: token, working TTL s, state, replace
/// (`1`, also published on the progress channel; or `0`: only when none is stored), progress
/// channel. Answers the server's time in ms (digits), which the sessions index is stamped with.
pub(crate) const SAVE_STATE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
if ARGV[4] == '0' and redis.call('EXISTS', KEYS[2]) == 1 then return now end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
if ARGV[4] == '1' then redis.call('PUBLISH', ARGV[5], ARGV[3]) end
return now
"#;

/// A member's heartbeat. KEYS: members (id -> info), seen (id -> ms). ARGV: id, info, forget
/// after ms. Members not seen for that long are forgotten, a few per call.
pub(crate) const HEARTBEAT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], now)
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  if now - tonumber(seen[i + 1]) > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], seen[i])
    redis.call('HDEL', KEYS[2], seen[i])
  end
end
return now
"#;

/// Marks the session's current run cancelled (or paused). KEYS: the current run, the mark, keys
/// index. ARGV: working TTL s. The run marked, or nil when none is current (nothing written).
pub(crate) const REQUEST_CANCEL_SCRIPT: &str = r#"
local run = redis.call('GET', KEYS[1])
if not run then return false end
redis.call('SET', KEYS[2], run, 'EX', ARGV[1])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[1])
return run
"#;

/// The workers that started each work item and did not finish it. KEYS: the session's current
/// run, starts hash, keys index. ARGV: run (empty: not checked), item, the worker's name (empty:
/// the range finished), working TTL s. The hash holds, per item, the JSON list of those
/// workers. -1 when the run is not the current one (nothing written); else how many (0 after
/// the finish).
pub(crate) const TRACK_RANGE_SCRIPT: &str = r#"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 0
end
local workers = {}
local stored = redis.call('HGET', KEYS[2], ARGV[2])
if stored then workers = cjson.decode(stored) end
local known = false
for _, worker in ipairs(workers) do
  if worker == ARGV[3] then known = true end
end
if not known then table.insert(workers, ARGV[3]) end
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(workers))
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return #workers
"#;

/// After [`FENCE`]. KEYS: fence, key. ARGV: token.
pub(crate) const DELETE_SCRIPT: &str = r#"
redis.call('DEL', KEYS[2])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, keys index, context, mappings, current run, the outcome hashes
/// kept as results. ARGV: token, result TTL s. UNLINK frees in a background thread: deleting a
/// million-field outcomes hash with DEL blocks every client of the server for over half a
/// second. The keys the index lists share the session's hash tag, so they sit in the same
/// Cluster slot as the declared ones. The outcome hashes named in the kept set, and the blobs
/// while there are any, stay for as long as a result, still listed in the index (so the next
/// cleanup deletes them); the kept set goes.
pub(crate) const CLEANUP_SCRIPT: &str = r#"
local kept = {}
local keeping = false
for _, name in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  kept[name] = true
  keeping = true
end
local gone, stay = {}, {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if kept[name] or (keeping and string.find(name, ':blob:', 1, true)) then
    stay[#stay + 1] = name
  else
    gone[#gone + 1] = name
  end
end
for i = 1, #gone, 1000 do
  redis.call('UNLINK', unpack(gone, i, math.min(i + 999, #gone)))
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
for i = 1, #stay do
  redis.call('EXPIRE', stay[i], ARGV[2])
  redis.call('SADD', KEYS[2], stay[i])
end
if #stay > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, the kept set. ARGV: token, an outcome hash's name, working
/// TTL s. Marks the hash to be kept by the next cleanup.
pub(crate) const KEEP_RESULTS_SCRIPT: &str = r#"
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 'ok'
"#;

/// After [`FENCE`]. KEYS: fence, keys index, cancel, starts, pause, then the outcome hashes to
/// delete whole. ARGV: token. Those hashes go; every outcome but a success is deleted from the
/// session's other outcome hashes (the index lists them), with the cancel mark and the range
/// counts; answers how many successes are kept. One pass over the hashes, a
/// rare step (a rerun), so it may take a while for millions of outcomes.
pub(crate) const KEEP_SUCCESSES_SCRIPT: &str = r#"
for i = 6, #KEYS do
  redis.call('UNLINK', KEYS[i])
  redis.call('SREM', KEYS[2], KEYS[i])
end
local kept = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.find(name, ':outcomes:', 1, true) then
    local all = redis.call('HGETALL', name)
    local gone = {}
    for i = 1, #all, 2 do
      if string.match(all[i + 1], '^%d+|S|') then kept = kept + 1 else gone[#gone + 1] = all[i] end
    end
    for i = 1, #gone, 1000 do
      redis.call('HDEL', name, unpack(gone, i, math.min(i + 999, #gone)))
    end
  end
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
return kept
"#;

/// Before [`CLEANUP_SCRIPT`], in place of [`FENCE`], with the same KEYS; ARGV: the run. Cleans up
/// only while the session's current run is that one.
pub(crate) const RUN_CLEANUP: &str = r#"
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return 'ok' end
"#;

/// KEYS: lease, origin, fence. ARGV: owner, lease ms, origin TTL s, token. 1 when `owner` holds
/// the lease afterwards, 0 when another owner does or a later claim replaced `token`, -1 when
/// the origin is gone (see `Renewal::StateLost`).
pub(crate) const RENEW_SCRIPT: &str = r#"
local fence = redis.call('GET', KEYS[3])
if fence and fence ~= ARGV[4] then return 0 end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('EXPIRE', KEYS[2], ARGV[3]) == 0 then return -1 end
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS: lease. ARGV: owner.
pub(crate) const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;
