-- read_usage.lua: live usage of configs for the management API. Writes nothing.
-- KEYS[k]  counters hash of the k-th config (see lib.lua)
-- ARGV[1…] per key: its limits, packed (see lib.lua)
-- Returns {now_ms, then per limit: used, start_ms of the current window or period}.

local now = now_ms()
local _, limits = open_configs(1, 1, now)
local out = { now }
for _, lim in ipairs(limits) do
  out[#out + 1] = used_of(lim)
  if lim.kind == 'b' then
    out[#out + 1] = lim.state.start
  else
    out[#out + 1] = now - lim.len
  end
end
return out
