//! The `Authorization` header (`HONGBAO-HMAC-SHA256 app_id=…,key_id=…,timestamp=…,nonce=…,
//! signature=…` or `Bearer …`), through what the access layer runs on it:
//! `hongbao::access::signature::Authorization::parse`, then for a signed header the timestamp
//! and signature checks (against the README's worked example: its secret and request), and for a
//! bearer credential `SessionKey::check`. The first byte picks one of two inputs:
//!
//! - even: the rest is the header. It must never panic. hyper hands the routes `to_str()` of the
//!   header, which refuses bytes that are not visible ASCII, so only UTF-8 is tried.
//! - odd: the rest is a session's JSON (`{"a":…,"u":…,"s":[…],"e":…}`); when it decodes, the
//!   fuzz key mints it, and the credential must check back to the same session before it
//!   expires, and fail with any one byte changed (the second byte says which, the third how).
//!   libFuzzer cannot forge the HMAC, so this is how it reaches the session decoder past it.
#![no_main]

use hongbao::access::session::{Session, SessionKey};
use hongbao::access::signature::Authorization;
use libfuzzer_sys::fuzz_target;

/// The README's worked example ("Who may call what"): this secret signs this request.
const EXAMPLE_SECRET: &[u8] = b"hbsk_example_secret";
const EXAMPLE_TIMESTAMP_S: u64 = 1_767_225_600;
const EXAMPLE_BODY: &[u8] = br#"{"app_id":1128,"act_id":555001,"activity_id":"spring-2027","scene_id":"eve-rain","award_type":"cash","rain_id":1,"stage":0}"#;

/// Sessions here are minted and checked with this key, at this time.
const SESSION_KEY: [u8; 32] = [7; 32];
const NOW_MS: u64 = EXAMPLE_TIMESTAMP_S * 1000;

fn header(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else { return };
    match Authorization::parse(header) {
        Ok(Authorization::Signed(signed)) => {
            let _ = signed.check_timestamp(EXAMPLE_TIMESTAMP_S);
            let _ = signed.verify(EXAMPLE_SECRET, "POST", "/v1/grants", EXAMPLE_BODY);
        }
        Ok(Authorization::Bearer(credential)) => {
            let _ = SessionKey::new(SESSION_KEY).check(&credential, NOW_MS);
        }
        Ok(Authorization::Basic { user, password }) => {
            assert!(!user.contains(':'), "the user name ends at the first colon");
            let _ = password.len();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

fn minted(index: u8, flip: u8, json: &[u8]) {
    let Ok(session) = serde_json::from_slice::<Session>(json) else { return };
    // `POST /v1/sessions` mints sessions of the three scopes at most, each once; a credential
    // of more may pass the length bound `check` holds to.
    if session.scopes.len() > 3 {
        return;
    }
    let key = SessionKey::new(SESSION_KEY);
    let credential = key.mint(&session);
    let checked = key.check(&credential, NOW_MS);
    if session.expires_at_ms > NOW_MS {
        assert_eq!(checked, Ok(session), "a session this key minted does not check");
    } else {
        assert!(checked.is_err(), "an expired session checked");
    }
    let mut altered = credential.into_bytes();
    let index = usize::from(index) % altered.len();
    altered[index] ^= flip;
    if flip != 0
        && let Ok(altered) = String::from_utf8(altered)
    {
        assert!(key.check(&altered, NOW_MS).is_err(), "an altered session checked");
    }
}

fuzz_target!(|data: &[u8]| {
    match data {
        [mode, rest @ ..] if mode % 2 == 0 => header(rest),
        [_, index, flip, rest @ ..] => minted(*index, *flip, rest),
        _ => {}
    }
});
