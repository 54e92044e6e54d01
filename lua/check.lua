-- check.lua: one check-and-consume, all or nothing, over every limit of its configs.
-- Run by batch.lua (which holds KEYS/ARGV), once per check op, in arrival order.
-- cfgs    the opened configs of this check (see open_config in lib.lua)
-- amount  { r = requests, t = tokens, b = cost in nano-dollars }
-- consume false for a dry run
-- Appends to out: allowed (1|0), then per limit: used, reset_after_ms, and when denied
-- also admitted (1|0) and retry_after_ms. Amounts are added only when every limit admits
-- them.

local function check_op(cfgs, amount, consume, now, out)
  local allowed = true
  for _, cfg in ipairs(cfgs) do
    for _, lim in ipairs(cfg.limits) do
      lim.ok = admits(used_of(lim), lim.max, amount[lim.kind])
      allowed = allowed and lim.ok
    end
  end
  if allowed and consume then
    for _, cfg in ipairs(cfgs) do
      for _, lim in ipairs(cfg.limits) do
        local a = amount[lim.kind]
        if a > 0 then
          if lim.kind == 'b' then
            lim.state.used = clamp_used(lim.state.used + a)
          else
            win_add(lim.state, now, a)
          end
          lim.written = true
        end
      end
    end
  end
  -- An allowed check's limits all admitted with nothing to wait for: only used and
  -- reset go back (half the reply to encode); a denied check's say which and how long.
  local n = #out
  out[n + 1] = allowed and 1 or 0
  n = n + 1
  for _, cfg in ipairs(cfgs) do
    for _, lim in ipairs(cfg.limits) do
      local st = lim.state
      if lim.kind == 'b' then
        out[n + 1] = st.used
        out[n + 2] = st.fin - now
        if not allowed then
          out[n + 3] = lim.ok and 1 or 0
          out[n + 4] = lim.ok and 0 or (st.fin - now)
        end
      else
        out[n + 1] = st.total
        out[n + 2] = win_reset_after(st, now)
        if not allowed then
          out[n + 3] = lim.ok and 1 or 0
          out[n + 4] = lim.ok and 0 or win_retry_after(st, now, lim.max, amount[lim.kind])
        end
      end
      n = n + (allowed and 2 or 4)
    end
  end
end
