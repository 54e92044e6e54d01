-- config_sync.lua: where the config plane stands, and what changed since a version.
-- Reads only. KEYS[1…6]: see lib/config_plane.lua.
-- ARGV[1] the version the caller is current to (0: only the state)
-- ARGV[2] at most this many changes per call
-- Returns {epoch or '', version, intact, seeding, floor, configs, through,
--          then per changed config: id, JSON or '' if deleted}, where
--   intact  1 if every structure carries the epoch's marker (nothing lost alone)
--   seeding 0 none, 1 a replica is re-seeding, 2 a re-seed was abandoned (lease over)
--   floor   changes at or below it may be gone from the log (a caller below it must
--           reload in full)
--   configs configs stored (with no epoch: written before epochs existed)
--   through the version the returned changes reach (= version when there are no more)

local epoch = redis.call('HGET', KEYS[4], 'epoch')
local version = tonumber(redis.call('GET', KEYS[3]) or '0')
local floor = tonumber(redis.call('HGET', KEYS[4], 'floor') or '0')
local count = redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], EPOCH_FIELD)

local intact = 0
if epoch then
  local marker = EPOCH_FIELD .. epoch
  if redis.call('HGET', KEYS[1], EPOCH_FIELD) == epoch
      and redis.call('HGET', KEYS[2], EPOCH_FIELD) == epoch
      and redis.call('ZSCORE', KEYS[5], marker)
      and redis.call('ZSCORE', KEYS[6], marker) then
    intact = 1
  end
end

local seeding = 0
if redis.call('HEXISTS', KEYS[4], 'seeding') == 1 then
  seeding = 1
  if tonumber(redis.call('HGET', KEYS[4], 'seeding_until') or '0') < now_ms() then
    seeding = 2
  end
end

local since = tonumber(ARGV[1])
local out = { epoch or '', version, intact, seeding, floor, count, version }
if intact == 0 or seeding ~= 0 or since == 0 or since >= version or since < floor then
  return out
end

-- Changes after `since`, oldest first, cut where either log's page ends.
local limit = tonumber(ARGV[2])
local lower = '(' .. since
local live = redis.call('ZRANGEBYSCORE', KEYS[5], lower, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
local dead = redis.call('ZRANGEBYSCORE', KEYS[6], lower, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
local through = version
if #live == 2 * limit then
  through = math.min(through, tonumber(live[#live]))
end
if #dead == 2 * limit then
  through = math.min(through, tonumber(dead[#dead]))
end
out[7] = through
for i = 1, #live, 2 do
  if tonumber(live[i + 1]) <= through then
    out[#out + 1] = live[i]
    out[#out + 1] = redis.call('HGET', KEYS[1], live[i]) or ''
  end
end
for i = 1, #dead, 2 do
  if tonumber(dead[i + 1]) <= through then
    out[#out + 1] = dead[i]
    out[#out + 1] = ''
  end
end
return out
