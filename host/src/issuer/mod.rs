//! The token issuer: every grant mints one signed protobuf token.
//!
//! A token ([`pb::RedPacketToken`]) carries everything needed to credit the grant later, and is
//! signed with ed25519 so that a client's copy can be trusted when the server's copy is lost
//! (see `POST /v1/wallets/{act_id}/tokens:restore`). The wire form that clients hold is
//! `base64url(SignedToken)` without padding; the `.proto` lives in `sdk/proto/`.

pub mod kept;
mod keys;
pub mod watch;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use prost::Message as _;

pub(crate) use keys::write_owner_only;
pub use keys::{KeyError, retire_key, rotate_key};

/// Generated from `sdk/proto/hongbao/token/v1/token.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/hongbao.token.v1.rs"));
}

/// Signatures cover this prefix and the encoded token, so that a hongbao signature can never be
/// mistaken for a signature over some other message made with the same key.
const SIGNATURE_DOMAIN: &[u8] = b"hongbao.token.v1\0";

/// A token string longer than this is refused before decoding: a real token is about 200
/// characters, and the bound keeps a hostile request from making the decoder allocate.
pub const TOKEN_TEXT_BYTES_MAX: usize = 2048;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not base64url, or not a `SignedToken`/`RedPacketToken` protobuf.
    #[error("token is not well formed: {0}")]
    Malformed(&'static str),
    /// The key id is not one of this host's keys.
    #[error("token is signed with unknown key `{0}`")]
    UnknownKey(String),
    /// The signature does not match the token bytes: forged or altered.
    #[error("token signature does not verify")]
    BadSignature,
    /// The token is signed by a key the operators retired (`hongbao keys retire`): its tokens
    /// are not trusted any more.
    #[error("token is signed with retired key `{0}`")]
    RetiredKey(String),
}

/// A token whose signature has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The decoded token.
    pub token: pb::RedPacketToken,
    /// The exact text the client holds (`base64url(SignedToken)`).
    pub text: String,
}

/// A public key as published at `GET /v1/keys`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PublicKey {
    /// Names the key inside tokens.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: &'static str,
    /// The 32-byte public key, base64url without padding.
    pub public_key: String,
    /// Whether new tokens are signed with this key.
    pub active: bool,
    /// Whether operators retired the key: its tokens no longer verify.
    pub retired: bool,
}

/// Signs new tokens with the active key and verifies tokens signed by any known key.
pub struct Issuer {
    active_key_id: String,
    signing_key: SigningKey,
    verifying_keys: BTreeMap<String, VerifyingKey>,
    /// Keys whose tokens are refused (`DATA/keys/RETIRED`), read again when the file changes.
    retired: arc_swap::ArcSwap<std::collections::BTreeSet<String>>,
}

impl Issuer {
    /// Loads the keys in `DATA/keys`, creating the first one (owner-only permissions) on first
    /// start.
    pub fn open(data_dir: &Path) -> Result<Issuer, KeyError> {
        let ring = keys::load_or_create(&data_dir.join("keys"))?;
        let issuer = Issuer::from_keys(ring.active_key_id, ring.signing_keys);
        issuer.reload_retired(data_dir)?;
        Ok(issuer)
    }

    /// Reads `DATA/keys/RETIRED` again.
    pub fn reload_retired(&self, data_dir: &Path) -> Result<(), KeyError> {
        let retired = keys::load_retired(&data_dir.join("keys"))?;
        if **self.retired.load() != retired {
            tracing::warn!(retired = ?retired, "retired signing keys: their tokens are refused");
            self.retired.store(std::sync::Arc::new(retired));
        }
        Ok(())
    }

    /// Builds an issuer from keys in memory (used by tests and benchmarks).
    pub fn from_keys(active_key_id: String, signing_keys: BTreeMap<String, SigningKey>) -> Issuer {
        let signing_key = signing_keys[&active_key_id].clone();
        let verifying_keys = signing_keys.iter().map(|(id, key)| (id.clone(), key.verifying_key())).collect();
        Issuer { active_key_id, signing_key, verifying_keys, retired: Default::default() }
    }

    /// An issuer with one fresh random key, for tests and benchmarks.
    pub fn ephemeral() -> Issuer {
        let key = keys::generate_key();
        let key_id = keys::key_id(&key.verifying_key());
        Issuer::from_keys(key_id.clone(), BTreeMap::from([(key_id, key)]))
    }

    /// The key id stamped on new tokens.
    pub fn active_key_id(&self) -> &str {
        &self.active_key_id
    }

    /// Stamps the active key id on `token`, encodes and signs it, and returns the text a client
    /// holds.
    pub fn mint(&self, token: &mut pb::RedPacketToken) -> String {
        token.key_id.clear();
        token.key_id.push_str(&self.active_key_id);
        let token_bytes = token.encode_to_vec();
        let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + token_bytes.len());
        message.extend_from_slice(SIGNATURE_DOMAIN);
        message.extend_from_slice(&token_bytes);
        let signature = self.signing_key.sign(&message);
        let envelope = pb::SignedToken {
            token: token_bytes,
            signature: signature.to_bytes().to_vec(),
            key_id: self.active_key_id.clone(),
        };
        URL_SAFE_NO_PAD.encode(envelope.encode_to_vec())
    }

    /// Decodes `text` and checks its signature against the key it names.
    pub fn verify(&self, text: &str) -> Result<VerifiedToken, TokenError> {
        let envelope = decode_envelope(text)?;
        let key = self
            .verifying_keys
            .get(&envelope.key_id)
            .ok_or_else(|| TokenError::UnknownKey(truncate(&envelope.key_id)))?;
        let signature = Signature::from_slice(&envelope.signature).map_err(|_| TokenError::BadSignature)?;
        let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + envelope.token.len());
        message.extend_from_slice(SIGNATURE_DOMAIN);
        message.extend_from_slice(&envelope.token);
        key.verify_strict(&message, &signature).map_err(|_| TokenError::BadSignature)?;
        let token = pb::RedPacketToken::decode(envelope.token.as_slice())
            .map_err(|_| TokenError::Malformed("token bytes are not a RedPacketToken"))?;
        // The envelope's key id is covered by nothing, so it must agree with the signed one.
        if token.key_id != envelope.key_id {
            return Err(TokenError::BadSignature);
        }
        if self.retired.load().contains(&token.key_id) {
            return Err(TokenError::RetiredKey(truncate(&token.key_id)));
        }
        Ok(VerifiedToken { token, text: text.to_owned() })
    }

    /// The public keys, for `GET /v1/keys`.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.verifying_keys
            .iter()
            .map(|(key_id, key)| PublicKey {
                key_id: key_id.clone(),
                algorithm: "ed25519",
                public_key: URL_SAFE_NO_PAD.encode(key.to_bytes()),
                active: *key_id == self.active_key_id,
                retired: self.retired.load().contains(key_id),
            })
            .collect()
    }
}

/// Decodes a token without checking its signature: for `hongbao token inspect` and for
/// diagnostics, never for deciding to pay.
pub fn decode_unverified(text: &str) -> Result<(pb::SignedToken, pb::RedPacketToken), TokenError> {
    let envelope = decode_envelope(text)?;
    let token = pb::RedPacketToken::decode(envelope.token.as_slice())
        .map_err(|_| TokenError::Malformed("token bytes are not a RedPacketToken"))?;
    Ok((envelope, token))
}

fn decode_envelope(text: &str) -> Result<pb::SignedToken, TokenError> {
    if text.len() > TOKEN_TEXT_BYTES_MAX {
        return Err(TokenError::Malformed("token is longer than 2048 bytes"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| TokenError::Malformed("token is not base64url without padding"))?;
    pb::SignedToken::decode(bytes.as_slice()).map_err(|_| TokenError::Malformed("token is not a SignedToken"))
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::RedPacketToken {
        pb::RedPacketToken {
            app_id: 1128,
            act_id: 42,
            activity_id: "spring".into(),
            scene_id: "eve-rain".into(),
            amount_cents: 888,
            order_no: "42_eve-rain_1_cash_0".into(),
            open_time_ms: 1_700_000_000_000,
            rain_id: 1,
            status: 1,
            key_id: String::new(),
            award_type: "cash".into(),
            stage: 0,
        }
    }

    // Proves a minted token verifies and decodes to what was signed, key id included.
    #[test]
    fn minted_token_verifies() {
        let issuer = Issuer::ephemeral();
        let mut token = sample();
        let text = issuer.mint(&mut token);
        let verified = issuer.verify(&text).unwrap();
        assert_eq!(verified.token, token);
        assert_eq!(verified.token.key_id, issuer.active_key_id());
    }

    // Proves that changing any byte of the signed token, or signing with another key, is refused.
    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let issuer = Issuer::ephemeral();
        let text = issuer.mint(&mut sample());
        let (mut envelope, mut token) = decode_unverified(&text).unwrap();
        token.amount_cents = 88_800;
        envelope.token = token.encode_to_vec();
        let altered = URL_SAFE_NO_PAD.encode(envelope.encode_to_vec());
        assert_eq!(issuer.verify(&altered), Err(TokenError::BadSignature));

        let stranger = Issuer::ephemeral();
        let foreign = stranger.mint(&mut sample());
        assert!(matches!(issuer.verify(&foreign), Err(TokenError::UnknownKey(_))));
        assert!(matches!(issuer.verify("not a token!"), Err(TokenError::Malformed(_))));
    }
}

#[cfg(test)]
mod decoder_properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Proves the token decoder, which reads bytes from outside (clients restoring tokens),
        // never panics and never accepts what this issuer did not sign, whatever the input.
        #[test]
        fn arbitrary_text_never_panics_or_verifies(text in ".{0,400}") {
            let issuer = Issuer::ephemeral();
            prop_assert!(issuer.verify(&text).is_err());
            let _ = decode_unverified(&text);
        }

        // The same over arbitrary bytes wrapped as base64url, so the protobuf decoders run.
        #[test]
        fn arbitrary_envelopes_never_panic_or_verify(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let issuer = Issuer::ephemeral();
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(issuer.verify(&text).is_err());
            let _ = decode_unverified(&text);
        }

        // Flipping any one byte of a real token's envelope makes it fail verification.
        #[test]
        fn any_single_byte_change_is_refused(index in 0usize..10_000, flip in 1u8..=255) {
            let issuer = Issuer::ephemeral();
            let text = issuer.mint(&mut pb::RedPacketToken { act_id: 7, amount_cents: 88, order_no: "7_s_1_cash_0".into(), ..Default::default() });
            let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
            let index = index % bytes.len();
            bytes[index] ^= flip;
            prop_assert!(issuer.verify(&URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        }
    }
}
