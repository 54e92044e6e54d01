-- config_lib.lua: shared by config_create.lua, config_update.lua and config_delete.lua
-- (prepended to each). Every config write carries ARGV[1], a deadline on Redis's clock:
-- a write that Redis only gets to after tollgate gave up (and answered 503) must not
-- happen.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function past_deadline(now)
  return now > tonumber(ARGV[1])
end

-- Why config `id` of hash `configs` must not be changed by a writer that read it at
-- `revision`: 'missing', 'stale', or nil when it may.
local function refusal(configs, id, revision)
  local current = redis.call('HGET', configs, id)
  if not current then
    return 'missing'
  end
  if tonumber(cjson.decode(current).revision) ~= tonumber(revision) then
    return 'stale'
  end
  return nil
end

-- Bumps the config version and announces it to every replica.
local function announce(version_key, channel)
  local version = redis.call('INCR', version_key)
  redis.call('PUBLISH', channel, version)
  return version
end
