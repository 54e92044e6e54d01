-- config_delete.lua: remove a config and its counters if nobody changed it since it was read.
-- KEYS[1] configs hash   KEYS[2] identities hash   KEYS[3] version counter
-- KEYS[4] counters hash of this config
-- ARGV[1] deadline (ms, Redis clock; see config_lib.lua)
-- ARGV[2] id   ARGV[3] revision that was read   ARGV[4] identity   ARGV[5] change channel
-- Returns {1, version} | {0, 'missing'} | {0, 'stale'} | {0, 'expired'}.

if past_deadline(now_ms()) then
  return { 0, 'expired' }
end
local refused = refusal(KEYS[1], ARGV[2], ARGV[3])
if refused then
  return { 0, refused }
end
redis.call('HDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
redis.call('DEL', KEYS[4])
return { 1, announce(KEYS[3], ARGV[5]) }
