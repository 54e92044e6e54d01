-- lib/windows.lua: sliding windows, as src/limits/window.rs computes them;
-- tests/lua_parity.rs keeps the two equal step by step.
-- requires: counts

local SUB_BUCKETS = 30

-- A window is a list of sub-buckets, oldest first, each a count and the time (ms) of its
-- last write; a bucket's index is floor(last / g), g the bucket width (every write keeps
-- that true). It is stored in two hash fields, so that a check reads and writes little:
--   hot  (the limit's field, 56 bytes): 7 doubles g, total, n (buckets), the oldest
--        bucket's count and last write, the newest bucket's count and last write (with
--        n = 1 the one bucket is the newest);
--   cold (field .. ':c'): the n - 2 buckets in between, 16 bytes each (count, last).
-- A check that adds to the newest bucket and evicts nothing, or only down to two buckets,
-- never reads the cold field; it is read (one HGET) when a bucket starts or leaves with
-- more than two live, about twice per bucket width, and on the rare paths (a denial's
-- retry time, a refund). Data in the earlier one-field layout (16 + 24 bytes a bucket)
-- is read, and rewritten in this one when written.

local HOT = 56

-- The cold buckets, read on first need.
local function win_cold(w)
  if w.cold == false then
    w.cold = (w.n > 2) and (redis.call('HGET', w.key, w.field .. ':c') or '') or ''
  end
  return w.cold
end

-- Every bucket as {count, last}, oldest first (for the rare paths).
local function win_list(w)
  if w.n == 0 then return {} end
  if w.n == 1 then return { { w.nc, w.nl } } end
  local recs, cold = { { w.oc, w.ol } }, win_cold(w)
  for at = 1, #cold, 16 do
    local c, l = unpack_bin('dd', cold, at)
    recs[#recs + 1] = { c, l }
  end
  recs[#recs + 1] = { w.nc, w.nl }
  return recs
end

-- Replaces every bucket (the total stays as it is).
local function win_set(w, recs)
  local n = #recs
  w.n = n
  if n >= 1 then w.nc, w.nl = recs[n][1], recs[n][2] end
  if n >= 2 then w.oc, w.ol = recs[1][1], recs[1][2] end
  local parts = {}
  for k = 2, n - 1 do parts[#parts + 1] = pack('dd', recs[k][1], recs[k][2]) end
  w.cold, w.cold_dirty = table.concat(parts), true
end

-- Opens the window kept in `hot` (the field's value) of hash `key`.
local function win_open(hot, len, key, field)
  -- Every field in the constructor: a table that grows field by field is rehashed each
  -- time it doubles, which costs more than the window's arithmetic.
  local w = {
    len = len, g = max(1, ceil(len / SUB_BUCKETS)), total = 0, n = 0, key = key, field = field,
    oc = 0, ol = 0, nc = 0, nl = 0, cold = false, cold_dirty = false, fresh = false,
  }
  if type(hot) ~= 'string' then return w end
  local recs
  if #hot == HOT then
    local g, total, n, oc, ol, nc, nl = unpack_bin('ddddddd', hot)
    w.total, w.n, w.oc, w.ol, w.nc, w.nl = total, n, oc, ol, nc, nl
    if g == w.g or n == 0 then return w end
    recs = { { total, nl } }
  elseif #hot >= 40 then
    -- The one-field layout: g, total, then (index, count, last) per bucket.
    local g, total = unpack_bin('dd', hot)
    local n = (#hot - 16) / 24
    w.total, recs = total, {}
    if g ~= w.g then
      local _, _, nl = unpack_bin('ddd', hot, 16 + (n - 1) * 24 + 1)
      recs[1] = { total, nl }
    else
      for k = 1, n do
        local _, c, l = unpack_bin('ddd', hot, 16 + (k - 1) * 24 + 1)
        recs[k] = { c, l }
      end
    end
  else
    return w
  end
  -- A changed window length changes the bucket width: then all usage is folded into one
  -- bucket at the newest write (it leaves a little late: safe).
  win_set(w, recs)
  w.fresh = true
  return w
end

-- The hash fields and values that store the window (the cold one only when changed).
local function win_fields(w, fields)
  fields[#fields + 1] = w.field
  fields[#fields + 1] = pack('ddddddd', w.g, w.total, w.n, w.oc or 0, w.ol or 0, w.nc or 0, w.nl or 0)
  if w.cold_dirty then
    fields[#fields + 1] = w.field .. ':c'
    fields[#fields + 1] = w.cold
  end
end

-- Drops the buckets whose last write is a window length ago or more, oldest first.
local function win_evict(w, now)
  local n = w.n
  if n == 0 then return end
  local limit = now - w.len
  if w.nl <= limit then
    -- Everything has left (the newest bucket goes last): no need to read the cold ones.
    w.total, w.n = 0, 0
    if n > 2 then w.cold, w.cold_dirty = '', true end
    return
  end
  if n == 1 or w.ol > limit then return end
  w.total = max(0, w.total - w.oc)
  if n == 2 then
    w.n = 1
    return
  end
  -- The oldest left; so may cold ones after it (never the newest, which stays).
  local cold = win_cold(w)
  local at, size = 1, #cold
  local c, l = unpack_bin('dd', cold, at)
  n = n - 1
  while l <= limit do
    w.total = max(0, w.total - c)
    n, at = n - 1, at + 16
    if at > size then break end
    c, l = unpack_bin('dd', cold, at)
  end
  w.n = n
  if at <= size then
    w.oc, w.ol, w.cold = c, l, string.sub(cold, at + 16)
  else
    w.cold = ''
  end
  w.cold_dirty = true
end

-- Adds usage at now, never behind the newest bucket, so buckets stay in time order.
local function win_add(w, now, amount)
  if amount <= 0 then return end
  local g = w.g
  w.total = clamp_used(w.total + amount)
  local n = w.n
  if n > 0 and floor(w.nl / g) >= floor(now / g) then
    w.nc, w.nl = clamp_used(w.nc + amount), max(w.nl, now)
    return
  end
  if n == 1 then
    w.oc, w.ol = w.nc, w.nl
  elseif n > 1 then
    w.cold, w.cold_dirty = win_cold(w) .. pack('dd', w.nc, w.nl), true
  end
  w.n, w.nc, w.nl, w.fresh = n + 1, amount, now, true
end

-- Takes `take` out of bucket k of recs; an emptied oldest bucket goes.
local function recs_take(w, recs, k, take)
  recs[k][1] = recs[k][1] - take
  w.total = max(0, w.total - take)
  if k == 1 and recs[1][1] == 0 then table.remove(recs, 1) end
end

-- Takes usage back, never below zero. With the reservation's time `at` (ms; 0 = not
-- known), only from the sub-bucket the reservation went into: once that has left the
-- window the reservation no longer counts and there is nothing to give back (taking it
-- from newer usage would let more through than the limit). Without it, oldest first:
-- what remains is counted as late as possible.
local function win_refund(w, amount, at)
  local recs = win_list(w)
  if at > 0 then
    local target = floor(at / w.g)
    for k = 1, #recs do
      local i = floor(recs[k][2] / w.g)
      if i == target then
        recs_take(w, recs, k, min(amount, recs[k][1]))
        break
      end
      if i > target then break end
    end
  else
    local left = amount
    while left > 0 and #recs > 0 do
      local take = min(left, recs[1][1])
      left = left - take
      recs_take(w, recs, 1, take)
    end
  end
  win_set(w, recs)
end

local function win_reset_after(w, now)
  if w.n == 0 then return 0 end
  return max(0, w.nl + w.len - now)
end

-- Time until amount fits, if nothing else is added; the full reset if it never fits.
local function win_retry_after(w, now, cap, amount)
  if admits(w.total, cap, amount) then return 0 end
  local remaining = w.total
  for _, r in ipairs(win_list(w)) do
    remaining = remaining - r[1]
    if admits(remaining, cap, amount) then
      return max(0, r[2] + w.len - now)
    end
  end
  return win_reset_after(w, now)
end
