-- lease.lua: a check that also leases part of its limits to the replica that sent it
-- (debited here ahead of use, spent there with no round trip: src/app/leases), and the
-- return of a lease's unspent part. Run by batch.lua (which holds KEYS/ARGV), once per op.
-- asks   per limit of cfgs, in order, two values: what the replica asks leased (0: none)
--        and what it holds of that limit already, unspent
-- nrep   the replicas alive (N); ahead: the longest a lease may live (ms)
-- A lease is granted on every limit that asks, or on none (a replica answers a check by
-- itself only when every limit of it can): each gets min(ask, lease_room), and the lease
-- lives `life` = min(ahead, a quarter of each window asked, what is left of each budget
-- period asked). Every amount the op adds to a window is written at now + life, so what
-- the replica admits from the lease until then leaves the window no earlier than one
-- window length after it was admitted: a lease never lets a window admit more than max.
-- Appends check.lua's answer, then the lease's end (ms, Redis clock; 0: none granted),
-- then per limit what the op added there at that end (the check's amount and the lease).

local function lease_op(cfgs, amount, asks, nrep, ahead, now, out, op, events)
  local life, granted, p = ahead, true, 0
  for c = 1, #cfgs do
    local limits = cfgs[c].limits
    for j = 1, #limits do
      local lim = limits[j]
      p = p + 1
      local ask = asks[2 * p - 1] or 0
      if ask > 0 then
        local g = min(ask, lease_room(lim.state.total, lim.max, asks[2 * p] or 0,
          amount[lim.kind], nrep))
        if g <= 0 then granted = false end
        lim.extra = g
        if lim.kind == 'b' then
          life = min(life, lim.state.fin - now)
        else
          life = min(life, floor(lim.len / 4))
        end
      end
    end
  end
  if life < 1 or p == 0 then granted = false end
  if not granted then
    life = 0
    for c = 1, #cfgs do
      for _, lim in ipairs(cfgs[c].limits) do lim.extra = 0 end
    end
  end
  local at = #out + 1
  check_op(cfgs, amount, true, now, out, op, events, now + life)
  granted = granted and out[at] ~= 0
  out[#out + 1] = granted and (now + life) or 0
  for c = 1, #cfgs do
    for _, lim in ipairs(cfgs[c].limits) do
      out[#out + 1] = granted and (amount[lim.kind] + lim.extra) or 0
      -- The configs' tables serve every op of the call.
      lim.extra = 0
    end
  end
end

-- Takes back `back` (per limit of cfgs, in order) of a lease that ends, from what it
-- debited at `at` (its end, where its windows' amounts were written: see win_refund; a
-- budget's only while the period is the lease's). Returns 1.
local function lease_return_op(cfgs, back, at)
  local p = 0
  for c = 1, #cfgs do
    for _, lim in ipairs(cfgs[c].limits) do
      p = p + 1
      local d = back[p] or 0
      if d > 0 then
        if lim.kind == 'b' then
          if at >= lim.state.start then
            lim.state.total = max(0, lim.state.total - d)
            lim.written = true
          end
        elseif lim.state.total > 0 then
          win_refund(lim.state, d, at)
          lim.written = true
        end
      end
    end
  end
  return 1
end
