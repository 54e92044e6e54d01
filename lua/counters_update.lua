-- counters_update.lua (Redis Cluster only): what config_update.lua does to a config's
-- counters, run after it in the counters' own slot (a script's keys share one slot, and
-- the config plane lives in another). Not atomic with the config write: see README,
-- "Redis Cluster".
-- KEYS[1] counters hash of the config
-- ARGV[1] how long the kept counters may matter under the new limits (ms): TTL extended
-- ARGV[2] n, the number of new budgets to seed, then per seed 8 values (as in
--         config_update.lua)
-- ARGV[3 + 8n…] counter fields to drop (removed budgets)
-- lib.lua is prepended. Returns 1.

local now = now_ms()
local a = 3
for _ = 1, tonumber(ARGV[2]) do
  local source = budget_open(redis.call('HGET', KEYS[1], ARGV[a + 4]), now,
    tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]))
  if source.total > 0 then
    local target = budget_open(redis.call('HGET', KEYS[1], ARGV[a]), now,
      tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
    target.total = clamp_used(target.total + source.total)
    redis.call('HSET', KEYS[1], ARGV[a], budget_encode(target))
  end
  a = a + 8
end
for i = a, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl >= 0 and ttl < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
