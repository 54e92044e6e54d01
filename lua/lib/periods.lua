-- lib/periods.lua: budget periods (which period a moment falls in), as
-- src/limits/period.rs computes them; tests/lua_parity.rs keeps the two equal.
-- requires: clock, counts

-- Days since 1970-01-01 of a civil date, and back (H. Hinnant's algorithms).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- Start (ms) of month index i = year * 12 + zero-based month.
local function month_start(i)
  local y = floor(i / 12)
  return days_from_civil(y, i - y * 12 + 1, 1) * DAY_MS
end

local function period_bounds(now, len, mode, param)
  if mode == 0 then
    local start = param + floor((now - param) / len) * len
    return start, start + len
  end
  local y, m = civil_from_days(floor(now / DAY_MS))
  if mode == 1 then
    local i = floor((y * 12 + m - 1) / param) * param
    return month_start(i), month_start(i + param)
  end
  local y0 = floor(y / param) * param
  return month_start(y0 * 12), month_start((y0 + param) * 12)
end

-- Usage recorded in an earlier period is dropped; usage from a later-starting period
-- (the grid changed under an update) is kept.
local function budget_open(bin, now, len, mode, param)
  local start, fin = period_bounds(now, len, mode, param)
  -- `total` like a window's, so a check reads either the same way.
  local b = { start = start, fin = fin, total = 0, fresh = true }
  if type(bin) == 'string' then
    local s, u = unpack_bin('dd', bin)
    if s >= start then b.total, b.fresh = u, false end
  end
  return b
end

local function budget_encode(b)
  return pack('dd', b.start, b.total)
end
