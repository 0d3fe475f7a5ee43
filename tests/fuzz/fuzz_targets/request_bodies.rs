//! Every HTTP request body type through the decoder the routes use, `hongbao::api::body::decode`
//! (415 unless `application/json`, 400 unless one JSON object the type takes). The first byte
//! picks the type (its value modulo 9) and the `Content-Type` (the quotient, modulo 4); the rest
//! is the body. Any input must decode or be refused with 400 or 415, never panic, and nothing but
//! a JSON object is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

use hongbao::api::body;
use hongbao::api::{SessionBody, VerifyBody};
use hongbao::api::named_user::IdentityBody;
use hongbao::grant::{GrantBatchRequest, GrantRequest};
use hongbao::packet::{GrabBody, SendBody};
use hongbao::wallet::{RestoreBody, WithdrawalBody};

const CONTENT_TYPES: [Option<&str>; 4] =
    [Some("application/json"), Some("Application/JSON; charset=utf-8"), None, Some("text/plain")];

fn decode<T: serde::de::DeserializeOwned>(content_type: Option<&str>, bytes: &[u8]) {
    match body::decode::<T>(content_type, bytes) {
        Ok(_) => assert!(bytes.trim_ascii_start().starts_with(b"{"), "a body that is not a JSON object was accepted"),
        Err(error) => assert!(matches!(error.status, 400 | 415), "status {} for a body", error.status),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(selector / 9) % CONTENT_TYPES.len()];
    match selector % 9 {
        0 => decode::<GrantRequest>(content_type, bytes),
        1 => decode::<GrantBatchRequest>(content_type, bytes),
        2 => decode::<WithdrawalBody>(content_type, bytes),
        3 => decode::<RestoreBody>(content_type, bytes),
        4 => decode::<VerifyBody>(content_type, bytes),
        5 => decode::<SendBody>(content_type, bytes),
        6 => decode::<GrabBody>(content_type, bytes),
        7 => decode::<IdentityBody>(content_type, bytes),
        _ => decode::<SessionBody>(content_type, bytes),
    }
});
