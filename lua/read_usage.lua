-- read_usage.lua: live usage of configs for the management API. Writes nothing.
-- KEYS[k]  counters hash of the k-th config (see lib/counters.lua)
-- ARGV[k]  limits of KEYS[k], packed (see lib/counters.lua)
-- Returns {now_ms, then per limit: used, start_ms of the current window or period}.

local now = now_ms()
local out = { now }
for k = 1, #KEYS do
  local cfg = open_config(KEYS[k], ARGV[k], now)
  for _, lim in ipairs(cfg.limits) do
    out[#out + 1] = used_of(lim)
    if lim.kind == 'b' then
      out[#out + 1] = lim.state.start
    else
      out[#out + 1] = now - lim.len
    end
  end
end
return out
