-- lib.lua: counters shared by check.lua, usage.lua and read_usage.lua (prepended to each).
-- It mirrors src/limits/window.rs and src/limits/period.rs; tests/lua_parity.rs keeps them equal.
--
-- One hash per config holds all of its counters.
--   Sliding window under field prefix f ("r" requests, "t" tokens):
--     f:t total   f:o oldest bucket index   f:n newest bucket index   f:g bucket width (ms)
--     f:c<i> count of bucket i   f:l<i> time (ms) of the last write to bucket i
--   Budget under field prefix f ("b:<budget id>"):
--     f:s start of the period the usage belongs to (ms)   f:u usage (nano-dollars)
-- A limit travels in ARGV as six values: kind (r|t|b), field prefix, max, length (ms),
-- and for budgets the period grid: mode (0 fixed from anchor, 1 months, 2 years) and
-- param (the anchor in ms, or n).

local SUB_BUCKETS = 30
local DAY_MS = 86400000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whole numbers as plain digits (tostring would switch to exponents past 1e14).
local function num(n)
  return string.format('%.0f', n)
end

local function admits(used, max, amount)
  return used < max and used + amount <= max
end

local function win_open(key, f, len)
  local h = redis.call('HMGET', key, f .. ':t', f .. ':o', f .. ':n', f .. ':g')
  return {
    key = key, f = f, len = len, g = math.max(1, math.ceil(len / SUB_BUCKETS)),
    total = tonumber(h[1]) or 0, o = tonumber(h[2]), n = tonumber(h[3]), sg = tonumber(h[4]),
  }
end

local function win_fields(w, i)
  return w.f .. ':c' .. num(i), w.f .. ':l' .. num(i)
end

local function win_save_header(w)
  if w.o == nil then
    redis.call('HDEL', w.key, w.f .. ':t', w.f .. ':o', w.f .. ':n', w.f .. ':g')
  else
    redis.call('HSET', w.key, w.f .. ':t', num(w.total), w.f .. ':o', num(w.o),
      w.f .. ':n', num(w.n), w.f .. ':g', num(w.g))
  end
end

-- The window length changed, and with it the bucket width: fold everything into one
-- bucket at the newest write (usage then leaves a little late, never early).
local function win_regrid(w)
  local _, newest_l = win_fields(w, w.n)
  local newest_last = tonumber(redis.call('HGET', w.key, newest_l)) or 0
  for i = w.o, w.n do
    redis.call('HDEL', w.key, win_fields(w, i))
  end
  local idx = math.floor(newest_last / w.g)
  local c, l = win_fields(w, idx)
  redis.call('HSET', w.key, c, num(w.total), l, num(newest_last))
  w.o, w.n, w.sg = idx, idx, w.g
  win_save_header(w)
end

-- Drops buckets whose last write is a whole window old.
local function win_evict(w, now)
  if w.o == nil then return end
  if w.sg ~= w.g then win_regrid(w) end
  local cutoff = now - w.len
  local changed = false
  while w.o <= w.n do
    local c, l = win_fields(w, w.o)
    local h = redis.call('HMGET', w.key, c, l)
    local last = tonumber(h[2])
    if last ~= nil and last > cutoff then break end
    if last ~= nil then
      w.total = w.total - (tonumber(h[1]) or 0)
      redis.call('HDEL', w.key, c, l)
    end
    w.o = w.o + 1
    changed = true
  end
  if w.o > w.n then
    w.o, w.n, w.total = nil, nil, 0
  end
  if changed then win_save_header(w) end
end

-- Adds usage at now, never behind the newest bucket, so buckets stay in time order.
local function win_add(w, now, amount)
  if amount <= 0 then return end
  local idx = math.floor(now / w.g)
  if w.n ~= nil and w.n >= idx then idx = w.n end
  local c, l = win_fields(w, idx)
  redis.call('HINCRBY', w.key, c, num(amount))
  redis.call('HSET', w.key, l, num(now))
  if w.o == nil then w.o = idx end
  w.n = idx
  w.total = w.total + amount
  win_save_header(w)
end

-- Takes usage back oldest first, never below zero: what remains is counted as late as
-- possible, so a refund can never let more through than the limit.
local function win_refund(w, amount)
  local left = amount
  while left > 0 and w.o ~= nil do
    local c, l = win_fields(w, w.o)
    local count = tonumber(redis.call('HGET', w.key, c)) or 0
    local take = math.min(left, count)
    count, left, w.total = count - take, left - take, w.total - take
    if count <= 0 then
      redis.call('HDEL', w.key, c, l)
      if w.o >= w.n then
        w.o, w.n, w.total = nil, nil, 0
      else
        w.o = w.o + 1
      end
    else
      redis.call('HSET', w.key, c, num(count))
    end
  end
  win_save_header(w)
end

local function win_reset_after(w, now)
  if w.n == nil then return 0 end
  local _, l = win_fields(w, w.n)
  local last = tonumber(redis.call('HGET', w.key, l)) or now
  return math.max(0, last + w.len - now)
end

-- Time until amount fits, if nothing else is added; the full reset if it never fits.
local function win_retry_after(w, now, max, amount)
  if admits(w.total, max, amount) then return 0 end
  if w.o ~= nil then
    local remaining = w.total
    for i = w.o, w.n do
      local h = redis.call('HMGET', w.key, win_fields(w, i))
      if h[1] then
        remaining = remaining - tonumber(h[1])
        if admits(remaining, max, amount) then
          return math.max(0, tonumber(h[2]) + w.len - now)
        end
      end
    end
  end
  return win_reset_after(w, now)
end

-- Usage still inside the window, without writing (for read-only callers).
local function win_peek(w, now)
  if w.o == nil then return 0 end
  local used = 0
  for i = w.o, w.n do
    local h = redis.call('HMGET', w.key, win_fields(w, i))
    if h[1] and tonumber(h[2]) > now - w.len then used = used + tonumber(h[1]) end
  end
  return used
end

-- Days since 1970-01-01 of a civil date, and back (H. Hinnant's algorithms).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- Start (ms) of month index i = year * 12 + zero-based month.
local function month_start(i)
  local y = math.floor(i / 12)
  return days_from_civil(y, i - y * 12 + 1, 1) * DAY_MS
end

local function period_bounds(now, len, mode, param)
  if mode == 0 then
    local start = param + math.floor((now - param) / len) * len
    return start, start + len
  end
  local y, m = civil_from_days(math.floor(now / DAY_MS))
  if mode == 1 then
    local i = math.floor((y * 12 + m - 1) / param) * param
    return month_start(i), month_start(i + param)
  end
  local y0 = math.floor(y / param) * param
  return month_start(y0 * 12), month_start((y0 + param) * 12)
end

-- Usage recorded in an earlier period is dropped; usage from a later-starting period
-- (the grid changed) is kept.
local function budget_open(key, f, now, len, mode, param)
  local h = redis.call('HMGET', key, f .. ':s', f .. ':u')
  local start, fin = period_bounds(now, len, mode, param)
  local used = tonumber(h[2]) or 0
  local s = tonumber(h[1])
  if s ~= nil and s < start then used = 0 end
  return { key = key, f = f, start = start, fin = fin, used = used }
end

local function budget_save(b)
  redis.call('HSET', b.key, b.f .. ':s', num(b.start), b.f .. ':u', num(b.used))
end

-- Reads the limits of KEYS[first..] from ARGV starting at position a. Each limit gets
-- its open state; windows are evicted up to now.
local function open_limits(first, a, now)
  local limits = {}
  for k = first, #KEYS do
    local n = tonumber(ARGV[a])
    a = a + 1
    for _ = 1, n do
      local lim = {
        key = KEYS[k], kind = ARGV[a], max = tonumber(ARGV[a + 2]), len = tonumber(ARGV[a + 3]),
      }
      if lim.kind == 'b' then
        lim.state = budget_open(lim.key, ARGV[a + 1], now, lim.len, tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
      else
        lim.state = win_open(lim.key, ARGV[a + 1], lim.len)
      end
      limits[#limits + 1] = lim
      a = a + 6
    end
  end
  return limits
end

local function used_of(lim)
  if lim.kind == 'b' then return lim.state.used end
  return lim.state.total
end

-- Keeps each written hash alive for its longest window or period, then lets it expire.
local function expire_written(limits, written, now)
  local ttl = {}
  for _, lim in ipairs(limits) do
    local life = lim.len
    if lim.kind == 'b' then life = lim.state.fin - now end
    if ttl[lim.key] == nil or life > ttl[lim.key] then ttl[lim.key] = life end
  end
  for key in pairs(written) do
    redis.call('PEXPIRE', key, num(ttl[key] + 1000))
  end
end
