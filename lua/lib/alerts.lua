-- lib/alerts.lua: threshold events, decided here where the counters live, so exactly one
-- replica of a fleet sees each crossing; as src/limits/thresholds.rs decides them.
-- Each limit keeps the highest threshold it fired (`level`, a fraction of its max) and
-- when (`at`, ms): in its budget field, forgotten with the period; in its window's hot
-- field, forgotten one window length after it fired. A threshold fires when an op makes
-- usage reach t × max while the level is below t (several at once when one op jumps
-- over them). Nothing lowers the level but time: a give-back (a reservation another
-- shard refused, a check answered by the fallback) leaves it, so no threshold fires
-- twice in its period or window length.
-- requires: counts

-- A window's level one window length after it fired is gone.
local function alert_expire(lim, now)
  local st = lim.state
  if st.level > 0 and lim.kind ~= 'b' and now - st.at >= lim.len then
    st.level, st.at = 0, 0
  end
end

-- After an op raised `lim`'s usage: appends to `events` (op number, the limit's position
-- in the op from 0, the threshold's position from 1, usage, the period's start or 0)
-- for every threshold of `th` reached above the level.
local function alert_rise(lim, th, now, op, pos, events)
  local st = lim.state
  -- Below the lowest threshold (they are ascending) nothing can fire: most checks.
  if st.total < th[1] * lim.max then return end
  local top
  for i = 1, #th do
    local t = th[i]
    if t > st.level and st.total >= t * lim.max then
      events[#events + 1] = { op, pos, i, st.total, (lim.kind == 'b') and st.start or 0 }
      top = t
    end
  end
  if top then
    st.level, st.at = top, now
    lim.written = true
  end
end
