-- config_delete.lua: remove a config and its counters if nobody changed it since it was read.
-- KEYS[1] configs hash   KEYS[2] identities hash   KEYS[3] version counter
-- KEYS[4] counters hash of this config
-- ARGV[1] id   ARGV[2] revision that was read   ARGV[3] identity   ARGV[4] change channel
-- Returns {1, version} | {0, 'missing'} | {0, 'stale'}.

local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  return { 0, 'missing' }
end
if tonumber(cjson.decode(current).revision) ~= tonumber(ARGV[2]) then
  return { 0, 'stale' }
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
redis.call('DEL', KEYS[4])
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], version)
return { 1, version }
