//! The JSON body of a check answer.

use crate::limits::{CompiledConfig, LimitKind};
use crate::model::{Scope, nanos_to_dollars};
use crate::store::LimitOutcome;
use serde::{Deserialize, Serialize};
use std::ops::Deref;
use utoipa::ToSchema;

/// The answer of `POST /v1/check`, as documented. Answers are written by `write_answer`
/// (with limits) and `CheckResponse` (without); the tests parse every kind into this
/// type, which refuses unknown fields, so the document cannot drift from them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckAnswer {
    pub allowed: bool,
    /// Why it was denied; null when allowed.
    pub reason: Option<DenyReason>,
    /// When to retry (denied only).
    pub retry_after_ms: Option<i64>,
    /// Every limit of every matching config; empty when none matched.
    pub limits: Vec<LimitAnswer>,
    /// Limits of shadow configs that would have refused this check (they never refuse;
    /// the check was decided by the others). Absent when none did.
    #[serde(default)]
    #[schema(nullable = false)]
    pub shadow_denied: Option<Vec<LimitAnswer>>,
    /// When the check consumed (the store's clock), to pass back in `/v1/usage`.
    #[serde(default)]
    #[schema(nullable = false)]
    pub reserved_at_ms: Option<i64>,
    /// Present only when the store failed and `--on-store-error` decided (with `local`:
    /// this replica, against its share of each limit; `limits` is then empty).
    #[serde(default)]
    #[schema(nullable = false)]
    pub fallback: Option<FallbackAnswer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    RequestLimited,
    TokenLimited,
    BudgetExceeded,
    /// The store failed and `--on-store-error deny` decided (or `local` could not: its
    /// journal is full, or it never counted the replicas).
    StoreUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKindAnswer {
    Requests,
    Tokens,
    Budget,
}

/// One limit of a matching config, with its counts after this check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitAnswer {
    pub config_id: String,
    pub scope: crate::model::Scope,
    pub scope_id: Option<String>,
    pub model_name: String,
    pub provider: Option<String>,
    pub kind: LimitKindAnswer,
    /// The budget's id (budgets only).
    #[serde(default)]
    #[schema(nullable = false)]
    pub budget_id: Option<String>,
    pub reset_duration: String,
    /// Requests, tokens, or dollars for a budget.
    pub max: f64,
    pub used: f64,
    pub remaining: f64,
    pub reset_after_ms: i64,
    /// The config's enforcement on this replica: `shadow` limits never refuse.
    pub enforcement: crate::model::config::Enforcement,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackAnswer {
    pub policy: FallbackPolicy,
    /// What failed.
    pub error: String,
}

/// The `--on-store-error` policy that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackPolicy {
    /// Let through, uncounted.
    Allow,
    /// Refused.
    Deny,
    /// Decided by this replica against its share of each limit `(max − used) / N`; what
    /// it admits is charged to the store once it answers again.
    Local,
}

/// An answer without limits: no config matched, or the store failed. (Answers with
/// limits are written by `write_answer`.)
#[derive(Debug, Serialize)]
pub struct CheckResponse {
    pub allowed: bool,
    pub reason: Option<&'static str>,
    pub retry_after_ms: Option<i64>,
    /// Always empty here.
    pub limits: [(); 0],
    /// Present only when the store failed and `--on-store-error` decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

#[derive(Debug, Serialize)]
pub struct Fallback {
    pub policy: &'static str,
    pub error: String,
}

/// Each limit's fixed fields in a check answer, as JSON: an object without its closing
/// brace, for the answer to append the counts. Serialized at the first check that shows
/// the config, not per check (it was 11% of tollgate's CPU), and not for configs never
/// checked (with a million configs, most: ~600 bytes each). This module's slot type in
/// `CompiledConfig::cache`: private, so only this file fills it.
struct AnswerHeads {
    heads: Box<[String]>,
    /// Their total length, to size an answer in one step.
    bytes: usize,
}

/// The fixed fields of one limit in a check answer.
#[derive(Serialize)]
struct AnswerHead<'a> {
    config_id: &'a str,
    scope: Scope,
    scope_id: Option<&'a str>,
    model_name: &'a str,
    provider: Option<&'a str>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_id: Option<&'a str>,
    reset_duration: &'a str,
    max: serde_json::Value,
    enforcement: &'static str,
}

/// `config`'s answer heads, one per limit in order (serialized once per compiled config).
fn answer_heads(config: &CompiledConfig) -> &AnswerHeads {
    config.cache().answer().get_or_init(|| {
        let c = &config.config;
        let heads = config.limits().iter().map(|spec| {
            let head = AnswerHead {
                config_id: &c.id,
                scope: c.scope,
                scope_id: c.scope_id.as_deref(),
                model_name: &c.model_name,
                provider: c.provider.as_deref(),
                kind: spec.kind.as_str(),
                budget_id: spec.budget_id(),
                reset_duration: config.reset_duration(spec),
                max: quantity(spec.kind, spec.max),
                enforcement: config.enforcement.as_str(),
            };
            let mut json = serde_json::to_string(&head).expect("plain data serializes");
            json.pop(); // the closing brace
            json
        });
        let heads: Box<[String]> = heads.collect();
        let bytes = heads.iter().map(String::len).sum();
        AnswerHeads { heads, bytes }
    })
}

/// A count as the client sees it: whole requests/tokens, or dollars for budgets.
#[inline]
fn quantity(kind: LimitKind, raw: i64) -> serde_json::Value {
    match kind {
        LimitKind::Budget => serde_json::Value::from(nanos_to_dollars(raw)),
        _ => serde_json::Value::from(raw),
    }
}

/// The answer with its limits, in the shape of `CheckResponse`: every limit of every
/// config in order, with `outcomes` (the store's, in the same order), then those at
/// positions `shadow_denied` again under `shadow_denied`. Each limit's fixed fields come
/// pre-serialized (`answer_heads`); only the counts are written per check.
/// `reserved_at_ms`: when the check consumed (the store's clock), for the gateway to
/// pass back in its usage report.
pub fn write_answer<C: Deref<Target = CompiledConfig>>(
    allowed: bool,
    reason: Option<&str>,
    retry_after_ms: Option<i64>,
    reserved_at_ms: Option<i64>,
    configs: &[C],
    outcomes: &[LimitOutcome],
    shadow_denied: &[usize],
) -> Vec<u8> {
    use std::io::Write;
    let mut capacity = 64;
    for c in configs {
        capacity += answer_heads(c).bytes + 64 * c.limits().len();
    }
    let mut out = Vec::with_capacity(capacity);
    let _ = write!(out, "{{\"allowed\":{allowed},\"reason\":");
    match reason {
        Some(r) => {
            let _ = write!(out, "\"{r}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"retry_after_ms\":");
    match retry_after_ms {
        Some(ms) => write_int(&mut out, ms),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"limits\":[");
    let mut rest = outcomes.iter();
    let mut first = true;
    'configs: for c in configs {
        for (head, spec) in answer_heads(c).heads.iter().zip(c.limits()) {
            let Some(o) = rest.next() else {
                break 'configs;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            write_limit(&mut out, head, spec, o);
        }
    }
    out.push(b']');
    if !shadow_denied.is_empty() {
        out.extend_from_slice(b",\"shadow_denied\":[");
        let mut n = 0;
        let mut at = 0;
        for c in configs {
            for (head, spec) in answer_heads(c).heads.iter().zip(c.limits()) {
                if let (true, Some(o)) = (shadow_denied.contains(&at), outcomes.get(at)) {
                    if n > 0 {
                        out.push(b',');
                    }
                    n += 1;
                    write_limit(&mut out, head, spec, o);
                }
                at += 1;
            }
        }
        out.push(b']');
    }
    if let Some(at) = reserved_at_ms {
        out.extend_from_slice(b",\"reserved_at_ms\":");
        write_int(&mut out, at);
    }
    out.push(b'}');
    out
}

/// One limit's entry: its head, then its counts after the check.
#[inline]
fn write_limit(out: &mut Vec<u8>, head: &str, spec: &crate::limits::LimitSpec, o: &LimitOutcome) {
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b",\"used\":");
    write_quantity(out, spec.kind, o.used);
    out.extend_from_slice(b",\"remaining\":");
    write_quantity(out, spec.kind, (spec.max - o.used).max(0));
    out.extend_from_slice(b",\"reset_after_ms\":");
    write_int(out, o.reset_after_ms);
    out.push(b'}');
}

/// An integer in decimal: `itoa`, without `fmt`'s formatter and its dynamic calls.
#[inline]
fn write_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `quantity(kind, raw)` as JSON, written without building the `Value`.
#[inline]
fn write_quantity(out: &mut Vec<u8>, kind: LimitKind, raw: i64) {
    match kind {
        LimitKind::Budget => {
            let _ = serde_json::to_writer(&mut *out, &nanos_to_dollars(raw));
        }
        _ => write_int(out, raw),
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
