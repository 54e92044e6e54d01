-- read_usage.lua: live usage of configs for the management API. Writes nothing.
-- KEYS[k]  counters hash of the k-th config
-- ARGV[1…] per key: its number of limits, then six values per limit (see lib.lua)
-- Returns {now_ms, then per limit: used, start_ms of the current window or period}.

local now = now_ms()
local limits = open_limits(1, 1, now)
local out = { now }
for _, lim in ipairs(limits) do
  if lim.kind == 'b' then
    out[#out + 1] = lim.state.used
    out[#out + 1] = lim.state.start
  else
    out[#out + 1] = win_peek(lim.state, now)
    out[#out + 1] = now - lim.len
  end
end
return out
