-- config_update.lua: replace a config if nobody changed it since it was read.
-- KEYS[1] configs hash   KEYS[2] identities hash   KEYS[3] version counter
-- KEYS[4] counters hash of this config
-- ARGV[1] deadline (ms, Redis clock; see config_lib.lua)
-- ARGV[2] id   ARGV[3] revision that was read   ARGV[4] old identity   ARGV[5] new identity
-- ARGV[6] new JSON   ARGV[7] change channel
-- ARGV[8] how long the kept counters may matter under the new limits (ms): their TTL is
--         extended to it (never shortened), or a longer new limit would lose them when
--         the old, shorter TTL runs out
-- ARGV[9…] counter fields to drop (removed budgets)
-- Returns {1, version} | {0, 'missing'} | {0, 'stale'} | {0, 'conflict', other id} |
-- {0, 'expired'}.

if past_deadline(now_ms()) then
  return { 0, 'expired' }
end
local refused = refusal(KEYS[1], ARGV[2], ARGV[3])
if refused then
  return { 0, refused }
end
if ARGV[5] ~= ARGV[4] then
  local taken = redis.call('HGET', KEYS[2], ARGV[5])
  if taken and taken ~= ARGV[2] then
    return { 0, 'conflict', taken }
  end
  redis.call('HDEL', KEYS[2], ARGV[4])
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[2])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[6])
for i = 9, #ARGV do
  redis.call('HDEL', KEYS[4], ARGV[i])
end
local ttl = redis.call('PTTL', KEYS[4])
if ttl >= 0 and ttl < tonumber(ARGV[8]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
return { 1, announce(KEYS[3], ARGV[7]) }
