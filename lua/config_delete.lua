-- config_delete.lua: remove a config and its counters if nobody changed it since it
-- was read.
-- KEYS[1…6], ARGV[1…4]: see lib/config_plane.lua   KEYS[7] counters hash of this config
-- ARGV[5] id   ARGV[6] revision that was read   ARGV[7] identity
-- Returns {1, version, epoch} | {0, 'missing' | 'stale' | 'expired' | 'seeding' |
-- 'epoch'}.

local _, refused_write = write_guard()
if refused_write then
  return refused_write
end
local refused = refusal(ARGV[5], ARGV[6])
if refused then
  return { 0, refused }
end
redis.call('HDEL', KEYS[1], ARGV[5])
if redis.call('HGET', KEYS[2], ARGV[7]) == ARGV[5] then
  redis.call('HDEL', KEYS[2], ARGV[7])
end
redis.call('DEL', KEYS[7])
return commit(ARGV[5], true)
