-- lib/counts.lua: what every counter fragment builds on: the library functions they call,
-- as locals (a global lookup per call adds up over nine limits), and the bounds of a
-- count. Mirrored by src/limits/window.rs (MAX_USED, admits).
-- requires: nothing

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local pack, unpack_bin = struct.pack, struct.unpack

-- Usage saturates here (above any max; exact in a double; fits Redis's integer reply),
-- so usage reports can never overflow a counter.
local MAX_USED = 2 ^ 62

local function clamp_used(x)
  return max(0, min(x, MAX_USED))
end

local function admits(used, cap, amount)
  return used < cap and used + amount <= cap
end
