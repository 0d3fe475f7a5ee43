//! A grant's token kept in memory by what its grant's own fields cannot give back.
//!
//! The token a client holds is `base64url(SignedToken)` of about 270 characters, and every part
//! of the signed `RedPacketToken` but three is a field the store's record and the ledger's entry
//! keep anyway (the activity, scene, user, amount, order number, open time; the rain, award type
//! and stage are parts of the order number). What is left is the app, the key id and the 64-byte
//! signature: [`KeptToken`] keeps those, and [`KeptToken::text`] encodes the same bytes again
//! (protobuf encoding is deterministic and ed25519 signatures are kept, not remade, so no key is
//! needed). A token is kept that way only when encoding it again from the fields gives back
//! exactly its text, checked when it is kept; any other text (a token from another encoder, an
//! empty one, a group red packet's definition) is kept as it is.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;

use super::pb;
use crate::store::TokenStatus;

/// The fields of a grant that its token repeats.
#[derive(Debug, Clone, Copy)]
pub struct TokenFields<'a> {
    /// The user.
    pub act_id: i64,
    /// The activity.
    pub activity_id: &'a str,
    /// The scene.
    pub scene_id: &'a str,
    /// Cents.
    pub amount_cents: i64,
    /// `${actID}_${scene_id}_${rain_id}_${award_type}_${stage}`.
    pub order_no: &'a str,
    /// The token's open time.
    pub open_time_ms: u64,
}

/// The first byte of a kept token: what follows.
const TEXT: u8 = 0;
const SIGNED: u8 = 1;

/// Bytes of an ed25519 signature.
const SIGNATURE_BYTES: usize = 64;

/// A token as kept in memory: 16 bytes and one allocation, of about 100 bytes where the fields
/// give the rest back (see the module docs), else the text's.
#[derive(Clone, PartialEq, Eq)]
pub struct KeptToken(Box<[u8]>);

impl std::fmt::Debug for KeptToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeptToken").field(&if self.is_signed() { "signed" } else { "text" }).finish()
    }
}

impl KeptToken {
    /// Keeps `text`, the token of the grant with `fields`.
    pub fn keep(text: &str, fields: &TokenFields<'_>) -> KeptToken {
        Self::signed(text, fields).unwrap_or_else(|| Self::text_of(text))
    }

    /// Keeps `text` as it is (an empty text takes no allocation).
    pub fn text_of(text: &str) -> KeptToken {
        if text.is_empty() {
            return KeptToken(Box::default());
        }
        let mut bytes = Vec::with_capacity(1 + text.len());
        bytes.push(TEXT);
        bytes.extend_from_slice(text.as_bytes());
        KeptToken(bytes.into_boxed_slice())
    }

    /// The app id, key id and signature, if the fields give back the rest of exactly `text`:
    /// the token bytes they make are the signed ones, and the envelope is encoded as this host
    /// encodes it (the base64 engine accepts only the canonical text of its bytes, so the text
    /// comes back too).
    fn signed(text: &str, fields: &TokenFields<'_>) -> Option<KeptToken> {
        if text.is_empty() || text.len() > super::TOKEN_TEXT_BYTES_MAX {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(text).ok()?;
        let envelope = pb::SignedToken::decode(decoded.as_slice()).ok()?;
        let signature: &[u8; SIGNATURE_BYTES] = envelope.signature.as_slice().try_into().ok()?;
        let app_id = leading_app_id(&envelope.token);
        if envelope_bytes(fields, app_id, signature, &envelope.key_id)? != decoded {
            return None;
        }
        let mut bytes = Vec::with_capacity(1 + 8 + SIGNATURE_BYTES + envelope.key_id.len());
        bytes.push(SIGNED);
        bytes.extend_from_slice(&app_id.to_le_bytes());
        bytes.extend_from_slice(signature);
        bytes.extend_from_slice(envelope.key_id.as_bytes());
        Some(KeptToken(bytes.into_boxed_slice()))
    }

    /// Whether only the app, key id and signature are kept.
    pub fn is_signed(&self) -> bool {
        self.0.first() == Some(&SIGNED)
    }

    /// The token's text, for the grant with `fields` (the ones it was kept with).
    pub fn text(&self, fields: &TokenFields<'_>) -> String {
        Self::text_of_bytes(&self.0, fields)
    }

    /// The kept bytes, for a holder that packs them with others ([`KeptToken::text_of_bytes`]
    /// reads them back).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text of a token kept as `bytes` ([`KeptToken::as_bytes`]) read from outside the
    /// process (a store), for the grant with `fields`; `None` when they do not fit together.
    pub fn try_text_of_bytes(bytes: &[u8], fields: &TokenFields<'_>) -> Option<String> {
        match bytes.split_first() {
            Some((&SIGNED, rest)) => rebuilt(rest, fields),
            Some((_, text)) => std::str::from_utf8(text).ok().map(str::to_owned),
            None => Some(String::new()),
        }
    }

    /// The text of a token kept as `bytes` ([`KeptToken::as_bytes`]) for the grant with `fields`.
    pub fn text_of_bytes(bytes: &[u8], fields: &TokenFields<'_>) -> String {
        match bytes.split_first() {
            Some((&SIGNED, rest)) => rebuilt(rest, fields).expect("kept only when the fields give the token back"),
            Some((_, text)) => std::str::from_utf8(text).expect("kept from a string").to_owned(),
            None => String::new(),
        }
    }
}

/// The text of the token kept as `kept` (app id, signature, key id) for a grant with `fields`;
/// `None` when the fields cannot make a token (an order number of another shape).
fn rebuilt(kept: &[u8], fields: &TokenFields<'_>) -> Option<String> {
    let (app_id, rest) = kept.split_at_checked(8)?;
    let (signature, key_id) = rest.split_at_checked(SIGNATURE_BYTES)?;
    let app_id = i64::from_le_bytes(app_id.try_into().ok()?);
    let key_id = std::str::from_utf8(key_id).ok()?;
    Some(URL_SAFE_NO_PAD.encode(envelope_bytes(fields, app_id, signature, key_id)?))
}

/// The app id a token's bytes open with (field 1, which the encoder writes first and leaves out
/// when 0), read without decoding the rest; a wrong guess only fails the comparison after it.
fn leading_app_id(token: &[u8]) -> i64 {
    match token.split_first() {
        Some((&APP_ID_TAG, mut rest)) => prost::encoding::decode_varint(&mut rest).map_or(0, |id| id as i64),
        _ => 0,
    }
}

/// Field 1 (`app_id`) as a varint: `1 << 3 | 0`.
const APP_ID_TAG: u8 = 0x08;

/// Protobuf wire types.
const VARINT: u8 = 0;
const LENGTH_DELIMITED: u8 = 2;

/// Appends a proto3 integer field (left out when 0, as proto3 encoders do). Tags are below 16,
/// so a field's key is one byte.
fn put_varint(buf: &mut Vec<u8>, tag: u8, value: u64) {
    if value != 0 {
        buf.push(tag << 3 | VARINT);
        prost::encoding::encode_varint(value, buf);
    }
}

/// Appends a proto3 string or bytes field (left out when empty).
fn put_bytes(buf: &mut Vec<u8>, tag: u8, value: &[u8]) {
    if !value.is_empty() {
        buf.push(tag << 3 | LENGTH_DELIMITED);
        prost::encoding::encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

/// The `SignedToken` bytes the issuer makes for a grant with these fields (see `grant::mint`):
/// `RedPacketToken` and `SignedToken` encoded field by field in tag order, as prost encodes them
/// (the tests hold the two to each other), without building either message. `None` when the
/// order number has not the grant's shape.
fn envelope_bytes(fields: &TokenFields<'_>, app_id: i64, signature: &[u8], key_id: &str) -> Option<Vec<u8>> {
    let mut parts = fields.order_no.split('_');
    let (_user, _scene, rain_id, award_type, stage) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let rain_id: i32 = rain_id.parse().ok()?;
    let stage: u32 = stage.parse().ok()?;
    let open_time_ms = i64::try_from(fields.open_time_ms).ok()?;
    let strings = fields.activity_id.len() + fields.scene_id.len() + fields.order_no.len() + key_id.len();
    let mut token = Vec::with_capacity(80 + strings + award_type.len());
    put_varint(&mut token, 1, app_id as u64);
    put_varint(&mut token, 2, fields.act_id as u64);
    put_bytes(&mut token, 3, fields.activity_id.as_bytes());
    put_bytes(&mut token, 4, fields.scene_id.as_bytes());
    put_varint(&mut token, 5, fields.amount_cents as u64);
    put_bytes(&mut token, 6, fields.order_no.as_bytes());
    put_varint(&mut token, 7, open_time_ms as u64);
    // int32 is sign-extended to 64 bits on the wire.
    put_varint(&mut token, 8, i64::from(rain_id) as u64);
    put_varint(&mut token, 9, u64::from(TokenStatus::Pending.code()));
    put_bytes(&mut token, 10, key_id.as_bytes());
    put_bytes(&mut token, 11, award_type.as_bytes());
    put_varint(&mut token, 12, u64::from(stage));
    let mut envelope = Vec::with_capacity(token.len() + signature.len() + key_id.len() + 12);
    put_bytes(&mut envelope, 1, &token);
    put_bytes(&mut envelope, 2, signature);
    put_bytes(&mut envelope, 3, key_id.as_bytes());
    Some(envelope)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::issuer::Issuer;

    fn minted(issuer: &Issuer, act_id: i64, scene: &str, rain_id: i32, award: &str, stage: u32) -> (String, String) {
        let order_no = crate::grant::order_no(act_id, scene, rain_id, award, stage);
        let mut token = pb::RedPacketToken {
            app_id: 1128,
            act_id,
            activity_id: "spring".into(),
            scene_id: scene.into(),
            amount_cents: 888,
            order_no: order_no.clone(),
            open_time_ms: 1_700_000_000_000,
            rain_id,
            status: 1,
            key_id: String::new(),
            award_type: award.into(),
            stage,
        };
        (issuer.mint(&mut token), order_no)
    }

    fn fields<'a>(act_id: i64, scene: &'a str, order_no: &'a str) -> TokenFields<'a> {
        TokenFields {
            act_id,
            activity_id: "spring",
            scene_id: scene,
            amount_cents: 888,
            order_no,
            open_time_ms: 1_700_000_000_000,
        }
    }

    proptest! {
        // Proves a minted token is kept as its signature and given back exactly, and that the
        // text given back still verifies, whatever the app, user, amount, time, scene, rain,
        // award type and stage (the field-by-field encoding is held to prost's here).
        #[test]
        fn minted_tokens_come_back_exactly(
            act_id in any::<i64>(),
            app_id in any::<i64>(),
            amount_cents in any::<i64>(),
            scene in "[A-Za-z0-9-]{1,64}",
            rain_id in any::<i32>(),
            award in "[A-Za-z0-9-]{1,64}",
            stage in any::<u32>(),
            open_time_ms in 0..i64::MAX as u64,
        ) {
            let issuer = Issuer::ephemeral();
            let order_no = crate::grant::order_no(act_id, &scene, rain_id, &award, stage);
            let mut token = pb::RedPacketToken {
                app_id,
                act_id,
                activity_id: "spring".into(),
                scene_id: scene.clone(),
                amount_cents,
                order_no: order_no.clone(),
                open_time_ms: open_time_ms as i64,
                rain_id,
                status: 1,
                key_id: String::new(),
                award_type: award.clone(),
                stage,
            };
            let text = issuer.mint(&mut token);
            let fields = TokenFields { amount_cents, open_time_ms, ..fields(act_id, &scene, &order_no) };
            let kept = KeptToken::keep(&text, &fields);
            prop_assert!(kept.is_signed());
            prop_assert_eq!(kept.text(&fields), text.clone());
            prop_assert!(issuer.verify(&kept.text(&fields)).is_ok());
        }

        // Proves a token with any one character changed (another character of the alphabet, so
        // most still decode, some to the same bytes' other spellings) is given back exactly.
        #[test]
        fn altered_tokens_come_back_exactly(index in 0usize..10_000, replacement in "[A-Za-z0-9_-]") {
            let issuer = Issuer::ephemeral();
            let (text, order_no) = minted(&issuer, 7, "s", 1, "cash", 0);
            let index = index % text.len();
            let altered = format!("{}{replacement}{}", &text[..index], &text[index + 1..]);
            let fields = fields(7, "s", &order_no);
            prop_assert_eq!(KeptToken::keep(&altered, &fields).text(&fields), altered);
        }

        // Proves any text is given back exactly, whether or not it is a token of these fields.
        #[test]
        fn any_text_comes_back_exactly(text in ".{0,300}") {
            let fields = fields(7, "s", "7_s_1_cash_0");
            prop_assert_eq!(KeptToken::keep(&text, &fields).text(&fields), text);
        }
    }

    // Proves a token whose fields differ from the grant's (another amount, another open time, a
    // status the issuer does not mint) is kept as its text, not rebuilt into a different token.
    #[test]
    fn tokens_the_fields_do_not_give_back_are_kept_whole() {
        let issuer = Issuer::ephemeral();
        let (text, order_no) = minted(&issuer, 7, "s", 1, "cash", 0);
        let other_amount = TokenFields { amount_cents: 889, ..fields(7, "s", &order_no) };
        let kept = KeptToken::keep(&text, &other_amount);
        assert!(!kept.is_signed());
        assert_eq!(kept.text(&other_amount), text);
        let mut credited = pb::RedPacketToken {
            act_id: 7,
            activity_id: "spring".into(),
            scene_id: "s".into(),
            amount_cents: 888,
            order_no: order_no.clone(),
            open_time_ms: 1_700_000_000_000,
            rain_id: 1,
            status: 8,
            award_type: "cash".into(),
            ..Default::default()
        };
        let text = issuer.mint(&mut credited);
        let kept = KeptToken::keep(&text, &fields(7, "s", &order_no));
        assert!(!kept.is_signed());
        assert_eq!(kept.text(&fields(7, "s", &order_no)), text);
    }

    // Regression: a token whose order number has another shape than a grant's (a group red
    // packet's share) panicked the store's committer when it was kept; it is kept as its text.
    #[test]
    fn a_token_with_another_order_number_shape_is_kept_whole() {
        let issuer = Issuer::ephemeral();
        let mut token = pb::RedPacketToken { act_id: 7, order_no: "pk-123.4".into(), status: 1, ..Default::default() };
        let text = issuer.mint(&mut token);
        let fields = TokenFields {
            activity_id: "",
            scene_id: "",
            amount_cents: 0,
            open_time_ms: 0,
            ..fields(7, "", "pk-123.4")
        };
        let kept = KeptToken::keep(&text, &fields);
        assert!(!kept.is_signed());
        assert_eq!(kept.text(&fields), text);
    }

    // Proves the kept form is smaller than the text: the point of it.
    #[test]
    fn a_kept_token_is_a_third_of_its_text() {
        let issuer = Issuer::ephemeral();
        let (text, order_no) = minted(&issuer, 10_000_001, "rain", 1, "cash", 0);
        let kept = KeptToken::keep(&text, &fields(10_000_001, "rain", &order_no));
        assert!(kept.0.len() * 2 < text.len(), "{} bytes kept of {}", kept.0.len(), text.len());
    }
}
