-- lib/counter_updates.lua: what a config update does to its config's counters, shared by
-- config_update.lua and (Redis Cluster) counters_update.lua.
-- requires: counts, periods

-- What a config update does to the config's counters hash `key`, from ARGV: ARGV[at] is
-- the counters' new lifetime (ms; their TTL is extended to it, never shortened), then
-- n seeds of 8 values each (see config_update.lua), then the budget fields to drop.
-- Seeds go first: a source may be a budget this update removes.
local function update_counters(key, at, now)
  local a = at + 2
  for _ = 1, tonumber(ARGV[at + 1]) do
    local source = budget_open(redis.call('HGET', key, ARGV[a + 4]), now,
      tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]))
    if source.total > 0 then
      local target = budget_open(redis.call('HGET', key, ARGV[a]), now,
        tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
      target.total = clamp_used(target.total + source.total)
      redis.call('HSET', key, ARGV[a], budget_encode(target))
    end
    a = a + 8
  end
  for i = a, #ARGV do
    redis.call('HDEL', key, ARGV[i])
  end
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < tonumber(ARGV[at]) then
    redis.call('PEXPIRE', key, ARGV[at])
  end
end
