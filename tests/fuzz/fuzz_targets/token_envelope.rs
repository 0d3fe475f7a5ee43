//! The token a client holds (`base64url(SignedToken)`), through what `POST /v1/tokens:verify`
//! and restores run: `Issuer::verify` and `issuer::decode_unverified`. The first byte picks one
//! of two inputs:
//!
//! - even: the rest is the client's text. It must never panic, and when it verifies it must
//!   also decode, to the same token.
//! - odd: the rest is a `RedPacketToken` protobuf that the fuzz key mints; the minted text must
//!   verify to what was signed, and flipping any one byte of its envelope (the second byte says
//!   which, the third how) must make it fail. libFuzzer cannot forge signatures, so this is how
//!   it reaches the verifier's paths past the signature check.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use hongbao::issuer::{self, Issuer, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// A throwaway key made by `hongbao serve` in an empty data directory, only for fuzzing: the
/// tokens in `corpus/token_envelope/` were minted with it by that server, so they verify here.
const FUZZ_KEY_ID: &str = "ed25519-64ed7663b1111445";
const FUZZ_KEY_SECRET: [u8; 32] = [
    0xec, 0x66, 0x62, 0xac, 0x84, 0xdb, 0xc1, 0x5b, 0xfb, 0xf4, 0x21, 0x18, 0x02, 0xed, 0xc9, 0x2a, 0x5b, 0xba, 0xe0,
    0x9f, 0x64, 0xaa, 0x14, 0xea, 0x04, 0x66, 0xaa, 0x23, 0x22, 0x1a, 0x18, 0xc6,
];

static ISSUER: LazyLock<Issuer> = LazyLock::new(|| {
    let key = SigningKey::from_bytes(&FUZZ_KEY_SECRET);
    Issuer::from_keys(FUZZ_KEY_ID.to_owned(), BTreeMap::from([(FUZZ_KEY_ID.to_owned(), key)]))
});

fn client_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let verified = ISSUER.verify(&text);
    let decoded = issuer::decode_unverified(&text);
    if let Ok(verified) = verified {
        let (_, token) = decoded.expect("a token that verifies also decodes");
        assert_eq!(verified.token, token);
    }
}

fn minted(index: u8, flip: u8, token_bytes: &[u8]) {
    let Ok(mut token) = pb::RedPacketToken::decode(token_bytes) else { return };
    let text = ISSUER.mint(&mut token);
    let verified = ISSUER.verify(&text).expect("a token this issuer minted verifies");
    assert_eq!(verified.token, token);
    if flip == 0 {
        return;
    }
    let mut envelope = URL_SAFE_NO_PAD.decode(&text).expect("minted text is base64url");
    let index = usize::from(index) % envelope.len();
    envelope[index] ^= flip;
    assert!(ISSUER.verify(&URL_SAFE_NO_PAD.encode(&envelope)).is_err(), "an altered token verified");
}

fuzz_target!(|data: &[u8]| {
    match data {
        [mode, rest @ ..] if mode % 2 == 0 => client_text(rest),
        [_, index, flip, rest @ ..] => minted(*index, *flip, rest),
        _ => {}
    }
});
