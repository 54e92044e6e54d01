-- reseed_begin.lua: claim the right to re-seed a Redis that lost configs, and clear
-- what is left of them. One replica wins; the others see the new epoch and adopt it.
-- KEYS[1…6]: see lib/config_plane.lua
-- ARGV[1] the epoch the caller found ('' = none)   ARGV[2] the new epoch
-- ARGV[3] the caller's snapshot version   ARGV[4] lease (ms): if the winner stops
--         sending chunks for this long, another replica may take over
-- Returns {1, version the seeded configs get} | {0, 'seeding' | 'adopt'}.

local now = now_ms()
if redis.call('HEXISTS', KEYS[4], 'seeding') == 1
    and tonumber(redis.call('HGET', KEYS[4], 'seeding_until') or '0') >= now then
  return { 0, 'seeding' }
end
if (redis.call('HGET', KEYS[4], 'epoch') or '') ~= ARGV[1] then
  return { 0, 'adopt' }
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[5], KEYS[6])
local version = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), tonumber(ARGV[3]),
  now) + 1
redis.call('SET', KEYS[3], string.format('%.0f', version))
redis.call('HSET', KEYS[4], 'epoch', ARGV[2], 'seeding', ARGV[2],
  'seeding_until', now + tonumber(ARGV[4]), 'floor', string.format('%.0f', version))
return { 1, version }
