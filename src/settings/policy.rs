//! Flags of how this replica applies configs: `--shadow-all` and `--alert-thresholds`.

use crate::limits::policy::{DEFAULT_THRESHOLDS, Policy};
use crate::model::validate::check_thresholds;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct PolicySettings {
    /// Make every config shadow on this replica: counted as usual, never refusing; a
    /// check its limits would have refused lists them in `shadow_denied` (a first
    /// rollout). (The variable takes true/false, 1/0, yes/no, on/off.)
    #[arg(long, env = "TOLLGATE_SHADOW_ALL", value_parser = clap::builder::BoolishValueParser::new())]
    pub shadow_all: bool,

    /// Fractions of a limit's max at which a threshold event is emitted (once per
    /// budget period, or per window length), for configs without their own
    /// `alert_thresholds`. Comma-separated, each > 0 and <= 10; empty or `none`: no
    /// events.
    #[arg(long, env = "TOLLGATE_ALERT_THRESHOLDS", default_value = "0.8,1.0",
          value_parser = parse_thresholds)]
    pub alert_thresholds: Thresholds,

    /// Answer a check 429 without a store call while a limit that refused it a moment
    /// ago must still refuse: for the retry time the store gave (a budget's period end;
    /// a window's time until the amount fits), but at most this long, in milliseconds,
    /// since a refund through another replica (or a reservation another shard gives
    /// back) may free room earlier; forgotten on a refund through this replica or a new
    /// revision of the config. 0: ask the store every time.
    #[arg(long, env = "TOLLGATE_REMEMBER_REFUSALS_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub remember_refusals_ms: u64,
}

/// `--alert-thresholds`, validated and sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds(pub Vec<f64>);

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds(DEFAULT_THRESHOLDS.to_vec())
    }
}

fn parse_thresholds(s: &str) -> Result<Thresholds, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(Thresholds(Vec::new()));
    }
    let list = s
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("{t:?} is not a number (expected fractions like 0.8,1.0)"))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    check_thresholds("--alert-thresholds", &list)
        .map(Thresholds)
        .map_err(|e| e.0)
}

impl PolicySettings {
    pub fn policy(&self) -> Policy {
        Policy {
            shadow_all: self.shadow_all,
            thresholds: self.alert_thresholds.0.as_slice().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_sorted_and_refuse_nonsense() {
        assert_eq!(parse_thresholds("1.0, 0.5").unwrap().0, vec![0.5, 1.0]);
        assert!(parse_thresholds("").unwrap().0.is_empty());
        assert!(parse_thresholds("none").unwrap().0.is_empty());
        assert!(
            parse_thresholds("0.5,x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_thresholds("0").unwrap_err().contains("> 0"));
        assert!(parse_thresholds("0.5,0.5").unwrap_err().contains("twice"));
    }
}
