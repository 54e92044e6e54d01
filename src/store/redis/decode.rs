//! Turning Redis replies into tollgate's types.

use crate::store::{StoreError, WriteError, Written};
use redis::Value;
use std::time::Duration;

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("expected an integer")),
        other => Err(corrupt(format_args!("expected an integer, got {other:?}"))),
    }
}

pub(super) fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

/// Decodes the `{1, version, epoch} | {0, reason, id?}` answer of the config scripts.
pub(super) fn write_result(reply: Vec<Value>, timeout: Duration) -> Result<Written, WriteError> {
    let field = |i: usize| reply.get(i).ok_or_else(|| corrupt("short write answer"));
    match reply.first().map(int).transpose()? {
        Some(1) => Ok(Written {
            version: int(field(1)?)? as u64,
            epoch: text(field(2)?)?,
        }),
        Some(0) => match reply.get(1).map(text).transpose()?.as_deref() {
            Some("missing") => Err(WriteError::NotFound),
            Some("stale") => Err(WriteError::Stale),
            Some("epoch") => Err(WriteError::EpochChanged),
            Some("expired") => Err(StoreError::Timeout(timeout).into()),
            Some("seeding") => Err(StoreError::Unavailable(
                "a replica is restoring configs that Redis lost; retry in a few seconds".into(),
            )
            .into()),
            Some("conflict") => Err(WriteError::Conflict(
                reply.get(2).map(text).transpose()?.unwrap_or_default(),
            )),
            other => Err(corrupt(format_args!("unknown write answer {other:?}")).into()),
        },
        _ => Err(corrupt("malformed write answer").into()),
    }
}
