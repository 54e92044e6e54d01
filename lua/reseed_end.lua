-- reseed_end.lua: finish a re-seed: mark the epoch and tell every replica.
-- KEYS[1…6]: see lib/config_plane.lua
-- ARGV[1] the new epoch   ARGV[2] change channel
-- Returns {1, version} | {0, 'lost'}.

if redis.call('HGET', KEYS[4], 'seeding') ~= ARGV[1] then
  return { 0, 'lost' }
end
redis.call('HDEL', KEYS[4], 'seeding', 'seeding_until')
mark_epoch(ARGV[1])
local version = redis.call('GET', KEYS[3])
redis.call('PUBLISH', ARGV[2], version)
return { 1, tonumber(version) }
