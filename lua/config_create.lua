-- config_create.lua: store a new config unless its identity is taken.
-- KEYS[1] configs hash (id -> JSON)   KEYS[2] identities hash (identity -> id)
-- KEYS[3] config version counter
-- ARGV[1] id   ARGV[2] identity   ARGV[3] config JSON   ARGV[4] change channel
-- Returns {1, version} or {0, 'conflict', id of the config that has this identity}.

local taken = redis.call('HGET', KEYS[2], ARGV[2])
if taken then
  return { 0, 'conflict', taken }
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], version)
return { 1, version }
