-- ARGV: token. The item goes back first in line of its type; returns its JSON, or false when
-- the token holds no claim.
local id = held(ARGV[1])
if not id then return false end
unclaim(id, ARGV[1])
requeue(id)
back_to_pending(id, now_ms())
return redis.call('HGET', ITEMS, id)
