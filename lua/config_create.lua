-- config_create.lua: store a new config unless its identity is taken.
-- KEYS[1…6], ARGV[1…4]: see lib/config_plane.lua
-- ARGV[5] id   ARGV[6] identity   ARGV[7] config JSON
-- Returns {1, version, epoch} | {0, 'conflict', id of the config that has this
-- identity} | {0, 'expired' | 'seeding' | 'epoch'}.

local _, refused_write = write_guard()
if refused_write then
  return refused_write
end
local taken = redis.call('HGET', KEYS[2], ARGV[6])
if taken then
  return { 0, 'conflict', taken }
end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[7])
redis.call('HSET', KEYS[2], ARGV[6], ARGV[5])
return commit(ARGV[5], false)
