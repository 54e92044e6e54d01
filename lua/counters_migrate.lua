-- counters_migrate.lua (Redis Cluster only): folds a config's counters that another key
-- layout kept in another slot (one slot per config: earlier releases) into its counters
-- hash here. Usage is added, so what checks counted here before the move stays counted:
-- a budget's usage of the same period is summed, a window's sub-buckets are merged by
-- bucket (counts summed). Run by tollgate after reading the other hash (HGETALL), which
-- it deletes after; a script's keys share one slot, so the two cannot be one call.
-- KEYS[1]  the config's counters hash (this layout)
-- ARGV[1]  the config's limits, packed (see lib/counters.lua)
-- ARGV[2…] the other hash's fields and values, in pairs
-- Returns the number of limits that had usage to fold in.

local now = now_ms()
local other = {}
for i = 2, #ARGV - 1, 2 do other[ARGV[i]] = ARGV[i + 1] end
local cfg = open_config(KEYS[1], ARGV[1], now)
local folded = 0
for _, lim in ipairs(cfg.limits) do
  local value = other[lim.field]
  local st = lim.state
  if value and lim.kind == 'b' then
    local b = budget_open(value, now, lim.len, lim.mode, lim.param)
    if b.total > 0 and b.start == st.start then
      st.total = clamp_used(st.total + b.total)
      st.level, st.at = max(st.level, b.level), max(st.at, b.at)
      lim.written, folded = true, folded + 1
    end
  elseif value then
    local w = win_open(value, lim.len, KEYS[1], lim.field)
    if w.cold == false then w.cold = other[lim.field .. ':c'] or '' end
    win_evict(w, now)
    if w.n > 0 then
      -- Both lists oldest first, bucket indexes ascending: merged in one pass.
      local a, b, merged = win_list(st), win_list(w), {}
      local i, j = 1, 1
      while i <= #a or j <= #b do
        local ia = a[i] and floor(a[i][2] / st.g)
        local ib = b[j] and floor(b[j][2] / st.g)
        if ib == nil or (ia ~= nil and ia < ib) then
          merged[#merged + 1] = a[i]
          i = i + 1
        elseif ia == nil or ib < ia then
          merged[#merged + 1] = b[j]
          j = j + 1
        else
          merged[#merged + 1] = { clamp_used(a[i][1] + b[j][1]), max(a[i][2], b[j][2]) }
          i, j = i + 1, j + 1
        end
      end
      st.total = clamp_used(st.total + w.total)
      win_set(st, merged)
      st.level, st.at = max(st.level, w.level), max(st.at, w.at)
      st.fresh = true
      lim.written, folded = true, folded + 1
    end
  end
end
save_config(cfg, now)
return folded
