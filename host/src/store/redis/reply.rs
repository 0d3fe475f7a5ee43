//! Decoding what scripts and commands answer.

use prost::Message as _;
use redis::Value;

use super::unavailable;
use crate::store::{GrantRecord, StoreError, TokenStatus};

pub(super) fn value_string(value: Option<&Value>) -> Result<String, StoreError> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).map_err(unavailable),
        Some(Value::SimpleString(text)) => Ok(text.clone()),
        Some(Value::Int(n)) => Ok(n.to_string()),
        other => Err(unavailable(format!("expected a string, got {other:?}"))),
    }
}

pub(super) fn value_u64(value: Option<&Value>) -> Result<u64, StoreError> {
    match value {
        Some(Value::Int(n)) => u64::try_from(*n).map_err(unavailable),
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).map_err(unavailable)?.parse().map_err(unavailable),
        other => Err(unavailable(format!("expected a number, got {other:?}"))),
    }
}

/// Decodes `[queue id, record, status, seq]`; the status defaults to `default` when missing.
pub(super) fn decode_row(row: &[Value], default: TokenStatus) -> Result<GrantRecord, StoreError> {
    let bytes = match row.get(1) {
        Some(Value::BulkString(bytes)) => bytes,
        other => return Err(unavailable(format!("grant record missing: {other:?}"))),
    };
    let mut record =
        GrantRecord::decode(bytes.as_slice()).map_err(|error| unavailable(format!("corrupt grant record: {error}")))?;
    record.status = match row.get(2) {
        Some(Value::Nil) | None => default.code(),
        status => value_u64(status)? as u32,
    };
    record.seq = value_u64(row.get(3))?;
    record.queue_id = match row.first() {
        Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
        _ => String::new(),
    };
    Ok(record)
}
