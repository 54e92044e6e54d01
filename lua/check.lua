-- check.lua: one check-and-consume, all or nothing, over every limit of its configs.
-- Run by batch.lua (which holds KEYS/ARGV), once per check op, in arrival order.
-- cfgs    the opened configs of this check (see open_config in lib/counters.lua)
-- amount  { r = requests, t = tokens, b = cost in nano-dollars }
-- consume false for a dry run
-- stamp   the time windows are written at: now, or a lease's end (lease.lua)
-- op      this op's number in the call, for the threshold events it causes (`events`)
-- Appends to out: 1 allowed, 2 allowed although a shadow config's limit refused, 0
-- denied; then per limit: used, reset_after_ms, and unless 1 also admitted (1|0) and
-- retry_after_ms. Amounts are added (to every limit, shadow ones too: their counters
-- show what the traffic used) only when every limit of an enforcing config admits them.
-- This runs once per check of a batch, so it is written for the interpreter: numeric
-- loops, the admission rule (lib/counts.lua's admits) and the reset time inlined.

local function check_op(cfgs, amount, consume, now, out, op, events, stamp)
  local allowed, shadowed = true, false
  for c = 1, #cfgs do
    local cfg = cfgs[c]
    local limits = cfg.limits
    for j = 1, #limits do
      local lim = limits[j]
      local used, cap = lim.state.total, lim.max
      local ok = used < cap and used + amount[lim.kind] <= cap
      lim.ok = ok
      if not ok then
        if cfg.shadow then shadowed = true else allowed = false end
      end
    end
  end
  if allowed and consume then
    local pos = 0
    for c = 1, #cfgs do
      local cfg = cfgs[c]
      local limits = cfg.limits
      for j = 1, #limits do
        local lim = limits[j]
        -- lim.extra: what lease.lua leases on top (0 otherwise).
        local a = amount[lim.kind] + lim.extra
        if a > 0 then
          if lim.kind == 'b' then
            lim.state.total = clamp_used(lim.state.total + a)
          else
            win_add(lim.state, stamp, a)
          end
          lim.written = true
          if #cfg.th > 0 then alert_rise(lim, cfg.th, now, op, pos, events) end
        end
        pos = pos + 1
      end
    end
  end
  -- An allowed check's limits all admitted with nothing to wait for: only used and
  -- reset go back (half the reply to encode); a denied check's (or one a shadow limit
  -- would have refused) say which and how long.
  local full = not allowed or shadowed
  local n = #out + 1
  out[n] = (not allowed) and 0 or (shadowed and 2 or 1)
  for c = 1, #cfgs do
    local limits = cfgs[c].limits
    for j = 1, #limits do
      local lim = limits[j]
      local st = lim.state
      local reset
      if lim.kind == 'b' then
        reset = st.fin - now
      else
        reset = (st.n == 0) and 0 or max(0, st.nl + st.len - now)
      end
      out[n + 1], out[n + 2] = st.total, reset
      if not full then
        n = n + 2
      else
        out[n + 3] = lim.ok and 1 or 0
        if lim.ok then
          out[n + 4] = 0
        elseif lim.kind == 'b' then
          out[n + 4] = reset
        else
          out[n + 4] = win_retry_after(st, now, lim.max, amount[lim.kind])
        end
        n = n + 4
      end
    end
  end
end
