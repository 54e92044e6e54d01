-- lib/counters.lua: the counters of one config, opened and saved once per script call;
-- check.lua, usage.lua, batch.lua and read_usage.lua work on them.
--
-- All counters of one config live in one small Redis hash, read with one HMGET and
-- written with one HSET:
--   window ("r" requests, "t" tokens): sub-buckets (see below), a small hot field and a
--     cold one read only when needed. Usage leaves the window one window length after its
--     bucket's last write, never earlier.
--   budget ("b:<budget id>"): two doubles, the start (ms) of the period the usage belongs
--     to and the usage (nano-dollars).
-- A config's limits travel as one ARGV: a header '<BB' (flags: 1 = shadow, never
-- refusing; n) and n doubles, its alert thresholds ascending; then per limit, struct
-- '<c1Bc0dddd': kind (r|t|b), field, max, length (ms), and for budgets the period grid:
-- mode (0 fixed from anchor, 1 months, 2 years) and param (the anchor in ms, or n).
-- src/store/redis/packed_limits.rs packs it.
-- requires: counts, windows, periods

-- Opens the counters of one config: its hash `key` (one HMGET) and its limits, packed as
-- described at the top. Windows are evicted up to now. A batch opens each config once.
local function open_config(key, packed, now)
  local flags, nth, pos = unpack_bin('<BB', packed)
  local th = {}
  for i = 1, nth do th[i], pos = unpack_bin('<d', packed, pos) end
  local cfg = { key = key, limits = {}, shadow = flags % 2 == 1, th = th }
  local fields = {}
  while pos <= #packed do
    local kind, field, cap, len, mode, param
    kind, field, cap, len, mode, param, pos = unpack_bin('<c1Bc0dddd', packed, pos)
    -- All fields at once (see win_open).
    cfg.limits[#cfg.limits + 1] = {
      kind = kind, field = field, max = cap, len = len, mode = mode, param = param,
      state = false, ok = false, written = false, extra = 0,
    }
    fields[#fields + 1] = field
  end
  local stored = (#fields > 0) and redis.call('HMGET', key, unpack(fields)) or {}
  for j, lim in ipairs(cfg.limits) do
    if lim.kind == 'b' then
      lim.state = budget_open(stored[j], now, lim.len, lim.mode, lim.param)
    else
      lim.state = win_open(stored[j], lim.len, key, lim.field)
      win_evict(lim.state, now)
    end
  end
  return cfg
end

local function used_of(lim)
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
      if lim.kind == 'b' then
        fields[#fields + 1] = lim.field
        fields[#fields + 1] = budget_encode(lim.state)
      else
        win_fields(lim.state, fields)
      end
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
