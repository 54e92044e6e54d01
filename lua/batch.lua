-- batch.lua: the checks and usage reports that one replica sent together (coalesced),
-- evaluated in arrival order, each all-or-nothing on its own with its own answer, exactly
-- as if sent alone. Each config's counters are read and decoded once per call and
-- written once (lib.lua); check.lua and usage.lua hold the operations.
-- KEYS[k]      counters hash of the k-th config any op of this call touches
-- ARGV[1]      key prefix of the usage markers (see usage.lua); empty (Redis Cluster): each
--              report's markers go beside the counters of its first config in this call,
--              KEYS[i] .. ':u:', in that key's slot (one marker per shard a report touches)
-- ARGV[1 + k]  limits of KEYS[k], packed (see lib.lua)
-- ARGV[2 + #KEYS …] one op each, packed '<c1ddddd': kind ('c' check, 'd' dry-run check,
--              'u' usage report, 'g' give-back), deadline (ms, Redis clock; 0 = none:
--              past it the caller has answered by its store-error policy or with 503, so
--              the op must change nothing), requests, tokens, nano-dollars (a check's
--              amounts; a report's or give-back's deltas), reservation time (ms; 0 = not
--              known); then 'H' n and n × 'H' indexes into KEYS; then 'B' 1 and '<Hc1c10'
--              the marker (hash, field, fingerprint) of a report with a request id, or 'B' 0.
-- Returns {now_ms, then per op: status (-1 past its deadline; check: 1 allowed, 0 denied,
-- then 2 (allowed) or 4 (denied) values per limit as in check.lua; report: 1 applied,
-- 0 duplicate; give-back: 1)}.

local now = now_ms()
local nkeys = #KEYS
local configs = {}
for k = 1, nkeys do
  configs[k] = open_config(KEYS[k], ARGV[1 + k], now)
end

local out = { now }
for i = 2 + nkeys, #ARGV do
  local op = ARGV[i]
  local kind, deadline, r, t, b, at, pos = struct.unpack('<c1ddddd', op)
  local n
  n, pos = struct.unpack('<H', op, pos)
  local cfgs = {}
  local first
  for j = 1, n do
    cfgs[j], pos = struct.unpack('<H', op, pos)
    first = first or cfgs[j]
    cfgs[j] = configs[cfgs[j]]
  end
  if deadline > 0 and now > deadline then
    out[#out + 1] = -1
  elseif kind == 'c' or kind == 'd' then
    check_op(cfgs, { r = r, t = t, b = b }, kind == 'c', now, out)
  else
    local has_marker
    has_marker, pos = struct.unpack('B', op, pos)
    if has_marker == 1 then
      local mb, mf, fp = struct.unpack('<Hc1c10', op, pos)
      local prefix = ARGV[1]
      if prefix == '' then prefix = KEYS[first] .. ':u:' end
      if marker_seen(prefix, mb, mf, fp, now) then
        out[#out + 1] = 0
      else
        out[#out + 1] = adjust_op(cfgs, { r = r, t = t, b = b }, at, now)
      end
    else
      out[#out + 1] = adjust_op(cfgs, { r = r, t = t, b = b }, at, now)
    end
  end
end

for k = 1, nkeys do
  save_config(configs[k], now)
end
-- The markers go last: a report that failed part-way is not taken for applied.
save_markers()
return out
