//! A grant's record as Redis keeps it: one string,
//!
//! ```text
//! STATUS SEQ | ACTID | SCENE | CENTS | RECORD
//! ```
//!
//! written without spaces: the status is one digit (1, 2 or 8) at offset 0, which a script
//! changes in place with `SETRANGE`; the seq, actID, scene and cents are what scripts need
//! without decoding the record (scene ids are letters, digits and `-`, so `|` ends them); the
//! rest is the protobuf [`GrantRecord`] with its token kept by the app, key id and signature
//! ([`crate::issuer::kept`]) in field 13 instead of its text in field 9, and without what the
//! header already says: when the token is kept by signature and the order number begins
//! `ACTID_SCENE_` (as the grant path makes them), the scene, actID and cents are left out and
//! the order number is kept as its rest, in field 14. Records stored with those fields (earlier
//! versions, and any other record) read the same. Only then: a host of an earlier version,
//! which knows no field 14, finds no order number to rebuild the token from and refuses the
//! record as corrupt, where a record left without its fields but its token text would read as
//! a grant of 0 cents to user 0.
//!
//! The bench's records are ≈ 210 bytes, 344 with their key (`MEMORY USAGE`; 376 before the
//! header's fields were left out); the hash this replaced (seven fields, one of them longer
//! than the 64 bytes a compact hash allows) cost 1,024 (BENCHMARKS.md, "The Redis store's
//! records as strings"). The grant script writes the
//! header, because it assigns the seq; [`record_bytes`] makes the rest.

use prost::Message as _;
use redis::Value;

use super::unavailable;
use crate::issuer::kept::KeptToken;
use crate::store::{GrantRecord, StoreError, TokenStatus};

/// Fields 13 and 14 of the stored record, after [`GrantRecord`]'s own: the kept token, when
/// the record's fields give its text back, and the order number after its `ACTID_SCENE_`, when
/// it is kept that way (field 2 then empty). Written after the record's bytes, read from the
/// same bytes (protobuf skips the fields a message does not know).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredExtras {
    #[prost(bytes = "vec", tag = "13")]
    kept_token: Vec<u8>,
    #[prost(string, optional, tag = "14")]
    order_tail: Option<String>,
}

/// The order number's part after `ACTID_SCENE_`, when it begins so.
fn order_tail<'a>(order_no: &'a str, act_id: i64, scene_id: &str) -> Option<&'a str> {
    use std::io::Write as _;
    // An i64's longest text, `-9223372036854775808`, is 20 bytes: written on the stack.
    let mut digits = [0_u8; 20];
    let mut unwritten = &mut digits[..];
    write!(unwritten, "{act_id}").ok()?;
    let written = 20 - unwritten.len();
    let act_id = std::str::from_utf8(&digits[..written]).ok()?;
    order_no.strip_prefix(act_id)?.strip_prefix('_')?.strip_prefix(scene_id)?.strip_prefix('_')
}

/// The protobuf part of `record`'s stored form: its status, seq and queue id left out (the
/// header and the queue hold them) and what the header repeats, its token kept by signature
/// where the fields give it back.
pub(super) fn record_bytes(record: &GrantRecord) -> Vec<u8> {
    let kept = KeptToken::keep(&record.token, &record.token_fields());
    let tail = if kept.is_signed() { order_tail(&record.order_no, record.act_id, &record.scene_id) } else { None };
    let stored = match tail {
        Some(_) => GrantRecord {
            activity_id: record.activity_id.clone(),
            open_time_ms: record.open_time_ms,
            bill_copy: record.bill_copy.clone(),
            app_id: record.app_id,
            ..GrantRecord::default()
        },
        None => GrantRecord {
            status: 0,
            seq: 0,
            queue_id: String::new(),
            token: if kept.is_signed() { String::new() } else { record.token.clone() },
            ..record.clone()
        },
    };
    let mut bytes = stored.encode_to_vec();
    let extras = StoredExtras {
        kept_token: if kept.is_signed() { kept.as_bytes().to_vec() } else { Vec::new() },
        order_tail: tail.map(str::to_owned),
    };
    extras.encode(&mut bytes).expect("a Vec grows");
    bytes
}

/// The header's actID, scene and cents: the record's own, repeated for scripts. Records from
/// before the scene and cents were in the header have an empty scene and the cents `-` there
/// (`record.lua`), and both in the protobuf.
fn header_fields<'a>(mut fields: impl Iterator<Item = &'a [u8]>) -> Option<(i64, &'a str, Option<i64>)> {
    let act_id = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let scene_id = std::str::from_utf8(fields.next()?).ok()?;
    let cents = fields.next()?;
    let cents = if cents == b"-" { None } else { Some(std::str::from_utf8(cents).ok()?.parse().ok()?) };
    Some((act_id, scene_id, cents))
}

/// The record stored as `value`; its status is `status` when given (a script that just changed
/// it), else the header's.
pub(super) fn decode(value: &[u8], status: Option<u32>) -> Result<GrantRecord, StoreError> {
    let corrupt = |what: &str| unavailable(format!("corrupt grant record: {what}"));
    let (&status_digit, rest) = value.split_first().ok_or_else(|| corrupt("empty"))?;
    let mut fields = rest.splitn(5, |&b| b == b'|');
    let seq = fields.next().and_then(|seq| std::str::from_utf8(seq).ok()?.parse::<u64>().ok());
    let seq = seq.ok_or_else(|| corrupt("no seq"))?;
    let (act_id, scene_id, amount_cents) = header_fields(&mut fields).ok_or_else(|| corrupt("bad header"))?;
    let protobuf = fields.next().ok_or_else(|| corrupt("header cut short"))?;
    let mut record = GrantRecord::decode(protobuf).map_err(|error| corrupt(&error.to_string()))?;
    let extras = StoredExtras::decode(protobuf).map_err(|error| corrupt(&error.to_string()))?;
    // Earlier versions stored these in the protobuf too, with the same values.
    record.act_id = act_id;
    if !scene_id.is_empty() {
        scene_id.clone_into(&mut record.scene_id);
    }
    if let Some(cents) = amount_cents {
        record.amount_cents = cents;
    }
    if let Some(tail) = extras.order_tail {
        record.order_no = format!("{act_id}_{}_{tail}", record.scene_id);
    }
    if !extras.kept_token.is_empty() {
        record.token = KeptToken::try_text_of_bytes(&extras.kept_token, &record.token_fields())
            .ok_or_else(|| corrupt("its kept token does not fit its fields"))?;
    }
    record.status = match status {
        Some(status) => status,
        None => u32::from(status_digit.wrapping_sub(b'0')),
    };
    if TokenStatus::from_code(record.status).is_none() {
        return Err(corrupt("unknown status"));
    }
    record.seq = seq;
    Ok(record)
}

/// Decodes a stored record as Redis answered it.
pub(super) fn decode_value(value: Option<&Value>) -> Result<GrantRecord, StoreError> {
    match value {
        Some(Value::BulkString(value)) => decode(value, None),
        other => Err(unavailable(format!("grant record missing: {other:?}"))),
    }
}

/// Decodes a script's row `[queue id, stored record, status?]` (the status when the script set
/// it); the queue id is kept when it is one.
pub(super) fn decode_row(row: &[Value]) -> Result<GrantRecord, StoreError> {
    let Some(Value::BulkString(value)) = row.get(1) else {
        return Err(unavailable(format!("grant record missing: {:?}", row.get(1))));
    };
    let status = match row.get(2) {
        None | Some(Value::Nil) => None,
        status => Some(super::reply::value_u64(status)? as u32),
    };
    let mut record = decode(value, status)?;
    if let Some(Value::BulkString(id)) = row.first() {
        record.queue_id = String::from_utf8_lossy(id).into_owned();
    }
    Ok(record)
}

/// The header the grant script writes, for tests that store a record by hand.
#[cfg(test)]
pub(super) fn header(record: &GrantRecord) -> Vec<u8> {
    format!("{}{}|{}|{}|{}|", record.status, record.seq, record.act_id, record.scene_id, record.amount_cents)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::{Issuer, pb};

    fn record(token: String) -> GrantRecord {
        GrantRecord {
            activity_id: "spring-2027".into(),
            order_no: crate::grant::order_no(4242, "lucky-rain", 7, "1", 2),
            scene_id: "lucky-rain".into(),
            act_id: 4242,
            amount_cents: 88,
            open_time_ms: 1_800_000_000_123,
            status: TokenStatus::Processing.code(),
            seq: 77,
            token,
            bill_copy: "新年快乐 | happy new year".into(),
            app_id: 1128,
            queue_id: String::new(),
        }
    }

    fn signed_token(record: &GrantRecord) -> String {
        let issuer = Issuer::ephemeral();
        let mut token = pb::RedPacketToken {
            app_id: record.app_id,
            act_id: record.act_id,
            activity_id: record.activity_id.clone(),
            scene_id: record.scene_id.clone(),
            amount_cents: record.amount_cents,
            order_no: record.order_no.clone(),
            open_time_ms: record.open_time_ms as i64,
            rain_id: 7,
            status: 1,
            key_id: String::new(),
            award_type: "1".into(),
            stage: 2,
        };
        issuer.mint(&mut token)
    }

    fn stored(record: &GrantRecord) -> Vec<u8> {
        let mut value = header(record);
        value.extend(record_bytes(record));
        value
    }

    #[test]
    fn an_order_numbers_tail_follows_its_act_id_and_scene() {
        assert_eq!(order_tail("42_rain_3_cash_1", 42, "rain"), Some("3_cash_1"));
        assert_eq!(order_tail("42_rain_3_cash_1", 4, "rain"), None, "4 is only the start of 42");
        assert_eq!(order_tail("42_rain_3_cash_1", 42, "rai"), None);
        assert_eq!(order_tail("42_rainy_3", 42, "rain"), None);
        assert_eq!(order_tail("-7_s_x", -7, "s"), Some("x"));
        let longest = format!("{}_s_x", i64::MIN);
        assert_eq!(order_tail(&longest, i64::MIN, "s"), Some("x"));
    }

    #[test]
    fn a_signed_token_is_kept_by_its_signature_and_comes_back() {
        let mut original = record(String::new());
        original.token = signed_token(&original);
        let bytes = record_bytes(&original);
        assert!(bytes.len() + 100 < original.encode_to_vec().len(), "{} bytes", bytes.len());
        assert_eq!(decode(&stored(&original), None).unwrap(), original);
    }

    /// The protobuf part as versions before the header's fields were left out stored it.
    fn earlier_record_bytes(record: &GrantRecord) -> Vec<u8> {
        let kept = KeptToken::keep(&record.token, &record.token_fields());
        let stored = GrantRecord { status: 0, seq: 0, token: String::new(), ..record.clone() };
        let mut bytes = stored.encode_to_vec();
        StoredExtras { kept_token: kept.as_bytes().to_vec(), order_tail: None }.encode(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn what_the_header_says_is_not_stored_again_and_earlier_records_read_the_same() {
        let mut original = record(String::new());
        original.token = signed_token(&original);
        let (now, before) = (record_bytes(&original), earlier_record_bytes(&original));
        // The scene twice (field and order number), the actID twice, the cents.
        assert!(now.len() + 30 <= before.len(), "{} bytes, {} before", now.len(), before.len());
        assert_eq!(decode(&stored(&original), None).unwrap(), original);
        let mut earlier = header(&original);
        earlier.extend(before);
        assert_eq!(decode(&earlier, None).unwrap(), original);
    }

    // Proves a record is left without its header's fields only when a host of an earlier
    // version would refuse it: its token kept by signature and its order number's tail kept
    // apart (that host finds no order number). Any other record keeps every field, so that host
    // reads it whole rather than as 0 cents to user 0.
    #[test]
    fn a_record_an_earlier_version_could_misread_keeps_its_fields() {
        let mut signed = record(String::new());
        signed.token = signed_token(&signed);
        let lean = GrantRecord::decode(record_bytes(&signed).as_slice()).unwrap();
        assert_eq!(
            (lean.act_id, lean.amount_cents, lean.order_no.as_str()),
            (0, 0, ""),
            "as an earlier version reads it"
        );
        let earlier_reads = KeptToken::try_text_of_bytes(
            &StoredExtras::decode(record_bytes(&signed).as_slice()).unwrap().kept_token,
            &lean.token_fields(),
        );
        assert_eq!(earlier_reads, None, "an earlier version cannot rebuild its token: corrupt");
        for token in ["", "not-a-token"] {
            let original = record(token.into());
            let read = GrantRecord::decode(record_bytes(&original).as_slice()).unwrap();
            assert_eq!(
                (read.act_id, read.scene_id.as_str(), read.amount_cents, read.order_no.as_str(), read.token.as_str()),
                (4242, "lucky-rain", 88, original.order_no.as_str(), token)
            );
        }
    }

    #[test]
    fn an_order_number_of_another_shape_is_kept_whole() {
        for order_no in ["ext-1234", "4242_lucky", "4242_lucky-rain", "4242_lucky-rain_", "4243_lucky-rain_7", ""] {
            let original = GrantRecord { order_no: order_no.into(), ..record(String::new()) };
            assert_eq!(decode(&stored(&original), None).unwrap(), original, "{order_no}");
        }
    }

    #[test]
    fn any_other_token_is_kept_as_it_is() {
        for token in ["", "not-a-token", "AAAA"] {
            let original = record(token.into());
            assert_eq!(decode(&stored(&original), None).unwrap(), original);
        }
    }

    #[test]
    fn a_status_given_wins_over_the_header_and_the_queue_id_is_kept() {
        let original = record(String::new());
        let row = [
            Value::BulkString(b"1-2".to_vec()),
            Value::BulkString(stored(&original)),
            Value::BulkString(b"8".to_vec()),
        ];
        let read = decode_row(&row).unwrap();
        assert_eq!((read.status, read.queue_id.as_str(), read.seq), (8, "1-2", 77));
    }

    #[test]
    fn a_corrupt_value_is_an_error_not_a_panic() {
        let mut signed = record(String::new());
        signed.token = signed_token(&signed);
        // The kept token is the last field: cutting it short breaks the protobuf.
        let good = stored(&signed);
        for bad in [&b""[..], b"1", b"1x|", b"177|4242|", b"9|0|1|s|1|", &good[..good.len() - 3]] {
            assert!(decode(bad, None).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
