//! What an Envoy `RateLimitRequest` asks: which match keys, what amount, which kind.

use crate::api::check::MAX_ID_LEN;
use crate::limits::MatchKey;
use crate::model::validate::MAX_COUNT_LIMIT;
use crate::settings::Settings;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

/// More descriptors than this in one request is not a gateway's request.
pub const MAX_DESCRIPTORS: usize = 64;

/// How descriptors map to a check (`--rls-*` flags).
#[derive(Debug, Clone)]
pub struct RlsOptions {
    pub model_key: String,
    pub provider_key: String,
    pub virtual_key_key: String,
    pub user_key: String,
    /// Domains whose amount is tokens recorded as used; other domains count requests.
    pub token_domains: Vec<String>,
}

impl RlsOptions {
    pub fn from_settings(s: &Settings) -> Self {
        RlsOptions {
            model_key: s.rls_model_key.clone(),
            provider_key: s.rls_provider_key.clone(),
            virtual_key_key: s.rls_virtual_key_key.clone(),
            user_key: s.rls_user_key.clone(),
            token_domains: s
                .rls_token_domains
                .iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }
}

impl Default for RlsOptions {
    fn default() -> Self {
        RlsOptions {
            model_key: "model".into(),
            provider_key: "provider".into(),
            virtual_key_key: "virtual_key".into(),
            user_key: "user".into(),
            token_domains: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Parsed<'a> {
    /// The domain is a token domain: the amount is tokens, recorded as used.
    pub tokens: bool,
    /// One per descriptor, in order; `None` for a descriptor without a model entry,
    /// which tollgate does not know and answers `OK`.
    pub keys: Vec<Option<MatchKey<'a>>>,
    /// The amount of every known descriptor (negative: a refund, `is_negative_hits`).
    pub amount: i64,
}

/// Reads a request, or says what is wrong with it (`INVALID_ARGUMENT`).
pub fn parse<'a>(req: &'a RateLimitRequest, opts: &RlsOptions) -> Result<Parsed<'a>, String> {
    if req.domain.is_empty() {
        return Err("domain must not be empty".into());
    }
    if req.descriptors.is_empty() {
        return Err("at least one descriptor is required".into());
    }
    if req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(format!("at most {MAX_DESCRIPTORS} descriptors per request"));
    }
    let tokens = opts.token_domains.contains(&req.domain);
    let mut keys = Vec::with_capacity(req.descriptors.len());
    let mut amount: Option<i64> = None;
    for (i, d) in req.descriptors.iter().enumerate() {
        let key = match_key(d, opts).map_err(|e| format!("descriptor {i}: {e}"))?;
        if key.is_some() {
            let mine = descriptor_amount(d, req.hits_addend, tokens)
                .map_err(|e| format!("descriptor {i}: {e}"))?;
            match amount {
                Some(a) if a != mine => {
                    return Err(format!(
                        "descriptor {i}: hits_addend {mine} differs from {a}; one request is one \
                         check, so its descriptors must carry the same hits_addend"
                    ));
                }
                _ => amount = Some(mine),
            }
        }
        keys.push(key);
    }
    Ok(Parsed {
        tokens,
        keys,
        amount: amount.unwrap_or(0),
    })
}

/// The match key of one descriptor; `None` without a (non-empty) model entry. Entries
/// with other keys are ignored; a known key given twice with different values is not.
fn match_key<'a>(
    d: &'a RateLimitDescriptor,
    opts: &RlsOptions,
) -> Result<Option<MatchKey<'a>>, String> {
    let mut slots: [(&str, Option<&'a str>); 4] = [
        (&opts.model_key, None),
        (&opts.provider_key, None),
        (&opts.virtual_key_key, None),
        (&opts.user_key, None),
    ];
    for e in &d.entries {
        if e.key.is_empty() {
            return Err("an entry has an empty key".into());
        }
        let Some(slot) = slots.iter_mut().find(|(k, _)| *k == e.key) else {
            continue;
        };
        if e.value.len() > MAX_ID_LEN {
            return Err(format!(
                "entry {:?} must be at most {MAX_ID_LEN} bytes",
                e.key
            ));
        }
        match slot.1 {
            Some(v) if v != e.value => {
                return Err(format!("entry {:?} is given twice, differently", e.key));
            }
            _ => slot.1 = Some(e.value.as_str()),
        }
    }
    let present = |v: Option<&'a str>| v.filter(|s| !s.is_empty());
    Ok(present(slots[0].1).map(|model| MatchKey {
        model,
        provider: present(slots[1].1),
        virtual_key: present(slots[2].1),
        user: present(slots[3].1),
    }))
}

/// The descriptor's own `hits_addend` when set (where Envoy puts a per-route one), else
/// the request's, else 1 (Envoy sends 0 for "not set").
fn descriptor_amount(d: &RateLimitDescriptor, request: u32, tokens: bool) -> Result<i64, String> {
    let n = match &d.hits_addend {
        Some(v) => v.value,
        None if request > 0 => u64::from(request),
        None => 1,
    };
    if n > MAX_COUNT_LIMIT {
        return Err(format!("hits_addend must be at most {MAX_COUNT_LIMIT}"));
    }
    if d.is_negative_hits {
        if !tokens {
            return Err("is_negative_hits is only accepted in token domains (--rls-token-domains): a request count is never refunded".into());
        }
        return Ok(-(n as i64));
    }
    Ok(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::google::protobuf::UInt64Value;

    fn descriptor(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            hits_addend: hits.map(|value| UInt64Value { value }),
            ..Default::default()
        }
    }

    fn request(domain: &str, hits: u32, ds: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: domain.into(),
            descriptors: ds,
            hits_addend: hits,
        }
    }

    #[test]
    fn entries_give_the_match_and_hits_addend_the_amount() {
        let opts = RlsOptions {
            token_domains: vec!["tok".into()],
            ..Default::default()
        };
        let req = request(
            "llm",
            0,
            vec![
                descriptor(&[("model", "gpt-4o"), ("user", "u1"), ("x", "y")], None),
                descriptor(&[("generic_key", "a")], Some(7)),
            ],
        );
        let p = parse(&req, &opts).unwrap();
        assert!(!p.tokens);
        assert_eq!(p.amount, 1, "unset everywhere: 1");
        let k = p.keys[0].unwrap();
        assert_eq!((k.model, k.user, k.provider), ("gpt-4o", Some("u1"), None));
        assert!(p.keys[1].is_none(), "no model entry: unknown, OK");

        let req = request("tok", 5, vec![descriptor(&[("model", "m")], Some(1840))]);
        let p = parse(&req, &opts).unwrap();
        assert!(p.tokens);
        assert_eq!(p.amount, 1840, "the descriptor's own hits_addend wins");
        let req = request("tok", 5, vec![descriptor(&[("model", "m")], None)]);
        assert_eq!(parse(&req, &opts).unwrap().amount, 5, "else the request's");
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let opts = RlsOptions::default();
        let long = "x".repeat(MAX_ID_LEN + 1);
        let bad = [
            request("", 0, vec![descriptor(&[("model", "m")], None)]),
            request("d", 0, vec![]),
            request("d", 0, vec![descriptor(&[("", "m")], None)]),
            request("d", 0, vec![descriptor(&[("model", &long)], None)]),
            request(
                "d",
                0,
                vec![descriptor(&[("model", "a"), ("model", "b")], None)],
            ),
            request("d", 0, vec![descriptor(&[("model", "m")], Some(u64::MAX))]),
            request(
                "d",
                0,
                vec![
                    descriptor(&[("model", "m")], Some(1)),
                    descriptor(&[("model", "m")], Some(2)),
                ],
            ),
            request("d", 0, vec![descriptor(&[("model", "m")], None); 65]),
        ];
        for req in &bad {
            assert!(parse(req, &opts).is_err(), "{req:?}");
        }
        let mut refund = descriptor(&[("model", "m")], Some(3));
        refund.is_negative_hits = true;
        assert!(parse(&request("d", 0, vec![refund.clone()]), &opts).is_err());
        let tokens = RlsOptions {
            token_domains: vec!["d".into()],
            ..Default::default()
        };
        assert_eq!(
            parse(&request("d", 0, vec![refund]), &tokens)
                .unwrap()
                .amount,
            -3
        );
    }
}
