-- usage.lua: one settlement (a usage report), give-back (a check that tollgate answered
-- by its store-error policy although Redis ran it) or replay (what a replica admitted
-- by itself while Redis did not answer, `--on-store-error local`). Never denies.
-- Run by batch.lua (which holds KEYS/ARGV), once per op, in arrival order.
-- cfgs     the opened configs (see open_config in lib/counters.lua)
-- delta    { r = requests, t = tokens, b = nano-dollars }: added, or taken back when
--          negative
-- at       when the check reserved (ms, Redis clock; 0 = not known): a refund only
--          returns what that reservation still holds (see win_refund); a replay is
--          charged at that time: to the budget period it fell in (nothing if that period
--          is over) and to a window only while that time is inside it (in the sub-bucket
--          of that time, or the newest one if that is later: it leaves late, never early)
-- replay   true for a replay
-- op       this op's number in the call, for the threshold events a rise causes
-- Returns 1 (applied).

local function adjust_op(cfgs, delta, at, now, op, events, replay)
  if replay and at > now then at = now end
  local pos = 0
  for _, cfg in ipairs(cfgs) do
    local th = cfg.th
    for _, lim in ipairs(cfg.limits) do
      local d = delta[lim.kind]
      if d ~= 0 then
        if replay and d > 0 and at > 0 then
          if lim.kind == 'b' then
            if at >= lim.state.start then
              lim.state.total = clamp_used(lim.state.total + d)
              lim.written = true
            else
              d = 0
            end
          elseif at > now - lim.len then
            win_add(lim.state, at, d)
            lim.written = true
          else
            d = 0
          end
        elseif lim.kind == 'b' then
          -- A refund of a reservation made in an earlier period has nothing left to return.
          if d > 0 or at == 0 or at >= lim.state.start then
            lim.state.total = clamp_used(lim.state.total + d)
            lim.written = true
          end
        elseif d > 0 then
          win_add(lim.state, now, d)
          lim.written = true
        elseif lim.state.total > 0 then
          win_refund(lim.state, -d, at)
          lim.written = true
        end
        if d > 0 and #th > 0 then alert_rise(lim, th, now, op, pos, events) end
      end
      pos = pos + 1
    end
  end
  return 1
end

-- Idempotency markers of usage reports ------------------------------------------------
-- A marker is a 10-byte fingerprint (from SHA-256 of the report's identity and request
-- id, computed by tollgate) appended to a short string: field `f` (1 byte) of one day's
-- hash, one of 8,192 per day (`<prefix><day>:<b>`, b and f other bits of the same hash).
-- 2^20 slots per day keep each string short at any volume, and several fingerprints
-- share a hash entry, so a marker costs ~10-30 bytes of Redis memory instead of a key of
-- its own. tollgate names the hashes (and picks the day, from its estimate of Redis's
-- clock) and declares them in KEYS: the day's, where a new marker is written, and the
-- day before's and after's, which are only read, so that replicas whose estimates
-- straddle midnight find each other's markers. Each day's hash expires at the end of
-- the next day, so a marker is remembered at least 24 h. On Redis Cluster the prefix is
-- the report's first counters key in the call plus ':u:' (same slot).

local FP = 10

local function holds(s, fp)
  if not s then return false end
  local from = 1
  while true do
    local i = string.find(s, fp, from, true)
    if not i then return false end
    if (i - 1) % FP == 0 then return true end
    from = i + 1
  end
end

-- Markers written by this call (not yet in Redis: they are written after the counters,
-- so a call that failed part-way is not taken for applied).
local pending_markers = {}

-- true when the marker (f, fp) is in the hash `day` or in `before` or `after` (or was
-- written by this call), else remembers it in `day`, which expires at `expire` (ms).
local function marker_seen(day, before, after, f, fp, expire)
  for _, key in ipairs({ day, before, after }) do
    if pending_markers[key .. '|' .. f .. fp] then return true end
  end
  local cur = redis.call('HGET', day, f)
  if holds(cur, fp) then return true end
  if holds(redis.call('HGET', before, f), fp) then return true end
  if holds(redis.call('HGET', after, f), fp) then return true end
  local p = pending_markers[day .. '|' .. f]
  if p then
    p.value = p.value .. fp
  else
    -- A new field may be in a new hash: that one needs its expiry (absolute, so setting
    -- it again is harmless).
    p = { key = day, field = f, value = (cur or '') .. fp, new = not cur, expire = expire }
    pending_markers[day .. '|' .. f] = p
    pending_markers[#pending_markers + 1] = p
  end
  pending_markers[day .. '|' .. f .. fp] = true
  return false
end

local function save_markers()
  for _, p in ipairs(pending_markers) do
    redis.call('HSET', p.key, p.field, p.value)
    if p.new then redis.call('PEXPIREAT', p.key, string.format('%.0f', p.expire)) end
  end
end
