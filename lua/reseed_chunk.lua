-- reseed_chunk.lua: one chunk of configs for a re-seed this caller began.
-- KEYS[1…6]: see lib/config_plane.lua
-- ARGV[1] the new epoch   ARGV[2] the seeded version   ARGV[3] lease (ms), extended
-- ARGV[4…] per config: id, identity, JSON
-- Returns {1} | {0, 'lost'} (another replica took the re-seed over).

if redis.call('HGET', KEYS[4], 'seeding') ~= ARGV[1] then
  return { 0, 'lost' }
end
for i = 4, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[i])
end
redis.call('HSET', KEYS[4], 'seeding_until', now_ms() + tonumber(ARGV[3]))
return { 1 }
