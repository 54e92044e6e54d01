-- config_update.lua: replace a config if nobody changed it since it was read.
-- KEYS[1…6], ARGV[1…4]: see lib/config_plane.lua   KEYS[7] counters hash of this config
-- ARGV[5] id   ARGV[6] revision that was read   ARGV[7] old identity
-- ARGV[8] new identity   ARGV[9] new JSON
-- ARGV[10] how long the kept counters may matter under the new limits (ms): their TTL
--          is extended to it (never shortened), or a longer new limit would lose them
--          when the old, shorter TTL runs out
-- ARGV[11] n, the number of new budgets to seed, then per seed 8 values: the new
--          budget's field, length (ms), grid mode and param, then the same of the
--          existing budget whose current usage it starts with (see budget_seeds in
--          src/store/mod.rs)
-- ARGV[12 + 8n…] counter fields to drop (removed budgets)
-- update_counters: see lib/counter_updates.lua.
-- Returns {1, version, epoch} | {0, 'missing' | 'stale' | 'expired' | 'seeding' |
-- 'epoch'} | {0, 'conflict', other id}.

local now, refused_write = write_guard()
if refused_write then
  return refused_write
end
local refused = refusal(ARGV[5], ARGV[6])
if refused then
  return { 0, refused }
end
if ARGV[8] ~= ARGV[7] then
  local taken = redis.call('HGET', KEYS[2], ARGV[8])
  if taken and taken ~= ARGV[5] then
    return { 0, 'conflict', taken }
  end
  redis.call('HDEL', KEYS[2], ARGV[7])
  redis.call('HSET', KEYS[2], ARGV[8], ARGV[5])
end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[9])
update_counters(KEYS[7], 10, now)
return commit(ARGV[5], false)
