-- lib/config_plane.lua: what every config-plane script shares: its KEYS and ARGV, the
-- store epoch, the write guard, and the change log.
--
-- Every config write has these KEYS first:
--   KEYS[1] configs hash (id -> JSON)        KEYS[2] identities hash (identity -> id)
--   KEYS[3] config version counter           KEYS[4] meta hash (epoch, floor, seeding…)
--   KEYS[5] change log zset (live id -> version of its last write)
--   KEYS[6] tombstones zset (deleted id -> version of its deletion)
-- and these ARGV first:
--   ARGV[1] deadline (ms, Redis clock): a write that Redis only gets to after tollgate
--           gave up (and answered 503) must not happen
--   ARGV[2] the epoch the writer's snapshot belongs to ('' = it knows none)
--   ARGV[3] a fresh epoch, used if this write is the first one of a new deployment
--   ARGV[4] change channel
--
-- The epoch names one lifetime of Redis's data. Each structure carries it as a marker
-- (field or member `__epoch`), so a replica can tell "Redis lost data" (marker gone,
-- from any structure) from "configs were deleted" (markers intact).
-- requires: clock

local EPOCH_FIELD = '__epoch'
-- Tombstones kept for replicas that sync incrementally; older deletions raise the
-- floor, below which a replica must reload in full.
local MAX_TOMBSTONES = 100000

-- Puts the epoch's marker into every structure and names it in meta.
local function mark_epoch(epoch)
  redis.call('HSET', KEYS[4], 'epoch', epoch)
  redis.call('HSET', KEYS[1], EPOCH_FIELD, epoch)
  redis.call('HSET', KEYS[2], EPOCH_FIELD, epoch)
  redis.call('ZADD', KEYS[5], 0, EPOCH_FIELD .. epoch)
  redis.call('ZADD', KEYS[6], 0, EPOCH_FIELD .. epoch)
end

-- Why this write must not happen now ('seeding' | 'epoch'), or nil. The first write
-- to a Redis that has no epoch and no configs starts one.
local function fence(now)
  if redis.call('HEXISTS', KEYS[4], 'seeding') == 1 then
    return 'seeding'
  end
  local epoch = redis.call('HGET', KEYS[4], 'epoch')
  if epoch then
    if epoch ~= ARGV[2] then
      return 'epoch'
    end
    return nil
  end
  -- No epoch: a new deployment, or Redis lost its data. Only a writer that knows no
  -- epoch either, facing no configs, may start one; anyone else must sync first (and
  -- re-seed what Redis lost).
  if ARGV[2] ~= '' or redis.call('HLEN', KEYS[1]) > 0 then
    return 'epoch'
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    -- Versions start from Redis's clock, above any version a replica may still hold.
    redis.call('SET', KEYS[3], string.format('%.0f', now))
  end
  mark_epoch(ARGV[3])
  return nil
end

-- The guard every config write starts with: Redis's time now, and the answer to return
-- instead of writing, if any: {0, 'expired'} past the deadline (tollgate has answered
-- 503 already), {0, 'seeding' | 'epoch'} when fenced.
local function write_guard()
  local now = now_ms()
  if now > tonumber(ARGV[1]) then
    return now, { 0, 'expired' }
  end
  local fenced = fence(now)
  if fenced then
    return now, { 0, fenced }
  end
  return now, nil
end

-- Why config `id` must not be changed by a writer that read it at `revision`:
-- 'missing', 'stale', or nil when it may.
local function refusal(id, revision)
  local current = redis.call('HGET', KEYS[1], id)
  if not current then
    return 'missing'
  end
  if tonumber(cjson.decode(current).revision) ~= tonumber(revision) then
    return 'stale'
  end
  return nil
end

-- Bumps the version, logs `id` as changed (or deleted) at it, and announces it.
-- Returns the success answer {1, version, epoch}.
local function commit(id, deleted)
  local version = redis.call('INCR', KEYS[3])
  if deleted then
    redis.call('ZREM', KEYS[5], id)
    redis.call('ZADD', KEYS[6], version, id)
    if redis.call('ZCARD', KEYS[6]) > MAX_TOMBSTONES + 1 then
      -- Index 0 is the epoch marker (score 0); index 1 the oldest tombstone.
      local oldest = redis.call('ZRANGE', KEYS[6], 1, 1, 'WITHSCORES')
      redis.call('ZREM', KEYS[6], oldest[1])
      redis.call('HSET', KEYS[4], 'floor', oldest[2])
    end
  else
    redis.call('ZADD', KEYS[5], version, id)
  end
  redis.call('PUBLISH', ARGV[4], version)
  return { 1, version, redis.call('HGET', KEYS[4], 'epoch') }
end
