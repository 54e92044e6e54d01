-- config_update.lua: replace a config if nobody changed it since it was read.
-- KEYS[1] configs hash   KEYS[2] identities hash   KEYS[3] version counter
-- KEYS[4] counters hash of this config
-- ARGV[1] deadline (ms, Redis clock; see config_lib.lua)
-- ARGV[2] id   ARGV[3] revision that was read   ARGV[4] old identity   ARGV[5] new identity
-- ARGV[6] new JSON   ARGV[7] change channel
-- ARGV[8] how long the kept counters may matter under the new limits (ms): their TTL is
--         extended to it (never shortened), or a longer new limit would lose them when
--         the old, shorter TTL runs out
-- ARGV[9] n, the number of new budgets to seed, then per seed 8 values: the new budget's
--         field, length (ms), grid mode and param, then the same of the existing budget
--         whose current usage it starts with (see budget_seeds in src/store/mod.rs)
-- ARGV[10 + 8n…] counter fields to drop (removed budgets)
-- lib.lua is prepended too (before config_lib.lua), for budget_open.
-- Returns {1, version} | {0, 'missing'} | {0, 'stale'} | {0, 'conflict', other id} |
-- {0, 'expired'}.

local now = now_ms()
if past_deadline(now) then
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
-- Seeds first: a source may be a budget this update removes.
local a = 10
for _ = 1, tonumber(ARGV[9]) do
  local source = budget_open(redis.call('HGET', KEYS[4], ARGV[a + 4]), now,
    tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]))
  if source.used > 0 then
    local target = budget_open(redis.call('HGET', KEYS[4], ARGV[a]), now,
      tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
    target.used = clamp_used(target.used + source.used)
    redis.call('HSET', KEYS[4], ARGV[a], budget_encode(target))
  end
  a = a + 8
end
for i = a, #ARGV do
  redis.call('HDEL', KEYS[4], ARGV[i])
end
local ttl = redis.call('PTTL', KEYS[4])
if ttl >= 0 and ttl < tonumber(ARGV[8]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
return { 1, announce(KEYS[3], ARGV[7]) }
