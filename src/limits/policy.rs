//! How this replica applies configs beyond what each says: `--shadow-all` (every config
//! counted, none refusing) and `--alert-thresholds` (the thresholds of configs without
//! their own). Fixed at start; every snapshot compiles its configs with it.

use crate::model::ModelConfig;
use crate::model::config::Enforcement;
use std::sync::Arc;

/// `--alert-thresholds`' default: warn at 80 % of a limit, and when it is reached.
pub const DEFAULT_THRESHOLDS: [f64; 2] = [0.8, 1.0];

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `--shadow-all`: every config is shadow on this replica.
    pub shadow_all: bool,
    /// `--alert-thresholds`, ascending.
    pub thresholds: Arc<[f64]>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            shadow_all: false,
            thresholds: DEFAULT_THRESHOLDS.into(),
        }
    }
}

impl Policy {
    /// The enforcement of `config` on this replica.
    pub fn enforcement(&self, config: &ModelConfig) -> Enforcement {
        if self.shadow_all {
            Enforcement::Shadow
        } else {
            config.enforcement
        }
    }

    /// The thresholds of `config` on this replica: its own, else the replica's.
    pub fn thresholds(&self, config: &ModelConfig) -> Arc<[f64]> {
        match &config.alert_thresholds {
            Some(own) => own.as_slice().into(),
            None => self.thresholds.clone(),
        }
    }
}
