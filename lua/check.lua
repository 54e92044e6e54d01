-- check.lua: one check-and-consume, all or nothing, over every limit of its configs.
-- Run by batch.lua (which holds KEYS/ARGV), once per check op, in arrival order.
-- cfgs    the opened configs of this check (see open_config in lib.lua)
-- amount  { r = requests, t = tokens, b = cost in nano-dollars }
-- consume false for a dry run
-- Appends to out: allowed (1|0), then per limit: admitted, used, reset_after_ms,
-- retry_after_ms. Amounts are added only when every limit admits them.

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
  out[#out + 1] = allowed and 1 or 0
  for _, cfg in ipairs(cfgs) do
    for _, lim in ipairs(cfg.limits) do
      local reset, retry
      if lim.kind == 'b' then
        reset = lim.state.fin - now
        retry = lim.ok and 0 or reset
      else
        reset = win_reset_after(lim.state, now)
        retry = lim.ok and 0 or win_retry_after(lim.state, now, lim.max, amount[lim.kind])
      end
      out[#out + 1] = lim.ok and 1 or 0
      out[#out + 1] = used_of(lim)
      out[#out + 1] = reset
      out[#out + 1] = retry
    end
  end
end
