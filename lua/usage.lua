-- usage.lua: settle what a request really used. Never denies.
-- KEYS[1]  idempotency marker of the request id (only touched when ARGV[1] is 1)
-- KEYS[2…] counters hash of each matching config (see lib.lua)
-- ARGV[1]  1 when the report carries a request id   ARGV[2] how long to remember it (ms)
-- ARGV[3]  token delta   ARGV[4] cost delta in nano-dollars (negative = refund)
-- ARGV[5]  deadline (ms, Redis clock; 0 = none): past it the caller has answered 503, so
--          this report must change nothing (its retry will apply it)
-- ARGV[6…] per counters key: its limits, packed (see lib.lua)
-- Returns {1 applied | 0 duplicate | -1 past the deadline, now_ms}.

local now = now_ms()
if past_deadline(now, ARGV[5]) then return { -1, now } end
if ARGV[1] == '1' and redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) == false then
  return { 0, now }
end
local delta = { t = tonumber(ARGV[3]), b = tonumber(ARGV[4]) }
local configs, limits = open_configs(2, 6, now)
for _, lim in ipairs(limits) do
  local d = delta[lim.kind]
  if d ~= nil and d ~= 0 then
    if lim.kind == 'b' then
      lim.state.used = math.max(0, lim.state.used + d)
    elseif d > 0 then
      win_add(lim.state, now, d)
    else
      win_refund(lim.state, -d)
    end
    lim.written = true
  end
end
save_written(configs, now)
return { 1, now }
