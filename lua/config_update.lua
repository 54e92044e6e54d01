-- config_update.lua: replace a config if nobody changed it since it was read.
-- KEYS[1] configs hash   KEYS[2] identities hash   KEYS[3] version counter
-- KEYS[4] counters hash of this config
-- ARGV[1] id   ARGV[2] revision that was read   ARGV[3] old identity   ARGV[4] new identity
-- ARGV[5] new JSON   ARGV[6] change channel   ARGV[7…] counter fields to drop (removed budgets)
-- Returns {1, version} | {0, 'missing'} | {0, 'stale'} | {0, 'conflict', other id}.

local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  return { 0, 'missing' }
end
if tonumber(cjson.decode(current).revision) ~= tonumber(ARGV[2]) then
  return { 0, 'stale' }
end
if ARGV[4] ~= ARGV[3] then
  local taken = redis.call('HGET', KEYS[2], ARGV[4])
  if taken and taken ~= ARGV[1] then
    return { 0, 'conflict', taken }
  end
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
for i = 7, #ARGV do
  redis.call('HDEL', KEYS[4], ARGV[i])
end
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[6], version)
return { 1, version }
