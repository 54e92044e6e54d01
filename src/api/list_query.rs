//! The list endpoint's query: parsed as Bifrost parses it, and applied to a snapshot.

use super::error::ApiError;
use crate::limits::CompiledConfig;
use crate::model::{ModelConfig, Scope};
use std::collections::HashMap;
use std::sync::Arc;

/// The list's `scope` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeFilter {
    Any,
    Only(Scope),
    /// A value that names no scope (e.g. `team`): matches nothing, as Bifrost's
    /// `WHERE scope = ?` does (an empty page, not a 400).
    Unknown,
}

/// Query of the list endpoint, validated.
#[derive(Debug)]
pub struct ListQuery {
    pub limit: usize,
    pub offset: usize,
    pub search: Option<String>,
    pub scope: ScopeFilter,
    pub scope_id: Option<String>,
    pub provider: Option<String>,
    pub from_memory: bool,
}

/// Default page size, and the largest (Bifrost's `ClampPaginationParams`).
pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 100;

/// A non-negative integer query value; negative or non-numeric is a 400.
fn non_negative(name: &str, v: &str) -> Result<usize, ApiError> {
    let t = v.trim();
    match t.parse::<u64>() {
        Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        // All digits, just too many: as large as it gets (clamped or past the end).
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => Ok(usize::MAX),
        Err(_) => Err(ApiError::bad_request(format!(
            "{name} must be an integer >= 0 (got {v:?})"
        ))),
    }
}

impl ListQuery {
    /// As Bifrost's `ClampPaginationParams`: `limit` above 100 is 100, `0` is the default
    /// (25); only `from_memory=true` selects memory. Negative or non-numeric
    /// `limit`/`offset` stay a 400 (Bifrost's `strconv.Atoi` check).
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match non_negative("limit", v)? {
                0 => DEFAULT_LIMIT,
                n => n.min(MAX_LIMIT),
            },
        };
        let offset = match q.get("offset") {
            None => 0,
            Some(v) => non_negative("offset", v)?,
        };
        let scope = match q.get("scope").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => ScopeFilter::Any,
            Some(s) => Scope::parse(s).map_or(ScopeFilter::Unknown, ScopeFilter::Only),
        };
        let from_memory = q
            .get("from_memory")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(ListQuery {
            limit,
            offset,
            search: non_empty("search").map(|s| s.to_lowercase()),
            scope,
            scope_id: non_empty("scope_id"),
            provider: non_empty("provider"),
            from_memory,
        })
    }

    /// The page of `configs` (in list order, `len` of them) this query selects, and how
    /// many match in all. Without filters, O(offset + limit).
    pub fn page<'a>(
        &self,
        configs: impl Iterator<Item = &'a Arc<CompiledConfig>>,
        len: usize,
    ) -> (usize, Vec<Arc<CompiledConfig>>) {
        let unfiltered = self.search.is_none()
            && matches!(self.scope, ScopeFilter::Any)
            && self.scope_id.is_none()
            && self.provider.is_none();
        if unfiltered {
            let page = configs
                .skip(self.offset)
                .take(self.limit)
                .cloned()
                .collect();
            return (len, page);
        }
        let mut total = 0;
        let mut page = Vec::new();
        for c in configs.filter(|c| self.matches(&c.config)) {
            if total >= self.offset && page.len() < self.limit {
                page.push(c.clone());
            }
            total += 1;
        }
        (total, page)
    }

    pub fn matches(&self, c: &ModelConfig) -> bool {
        let scope_ok = match self.scope {
            ScopeFilter::Any => true,
            ScopeFilter::Only(s) => c.scope == s,
            ScopeFilter::Unknown => false,
        };
        scope_ok
            && self
                .search
                .as_ref()
                .is_none_or(|s| c.model_name.to_lowercase().contains(s))
            && self
                .scope_id
                .as_ref()
                .is_none_or(|s| c.scope_id.as_deref() == Some(s.as_str()))
            && self
                .provider
                .as_ref()
                .is_none_or(|p| c.provider.as_deref() == Some(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        ListQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn list_query_bounds() {
        let d = q(&[]).unwrap();
        assert_eq!((d.limit, d.offset, d.from_memory), (25, 0, false));
        assert_eq!(d.scope, ScopeFilter::Any);
        let limit = |v: &str| q(&[("limit", v)]).map(|x| x.limit);
        assert_eq!(limit("0"), Ok(25), "0 is the default");
        assert_eq!(limit("101"), Ok(100), "clamped");
        assert_eq!(limit("500"), Ok(100));
        assert_eq!(limit("99999999999999999999999"), Ok(100));
        assert_eq!(limit(" 7 "), Ok(7));
        for bad in ["abc", "-1", "1.5", "", "+"] {
            assert!(limit(bad).is_err(), "limit={bad:?}");
        }
        assert!(q(&[("offset", "-1")]).is_err());
        assert!(q(&[("offset", "x")]).is_err());
        assert_eq!(
            q(&[("limit", "100"), ("offset", "7")]).map(|x| (x.limit, x.offset)),
            Ok((100, 7))
        );
    }

    #[test]
    fn unknown_scope_matches_nothing_and_only_true_selects_memory() {
        let team = q(&[("scope", "team")]).unwrap();
        assert_eq!(team.scope, ScopeFilter::Unknown);
        let c = crate::model::validate::create_config(
            serde_json::from_value(json!({"model_name": "m"})).unwrap(),
            chrono::Utc::now(),
        )
        .unwrap();
        assert!(!team.matches(&c));
        assert!(q(&[("scope", "global")]).unwrap().matches(&c));
        assert!(q(&[("scope", "")]).unwrap().matches(&c));
        for (v, memory) in [
            ("true", true),
            ("TRUE", true),
            ("True", true),
            ("yes", false),
            ("1", false),
            ("false", false),
            ("", false),
        ] {
            assert_eq!(
                q(&[("from_memory", v)]).unwrap().from_memory,
                memory,
                "{v:?}"
            );
        }
    }
}
