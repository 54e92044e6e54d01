-- lib.lua: counters shared by check.lua, usage.lua, batch.lua and read_usage.lua (prepended).
-- It mirrors src/limits/window.rs and src/limits/period.rs; tests/lua_parity.rs keeps them
-- equal step by step.
--
-- All counters of one config live in one small Redis hash, one binary field per limit,
-- read with one HMGET and written with one HSET:
--   window ("r" requests, "t" tokens): sub-buckets (see below). Usage leaves the window
--     one window length after its bucket's last write, never earlier.
--   budget ("b:<budget id>"): two doubles, the start (ms) of the period the usage belongs
--     to and the usage (nano-dollars).
-- A config's limits travel as one ARGV: per limit, struct '<c1Bc0dddd': kind (r|t|b),
-- field, max, length (ms), and for budgets the period grid: mode (0 fixed from anchor,
-- 1 months, 2 years) and param (the anchor in ms, or n). src/limits/compiled.rs packs it.

-- Library functions as locals: a global lookup per call adds up over nine limits.
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local pack, unpack_bin = struct.pack, struct.unpack

local SUB_BUCKETS = 30
local DAY_MS = 86400000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end

-- Usage saturates here (above any max; exact in a double; fits Redis's integer reply),
-- so usage reports can never overflow a counter.
local MAX_USED = 2 ^ 62

local function clamp_used(x)
  return max(0, min(x, MAX_USED))
end

local function admits(used, cap, amount)
  return used < cap and used + amount <= cap
end

-- Sliding windows ----------------------------------------------------------------------
-- A window is a binary string: a header of two doubles (bucket width g in ms, total),
-- then one 24-byte record per sub-bucket, oldest first: index, count, and the time (ms)
-- of its last write, as doubles (exact below 2^53). A check reads the oldest and newest
-- records in place; a write builds the new string in one concatenation. (Lua interns
-- every string, so each string made costs more than its bytes.)

local HDR, REC = 16, 24

-- Logical records h..count-1. They come from w.bin, except that the newest one may live
-- in w.newest (changed or appended by this script) until the window is encoded.
local function rec(w, k)
  local nw = w.newest
  if nw and k == w.count - 1 then return nw[1], nw[2], nw[3] end
  return unpack_bin('ddd', w.bin, HDR + k * REC + 1)
end

-- A changed window length changes the bucket width: then all usage is folded into one
-- record at the newest write (it leaves a little late: safe).
local function win_open(bin, len)
  local w = { len = len, g = max(1, ceil(len / SUB_BUCKETS)), total = 0, h = 0, count = 0, bin = '' }
  if type(bin) ~= 'string' or #bin < HDR + REC then return w end
  local g, total = unpack_bin('dd', bin)
  local n = (#bin - HDR) / REC
  w.total = total
  if g ~= w.g then
    local _, _, newest = unpack_bin('ddd', bin, HDR + (n - 1) * REC + 1)
    w.newest, w.count, w.fresh = { floor(newest / w.g), total, newest }, 1, true
  else
    w.bin, w.count = bin, n
  end
  return w
end

local function win_encode(w)
  local head = pack('dd', w.g, w.total)
  if w.h >= w.count then return head end
  if not w.newest then
    return head .. string.sub(w.bin, HDR + w.h * REC + 1)
  end
  local nw = w.newest
  return head .. string.sub(w.bin, HDR + w.h * REC + 1, HDR + (w.count - 1) * REC) .. pack('ddd', nw[1], nw[2], nw[3])
end

-- Puts every live record into w.bin (for the rare paths that edit more than the newest).
local function win_flush(w)
  w.bin = win_encode(w)
  w.h, w.count, w.newest = 0, (#w.bin - HDR) / REC, nil
end

local function win_evict(w, now)
  while w.h < w.count do
    local _, c, l = rec(w, w.h)
    if l > now - w.len then break end
    w.total = max(0, w.total - c)
    w.h = w.h + 1
  end
end

-- Adds usage at now, never behind the newest bucket, so buckets stay in time order.
local function win_add(w, now, amount)
  if amount <= 0 then return end
  local i = floor(now / w.g)
  w.total = clamp_used(w.total + amount)
  if w.h < w.count then
    local ni, nc, nl = rec(w, w.count - 1)
    if ni >= i then
      local nw = w.newest
      if nw then
        -- Already this script's own record: change it in place.
        nw[2], nw[3] = clamp_used(nc + amount), max(nl, now)
      else
        w.newest = { ni, clamp_used(nc + amount), max(nl, now) }
      end
      return
    end
  end
  if w.newest then win_flush(w) end
  w.newest, w.count, w.fresh = { i, amount, now }, w.count + 1, true
end

-- Takes `take` out of live record k (after win_flush).
local function win_take(w, k, take)
  local i, c, l = unpack_bin('ddd', w.bin, HDR + k * REC + 1)
  w.total = max(0, w.total - take)
  if take == c and k == w.h then
    w.h = w.h + 1
  else
    local at = HDR + k * REC
    w.bin = string.sub(w.bin, 1, at) .. pack('ddd', i, c - take, l) .. string.sub(w.bin, at + REC + 1)
  end
end

-- Takes usage back, never below zero. With the reservation's time `at` (ms; 0 = not
-- known), only from the sub-bucket the reservation went into: once that has left the
-- window the reservation no longer counts and there is nothing to give back (taking it
-- from newer usage would let more through than the limit). Without it, oldest first:
-- what remains is counted as late as possible.
local function win_refund(w, amount, at)
  win_flush(w)
  if at > 0 then
    local target = floor(at / w.g)
    for k = w.h, w.count - 1 do
      local i, c = unpack_bin('dd', w.bin, HDR + k * REC + 1)
      if i == target then
        win_take(w, k, min(amount, c))
        return
      end
      if i > target then return end
    end
    return
  end
  local left = amount
  while left > 0 and w.h < w.count do
    local _, c = unpack_bin('dd', w.bin, HDR + w.h * REC + 1)
    local take = min(left, c)
    left = left - take
    win_take(w, w.h, take)
  end
end

local function win_reset_after(w, now)
  if w.h >= w.count then return 0 end
  local _, _, l = rec(w, w.count - 1)
  return max(0, l + w.len - now)
end

-- Time until amount fits, if nothing else is added; the full reset if it never fits.
local function win_retry_after(w, now, cap, amount)
  if admits(w.total, cap, amount) then return 0 end
  local remaining = w.total
  for k = w.h, w.count - 1 do
    local _, c, l = rec(w, k)
    remaining = remaining - c
    if admits(remaining, cap, amount) then
      return max(0, l + w.len - now)
    end
  end
  return win_reset_after(w, now)
end

-- Budget periods -------------------------------------------------------------------------

-- Days since 1970-01-01 of a civil date, and back (H. Hinnant's algorithms).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- Start (ms) of month index i = year * 12 + zero-based month.
local function month_start(i)
  local y = floor(i / 12)
  return days_from_civil(y, i - y * 12 + 1, 1) * DAY_MS
end

local function period_bounds(now, len, mode, param)
  if mode == 0 then
    local start = param + floor((now - param) / len) * len
    return start, start + len
  end
  local y, m = civil_from_days(floor(now / DAY_MS))
  if mode == 1 then
    local i = floor((y * 12 + m - 1) / param) * param
    return month_start(i), month_start(i + param)
  end
  local y0 = floor(y / param) * param
  return month_start(y0 * 12), month_start((y0 + param) * 12)
end

-- Usage recorded in an earlier period is dropped; usage from a later-starting period
-- (the grid changed under an update) is kept.
local function budget_open(bin, now, len, mode, param)
  local start, fin = period_bounds(now, len, mode, param)
  local b = { start = start, fin = fin, used = 0, fresh = true }
  if type(bin) == 'string' then
    local s, u = unpack_bin('dd', bin)
    if s >= start then b.used, b.fresh = u, false end
  end
  return b
end

local function budget_encode(b)
  return pack('dd', b.start, b.used)
end

-- Configs ---------------------------------------------------------------------------------

-- Opens the counters of one config: its hash `key` (one HMGET) and its limits, packed as
-- described at the top. Windows are evicted up to now. A batch opens each config once.
local function open_config(key, packed, now)
  local cfg = { key = key, limits = {} }
  local pos, fields = 1, {}
  while pos <= #packed do
    local lim = { cfg = cfg }
    lim.kind, lim.field, lim.max, lim.len, lim.mode, lim.param, pos = unpack_bin('<c1Bc0dddd', packed, pos)
    cfg.limits[#cfg.limits + 1] = lim
    fields[#fields + 1] = lim.field
  end
  local stored = (#fields > 0) and redis.call('HMGET', key, unpack(fields)) or {}
  for j, lim in ipairs(cfg.limits) do
    if lim.kind == 'b' then
      lim.state = budget_open(stored[j], now, lim.len, lim.mode, lim.param)
    else
      lim.state = win_open(stored[j], lim.len)
      win_evict(lim.state, now)
    end
  end
  return cfg
end

local function used_of(lim)
  if lim.kind == 'b' then return lim.state.used end
  return lim.state.total
end

-- Writes back the limits marked written. The hash must outlive the usage it holds: when
-- a write starts a new sub-bucket or budget period, its TTL becomes the longest need of
-- any of its limits (a window: its length plus a bucket, from the bucket's start; a
-- budget: to its period's end). Writes inside a bucket or period need no new TTL.
local function save_config(cfg, now)
  local fields, extend, ttl = {}, false, 0
  for _, lim in ipairs(cfg.limits) do
    if lim.kind == 'b' then
      ttl = max(ttl, lim.state.fin - now)
    else
      ttl = max(ttl, lim.len + lim.state.g)
    end
    if lim.written then
      fields[#fields + 1] = lim.field
      fields[#fields + 1] = (lim.kind == 'b') and budget_encode(lim.state) or win_encode(lim.state)
      extend = extend or lim.state.fresh
    end
  end
  if #fields > 0 then
    redis.call('HSET', cfg.key, unpack(fields))
    if extend then
      redis.call('PEXPIRE', cfg.key, string.format('%.0f', ttl + 1000))
    end
  end
end
