//! Leases (SPEC §12), the pure part: how much of a limit one replica may lease, and how
//! much it asks for. `lua/lib/leases.lua` grants by the same rule (`lease_room`);
//! `tests/lease_parity.rs` keeps the two equal.

/// What this replica may add to its lease of a limit. `used` is the limit's count, every
/// replica's leases included; `held` of it is this replica's unspent lease; `amount` is
/// what the check itself adds. The replica's whole lease stays within
/// `(max − (used − held) − amount) / (2N)`: half of what is free, shared by N, so near the
/// limit it is nothing and every replica is back to exact per-check calls.
pub fn lease_room(used: i64, max: i64, held: i64, amount: i64, replicas: i64) -> i64 {
    let free = max
        .saturating_sub(used.saturating_sub(held))
        .saturating_sub(amount);
    if free <= 0 {
        return 0;
    }
    (free / (2 * replicas.max(1))).saturating_sub(held).max(0)
}

/// What a replica asks leased of a limit it spends `per_second` of (its checks' amounts,
/// as measured), for a lease of `life_ms`: what that rate spends in that time, and at
/// least 1 (a check that asks 0 of a limit, a token window settled by usage reports,
/// still needs room to be answered without a round trip).
pub fn lease_ask(per_second: f64, life_ms: i64) -> i64 {
    let want = (per_second * life_ms as f64 / 1000.0).ceil();
    if want.is_finite() && want >= 1.0 {
        want.min(i64::MAX as f64 / 4.0) as i64
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn room_is_half_the_free_part_shared_by_n() {
        assert_eq!(lease_room(0, 1000, 0, 1, 4), 124);
        assert_eq!(lease_room(100, 1000, 0, 0, 1), 450);
        // What this replica holds already counts against its share.
        assert_eq!(lease_room(200, 1000, 100, 0, 1), 350);
        assert_eq!(lease_room(999, 1000, 0, 1, 1), 0);
        assert_eq!(lease_room(1000, 1000, 0, 0, 3), 0);
        assert_eq!(lease_room(1200, 1000, 0, 0, 3), 0);
    }

    #[test]
    fn ask_covers_the_rate_for_the_lease_life() {
        assert_eq!(lease_ask(0.0, 500), 1);
        assert_eq!(lease_ask(1000.0, 500), 500);
        assert_eq!(lease_ask(3.0, 500), 2);
        assert_eq!(lease_ask(f64::NAN, 500), 1);
    }

    proptest! {
        /// A granted lease always fits the limit: `used + amount + room <= max`, and no
        /// replica's whole lease passes its share of what was free.
        #[test]
        fn room_never_overfills(used in 0i64..10_000, max in 1i64..10_000, held in 0i64..500,
            amount in 0i64..100, n in 1i64..16) {
            let held = held.min(used);
            let room = lease_room(used, max, held, amount, n);
            prop_assert!(room >= 0);
            if room > 0 {
                prop_assert!(used + amount + room <= max);
                prop_assert!((held + room) * 2 * n <= max - (used - held) - amount);
            }
        }
    }
}
