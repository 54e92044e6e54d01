-- lib/leases.lua: how much of a limit one replica may lease, as src/limits/lease.rs
-- computes it; tests/lease_parity.rs keeps the two equal.
-- requires: counts

-- With `used` counted (every replica's leases included), `held` of it this replica's
-- unspent lease and `amount` what the check itself adds, this replica's whole lease
-- stays within (max - (used - held) - amount) / (2N): near the limit it is nothing, and
-- every replica is back to exact per-check calls. Returns what may be added to `held`.
local function lease_room(used, cap, held, amount, nrep)
  local free = cap - (used - held) - amount
  if free <= 0 then return 0 end
  local room = floor(free / (2 * max(1, nrep))) - held
  if room < 0 then return 0 end
  return room
end
