-- batch.lua: the checks and usage reports that one replica sent together (coalesced),
-- evaluated in arrival order, each all-or-nothing on its own with its own answer, exactly
-- as if sent alone. Each config's counters are read and decoded once per call and
-- written once (lib/counters.lua); check.lua and usage.lua hold the operations.
-- KEYS[k]      k <= ARGV[1]: counters hash of the k-th config any op of this call
--              touches; after them: the hashes of usage-report markers (see usage.lua).
--              Every key the script reads or writes is declared here, so that on Redis
--              Cluster each follows its slot through a migration (ASK, TRYAGAIN).
-- ARGV[1]      n, the number of counters keys
-- ARGV[1 + k]  limits of KEYS[k] (k <= n), packed (see lib/counters.lua)
-- ARGV[2 + n …] one op each, packed '<c1ddddd': kind ('c' check, 'd' dry-run check,
--              'u' usage report, 'g' give-back, 'l' replay of local admissions, 'e' check
--              that leases, 'x' return of a lease: lease.lua), deadline (ms, Redis clock; 0 = none:
--              past it the caller has answered by its store-error policy or with 503, so
--              the op must change nothing), requests, tokens, nano-dollars (a check's
--              amounts; a report's or give-back's deltas), reservation time (ms; 0 = not
--              known); then 'H' n and n × 'H' indexes into KEYS; then 'B' 1 and '<HHHc1c10d'
--              the marker of a report with a request id (the indexes into KEYS of its
--              day's hash, the day before's and the day after's, the field, the
--              fingerprint, and when the day's hash expires, ms), or 'B' 0; then for 'e'
--              '<dd' N and the longest lease (ms) and 2 doubles per limit (ask, held),
--              for 'x' 1 double per limit (what goes back; the reservation time is the
--              lease's end).
-- Returns {now_ms, then per op: status (-1 past its deadline; check: 1 allowed, 2
-- allowed although a shadow limit refused, 0 denied, then 2 (1) or 4 (2, 0) values per
-- limit as in check.lua, and for 'e' the lease's end and what each limit leased; report
-- or replay: 1 applied, 0 duplicate; give-back and lease return: 1), then the
-- threshold events the ops caused: their number, and 5 values each (op number, limit
-- position in the op from 0, threshold position from 1, usage, period start or 0;
-- see lib/alerts.lua)}.

local now = now_ms()
local nkeys = tonumber(ARGV[1])
local configs = {}
for k = 1, nkeys do
  configs[k] = open_config(KEYS[k], ARGV[1 + k], now)
  for _, lim in ipairs(configs[k].limits) do alert_expire(lim, now) end
end
local events = {}

local out = { now }
for i = 2 + nkeys, #ARGV do
  local op = ARGV[i]
  local opn = i - 1 - nkeys
  local kind, deadline, r, t, b, at, pos = struct.unpack('<c1ddddd', op)
  local n
  n, pos = struct.unpack('<H', op, pos)
  local cfgs = {}
  for j = 1, n do
    cfgs[j], pos = struct.unpack('<H', op, pos)
    cfgs[j] = configs[cfgs[j]]
  end
  if deadline > 0 and now > deadline then
    out[#out + 1] = -1
  elseif kind == 'c' or kind == 'd' then
    check_op(cfgs, { r = r, t = t, b = b }, kind == 'c', now, out, opn, events, now)
  elseif kind == 'e' or kind == 'x' then
    local nrep, ahead, per = 0, 0, {}
    pos = pos + 1
    if kind == 'e' then nrep, ahead, pos = struct.unpack('<dd', op, pos) end
    while pos <= #op do per[#per + 1], pos = struct.unpack('<d', op, pos) end
    if kind == 'e' then
      lease_op(cfgs, { r = r, t = t, b = b }, per, nrep, ahead, now, out, opn, events)
    else
      out[#out + 1] = lease_return_op(cfgs, per, at)
    end
  else
    local has_marker
    has_marker, pos = struct.unpack('B', op, pos)
    if has_marker == 1 then
      local before, day, after, mf, fp, expire = struct.unpack('<HHHc1c10d', op, pos)
      if marker_seen(KEYS[day], KEYS[before], KEYS[after], mf, fp, expire) then
        out[#out + 1] = 0
      else
        out[#out + 1] = adjust_op(cfgs, { r = r, t = t, b = b }, at, now, opn, events, kind == 'l')
      end
    else
      out[#out + 1] = adjust_op(cfgs, { r = r, t = t, b = b }, at, now, opn, events, kind == 'l')
    end
  end
end

for k = 1, nkeys do
  save_config(configs[k], now)
end
-- The markers go last: a report that failed part-way is not taken for applied.
save_markers()
out[#out + 1] = #events
for _, e in ipairs(events) do
  for v = 1, 5 do out[#out + 1] = e[v] end
end
return out
