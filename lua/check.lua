-- check.lua: atomic check-and-consume over every limit of every matching config.
-- KEYS[k]  counters hash of the k-th matching config (see lib.lua)
-- ARGV[1]  dry run (1) or consume (0)
-- ARGV[2]  requests   ARGV[3] tokens   ARGV[4] cost in nano-dollars
-- ARGV[5]  deadline (ms, Redis clock; 0 = none): past it the caller has answered by its
--          store-error policy, so this check must change nothing
-- ARGV[6…] per key: its limits, packed (see lib.lua)
-- Returns {allowed, now_ms, then per limit: admitted, used, reset_after_ms, retry_after_ms},
-- or {-1, now_ms} past the deadline.
-- All or nothing: amounts are added only when every limit admits them.

local amount = { r = tonumber(ARGV[2]), t = tonumber(ARGV[3]), b = tonumber(ARGV[4]) }
local now = now_ms()
if past_deadline(now, ARGV[5]) then return { -1, now } end
local configs, limits = open_configs(1, 6, now)

local allowed = true
for _, lim in ipairs(limits) do
  lim.amount = amount[lim.kind]
  lim.ok = admits(used_of(lim), lim.max, lim.amount)
  allowed = allowed and lim.ok
end

if allowed and ARGV[1] ~= '1' then
  for _, lim in ipairs(limits) do
    if lim.amount > 0 then
      if lim.kind == 'b' then
        lim.state.used = lim.state.used + lim.amount
      else
        win_add(lim.state, now, lim.amount)
      end
      lim.written = true
    end
  end
  save_written(configs, now)
end

local out = { allowed and 1 or 0, now }
for _, lim in ipairs(limits) do
  local reset, retry
  if lim.kind == 'b' then
    reset = lim.state.fin - now
    retry = lim.ok and 0 or reset
  else
    reset = win_reset_after(lim.state, now)
    retry = lim.ok and 0 or win_retry_after(lim.state, now, lim.max, lim.amount)
  end
  out[#out + 1] = lim.ok and 1 or 0
  out[#out + 1] = used_of(lim)
  out[#out + 1] = reset
  out[#out + 1] = retry
end
return out
