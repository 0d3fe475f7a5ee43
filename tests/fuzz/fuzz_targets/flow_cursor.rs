//! The wallet flow's `cursor` query parameter through `hongbao::wallet::decode_cursor`: any text
//! decodes to a position or is refused as a bad request, never panics, and a position decoded
//! from a cursor encodes back to a cursor naming the same position.
#![no_main]

use libfuzzer_sys::fuzz_target;

use hongbao::wallet::{WalletError, decode_cursor, encode_cursor};

fuzz_target!(|data: &[u8]| {
    let Ok(cursor) = std::str::from_utf8(data) else { return };
    match decode_cursor(cursor) {
        Ok(position) => {
            let again = decode_cursor(&encode_cursor(&position)).expect("an encoded cursor decodes");
            assert_eq!(again, position);
        }
        Err(error) => assert!(matches!(error, WalletError::BadRequest(_)), "{error:?}"),
    }
});
