-- config_create.lua: store a new config unless its identity is taken.
-- KEYS[1] configs hash (id -> JSON)   KEYS[2] identities hash (identity -> id)
-- KEYS[3] config version counter
-- ARGV[1] deadline (ms, Redis clock; see config_lib.lua)
-- ARGV[2] id   ARGV[3] identity   ARGV[4] config JSON   ARGV[5] change channel
-- Returns {1, version} | {0, 'conflict', id of the config that has this identity} |
-- {0, 'expired'}.

local now = now_ms()
if past_deadline(now) then
  return { 0, 'expired' }
end
local taken = redis.call('HGET', KEYS[2], ARGV[3])
if taken then
  return { 0, 'conflict', taken }
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 0 then
  -- A new or emptied Redis: versions start from its clock, above any version a replica
  -- may still hold from before, so that every replica sees the change.
  redis.call('SET', KEYS[3], string.format('%.0f', now))
end
return { 1, announce(KEYS[3], ARGV[5]) }
