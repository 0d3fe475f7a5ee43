//! Decoding what scripts and commands answer.

use redis::Value;

use super::unavailable;
use crate::store::StoreError;

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
