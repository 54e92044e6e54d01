-- replicas.lua: a replica announces itself and counts the replicas alive, so that each
-- knows its share of every limit while Redis does not answer (`--on-store-error local`).
-- One sorted set in every mode (on Redis Cluster one key is one slot): member the
-- replica's id, score its last announcement (ms, Redis clock).
-- KEYS[1]  the sorted set
-- ARGV[1]  this replica's id
-- ARGV[2]  how long an announcement counts (ms)
-- Returns the number of replicas announced within ARGV[2] ms, this one included.

local now = now_ms()
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
