//! The threshold event: what a receiver gets when a limit's usage reaches a fraction of
//! its max, and its JSON (the webhook body and the logged `event` field).
//!
//! Every field is always present: `provider`, `scope_id` and `period_start` are `null`
//! when they do not apply (all providers, a global config, a window), so receivers can
//! rely on one shape for every event.

use crate::limits::LimitKind;
pub use crate::model::config::Enforcement;
use crate::model::{Scope, nanos_to_dollars};
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// The one event type tollgate sends today (the JSON `type` field).
pub const EVENT_TYPE: &str = "threshold_crossed";

/// One crossing of one threshold by one limit. Built by whoever decided the crossing
/// (the store, atomically with the counters), so exactly one replica emits it.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdEvent {
    /// Unique per crossing and stable across retries, so receivers can deduplicate.
    pub event_id: String,
    /// When the crossing happened.
    pub at: DateTime<Utc>,
    pub config_id: String,
    pub model_name: String,
    /// `None`: the config covers all providers.
    pub provider: Option<String>,
    pub scope: Scope,
    /// `None` for a global config.
    pub scope_id: Option<String>,
    pub enforcement: Enforcement,
    pub kind: LimitKind,
    /// The limit's window or period, as the operator wrote it (`1m`, `1d`, ...).
    pub reset_duration: String,
    /// The fraction of `max` that was reached (e.g. `0.8`).
    pub threshold: f64,
    /// In counter units: requests, tokens, or nano-dollars for budgets (the JSON shows
    /// dollars), as the store keeps them.
    pub used: i64,
    /// Same units as `used`.
    pub max: i64,
    /// Budgets: the start of the period the crossing belongs to. `None` for windows.
    pub period_start: Option<DateTime<Utc>>,
}

/// The JSON field order; `used`/`max` converted to what clients see elsewhere (whole
/// requests and tokens, dollars for budgets), as in a check answer.
#[derive(Serialize)]
struct Wire<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'static str,
    at: &'a DateTime<Utc>,
    config_id: &'a str,
    model_name: &'a str,
    provider: Option<&'a str>,
    scope: Scope,
    scope_id: Option<&'a str>,
    enforcement: Enforcement,
    kind: &'static str,
    reset_duration: &'a str,
    threshold: f64,
    used: serde_json::Value,
    max: serde_json::Value,
    period_start: Option<&'a DateTime<Utc>>,
}

impl Serialize for ThresholdEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            event_id: &self.event_id,
            event_type: EVENT_TYPE,
            at: &self.at,
            config_id: &self.config_id,
            model_name: &self.model_name,
            provider: self.provider.as_deref(),
            scope: self.scope,
            scope_id: self.scope_id.as_deref(),
            enforcement: self.enforcement,
            kind: self.kind.as_str(),
            reset_duration: &self.reset_duration,
            threshold: self.threshold,
            used: quantity(self.kind, self.used),
            max: quantity(self.kind, self.max),
            period_start: self.period_start.as_ref(),
        }
        .serialize(s)
    }
}

/// As in a check answer: whole requests and tokens, dollars for budgets.
fn quantity(kind: LimitKind, raw: i64) -> serde_json::Value {
    match kind {
        LimitKind::Budget => serde_json::Value::from(nanos_to_dollars(raw)),
        LimitKind::Requests | LimitKind::Tokens => serde_json::Value::from(raw),
    }
}

impl ThresholdEvent {
    /// The exact text that is logged, POSTed and signed (the same on every attempt).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub(crate) fn budget_event() -> ThresholdEvent {
        ThresholdEvent {
            event_id: "ev-1".into(),
            at: "2025-06-01T12:30:00.250Z".parse().unwrap(),
            config_id: "cfg-1".into(),
            model_name: "gpt-4o".into(),
            provider: Some("openai".into()),
            scope: Scope::VirtualKey,
            scope_id: Some("vk-1".into()),
            enforcement: Enforcement::Enforce,
            kind: LimitKind::Budget,
            reset_duration: "1M".into(),
            threshold: 0.8,
            used: 8_000_500_000,
            max: 10_000_000_000,
            period_start: Some("2025-06-01T00:00:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn a_budget_event_is_the_documented_json() {
        let got: Value = serde_json::from_str(&budget_event().to_json().unwrap()).unwrap();
        assert_eq!(
            got,
            json!({
                "event_id": "ev-1", "type": "threshold_crossed", "at": "2025-06-01T12:30:00.250Z",
                "config_id": "cfg-1", "model_name": "gpt-4o", "provider": "openai",
                "scope": "virtual_key", "scope_id": "vk-1", "enforcement": "enforce",
                "kind": "budget", "reset_duration": "1M", "threshold": 0.8,
                "used": 8.0005, "max": 10.0, "period_start": "2025-06-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn a_window_event_has_whole_counts_and_nulls() {
        let event = ThresholdEvent {
            provider: None,
            scope: Scope::Global,
            scope_id: None,
            enforcement: Enforcement::Shadow,
            kind: LimitKind::Requests,
            reset_duration: "1m".into(),
            threshold: 1.0,
            used: 100,
            max: 100,
            period_start: None,
            ..budget_event()
        };
        let text = event.to_json().unwrap();
        let got: Value = serde_json::from_str(&text).unwrap();
        let fields = [
            "event_id",
            "type",
            "at",
            "config_id",
            "model_name",
            "provider",
            "scope",
            "scope_id",
            "enforcement",
            "kind",
            "reset_duration",
            "threshold",
            "used",
            "max",
            "period_start",
        ];
        assert_eq!(got.as_object().unwrap().len(), fields.len(), "{text}");
        let at: Vec<usize> = fields
            .iter()
            .map(|f| text.find(&format!("\"{f}\":")).expect(f))
            .collect();
        assert!(at.is_sorted(), "every field, always, in this order: {text}");
        assert_eq!(got["provider"], Value::Null);
        assert_eq!(got["scope"], "global");
        assert_eq!(got["scope_id"], Value::Null);
        assert_eq!(got["enforcement"], "shadow");
        assert_eq!(got["kind"], "requests");
        assert_eq!(got["period_start"], Value::Null);
        // Whole numbers stay integers in the text, not `100.0`.
        assert!(text.contains("\"used\":100,\"max\":100,"), "{text}");
        assert!(text.contains("\"threshold\":1.0"), "{text}");
    }

    #[test]
    fn tokens_are_whole_numbers_too() {
        let event = ThresholdEvent {
            kind: LimitKind::Tokens,
            used: 850_000,
            max: 1_000_000,
            period_start: None,
            ..budget_event()
        };
        let got: Value = serde_json::from_str(&event.to_json().unwrap()).unwrap();
        assert_eq!(
            (got["used"].as_u64(), got["max"].as_u64()),
            (Some(850_000), Some(1_000_000))
        );
        assert_eq!(got["kind"], "tokens");
    }
}
