-- config_delete.lua: remove a config and its counters if nobody changed it since it was read.
-- KEYS[1] configs hash   KEYS[2] identities hash   KEYS[3] version counter
-- KEYS[4] counters hash of this config
-- ARGV[1] deadline (ms, Redis clock): past it, change nothing (the caller gave up)
-- ARGV[2] id   ARGV[3] revision that was read   ARGV[4] identity   ARGV[5] change channel
-- Returns {1, version} | {0, 'missing'} | {0, 'stale'} | {0, 'expired'}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[1]) then
  return { 0, 'expired' }
end

local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current then
  return { 0, 'missing' }
end
if tonumber(cjson.decode(current).revision) ~= tonumber(ARGV[3]) then
  return { 0, 'stale' }
end
redis.call('HDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
redis.call('DEL', KEYS[4])
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[5], version)
return { 1, version }
