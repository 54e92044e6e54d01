-- usage.lua: settle what a request really used. Never denies.
-- KEYS[1]  idempotency marker of the request id (only touched when ARGV[1] is 1)
-- KEYS[2…] counters hash of each matching config (see lib.lua)
-- ARGV[1]  1 when the report carries a request id   ARGV[2] how long to remember it (ms)
-- ARGV[3]  token delta   ARGV[4] cost delta in nano-dollars (negative = refund)
-- ARGV[5]  deadline (ms, Redis clock; 0 = none): past it the caller has answered 503, so
--          this report must change nothing (its retry will apply it)
-- ARGV[6]  when the check reserved (ms, Redis clock; 0 = not known): a refund only
--          returns what that reservation still holds (see win_refund)
-- ARGV[7…] per counters key: its limits, packed (see lib.lua)
-- Returns {1 applied | 0 duplicate | -1 past the deadline, now_ms}.

local now = now_ms()
if past_deadline(now, ARGV[5]) then return { -1, now } end
local remember = ARGV[1] == '1'
if remember and redis.call('EXISTS', KEYS[1]) == 1 then return { 0, now } end
local delta = { t = tonumber(ARGV[3]), b = tonumber(ARGV[4]) }
local reserved_at = tonumber(ARGV[6])
local configs, limits = open_configs(2, 7, now)
for _, lim in ipairs(limits) do
  local d = delta[lim.kind]
  if d ~= nil and d ~= 0 then
    if lim.kind == 'b' then
      -- A refund of a reservation made in an earlier period has nothing left to return.
      if d > 0 or reserved_at == 0 or reserved_at >= lim.state.start then
        lim.state.used = clamp_used(lim.state.used + d)
        lim.written = true
      end
    elseif d > 0 then
      win_add(lim.state, now, d)
      lim.written = true
    elseif lim.state.total > 0 then
      win_refund(lim.state, -d, reserved_at)
      lim.written = true
    end
  end
end
save_written(configs, now)
-- The marker goes last: a report that failed part-way is not taken for applied.
if remember then redis.call('SET', KEYS[1], '1', 'PX', ARGV[2]) end
return { 1, now }
