-- ARGV: the most claims to end. See `expire_due`.
return expire_due(now_ms(), tonumber(ARGV[1]))
