//! Every HTTP request body type through the decoder the routes use: the first byte picks the
//! type, the rest is the body. Any input must decode or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use hongbao::api::VerifyBody;
use hongbao::grant::{GrantBatchRequest, GrantRequest};
use hongbao::wallet::{RestoreBody, WithdrawalBody};

/// The routes' decoder for a body of type `T`.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) {
    let _ = serde_json::from_slice::<T>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 5 {
        0 => decode::<GrantRequest>(body),
        1 => decode::<GrantBatchRequest>(body),
        2 => decode::<WithdrawalBody>(body),
        3 => decode::<RestoreBody>(body),
        _ => decode::<VerifyBody>(body),
    }
});
