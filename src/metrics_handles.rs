//! Handles of the series the hot path records on every request, resolved once: a
//! `metrics::counter!` with labels builds its key and looks it up in the recorder's
//! registry on every call, several times per check. Each handle is resolved after the
//! process's recorder is installed (`crate::metrics::handle`), so it is never a no-op.

use metrics::{Counter, Histogram};
use std::sync::OnceLock;

/// `tollgate_checks_total`'s reason label values.
const REASONS: [&str; 5] = [
    "none",
    "request_limited",
    "token_limited",
    "budget_exceeded",
    "store_unavailable",
];

/// `tollgate_checks_total{decision, reason}`.
pub fn checks(allowed: bool, reason: &'static str) -> Counter {
    static SERIES: [[OnceLock<Counter>; REASONS.len()]; 2] =
        [const { [const { OnceLock::new() }; REASONS.len()] }; 2];
    let decision = if allowed { "allowed" } else { "denied" };
    match REASONS.iter().position(|r| *r == reason) {
        Some(i) => SERIES[usize::from(allowed)][i]
            .get_or_init(|| {
                crate::metrics::handle();
                metrics::counter!(crate::metrics::CHECKS, "decision" => decision, "reason" => REASONS[i])
            })
            .clone(),
        None => metrics::counter!(crate::metrics::CHECKS, "decision" => decision, "reason" => reason),
    }
}

/// `tollgate_check_duration_seconds`.
pub fn check_duration() -> &'static Histogram {
    static SERIES: OnceLock<Histogram> = OnceLock::new();
    SERIES.get_or_init(|| {
        crate::metrics::handle();
        metrics::histogram!(crate::metrics::CHECK_DURATION)
    })
}

/// `tollgate_lease_checks_total{answer}`: answered from leases here, or by the store.
pub fn lease_checks(local: bool) -> Counter {
    static SERIES: [OnceLock<Counter>; 2] = [const { OnceLock::new() }; 2];
    SERIES[usize::from(local)]
        .get_or_init(|| {
            crate::metrics::handle();
            let answer = if local { "local" } else { "store" };
            metrics::counter!(crate::metrics::LEASE_CHECKS, "answer" => answer)
        })
        .clone()
}

/// `tollgate_lease_held{kind}`, by `LimitKind` (requests, tokens, budget).
pub fn lease_held(kind: crate::limits::LimitKind) -> metrics::Gauge {
    static SERIES: [OnceLock<metrics::Gauge>; 3] = [const { OnceLock::new() }; 3];
    SERIES[kind.index()]
        .get_or_init(|| {
            crate::metrics::handle();
            metrics::gauge!(crate::metrics::LEASE_HELD, "kind" => kind.as_str())
        })
        .clone()
}

/// Store operations timed on every request.
const HOT_OPS: [&str; 2] = ["check", "usage"];

/// `tollgate_store_duration_seconds{op}`.
pub fn store_duration(op: &'static str) -> Histogram {
    static SERIES: [OnceLock<Histogram>; HOT_OPS.len()] =
        [const { OnceLock::new() }; HOT_OPS.len()];
    match HOT_OPS.iter().position(|o| *o == op) {
        Some(i) => SERIES[i]
            .get_or_init(|| {
                crate::metrics::handle();
                metrics::histogram!(crate::metrics::STORE_DURATION, "op" => HOT_OPS[i])
            })
            .clone(),
        None => metrics::histogram!(crate::metrics::STORE_DURATION, "op" => op),
    }
}

/// `tollgate_http_requests_total{route, status}` of a known route and status (positions
/// in the router's tables), or None.
pub fn http_requests(route: usize, status: usize, label: impl FnOnce() -> Counter) -> Counter {
    const ROUTES: usize = 16;
    const STATUSES: usize = 16;
    static SERIES: [[OnceLock<Counter>; STATUSES]; ROUTES] =
        [const { [const { OnceLock::new() }; STATUSES] }; ROUTES];
    match SERIES.get(route).and_then(|r| r.get(status)) {
        Some(slot) => slot
            .get_or_init(|| {
                crate::metrics::handle();
                label()
            })
            .clone(),
        None => label(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_series_count_like_the_macros() {
        let h = crate::metrics::handle();
        super::checks(false, "token_limited").increment(3);
        super::check_duration().record(0.001);
        let text = h.render();
        assert!(
            text.lines().any(|l| l.starts_with("tollgate_checks_total")
                && l.contains("decision=\"denied\"")
                && l.contains("reason=\"token_limited\"")),
            "{text}"
        );
    }
}
