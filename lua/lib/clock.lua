-- lib/clock.lua: Redis's time, and the length of a day.
-- requires: nothing

local DAY_MS = 86400000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
