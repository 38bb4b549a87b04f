-- ARGV: (id, type, claim timeout ms, item JSON) per item. An id offered before (waiting,
-- claimed, or settled within the hour) changes nothing.
trim_settled(now_ms())
for i = 1, #ARGV, 4 do
  if not redis.call('ZSCORE', SETTLED, ARGV[i])
    and redis.call('HSETNX', ITEMS, ARGV[i], ARGV[i + 3]) == 1 then
    redis.call('HSET', META, ARGV[i], ARGV[i + 2] .. '|' .. ARGV[i + 1])
    enqueue(ARGV[i], ARGV[i + 1], false, false)
  end
end
return 1
