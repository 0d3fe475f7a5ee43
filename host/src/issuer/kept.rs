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

    /// The app id, key id and signature, if the fields give back the rest of exactly `text`.
    fn signed(text: &str, fields: &TokenFields<'_>) -> Option<KeptToken> {
        if text.is_empty() || text.len() > super::TOKEN_TEXT_BYTES_MAX {
            return None;
        }
        let envelope = pb::SignedToken::decode(URL_SAFE_NO_PAD.decode(text).ok()?.as_slice()).ok()?;
        let signature: &[u8; SIGNATURE_BYTES] = envelope.signature.as_slice().try_into().ok()?;
        let app_id = pb::RedPacketToken::decode(envelope.token.as_slice()).ok()?.app_id;
        let mut bytes = Vec::with_capacity(1 + 8 + SIGNATURE_BYTES + envelope.key_id.len());
        bytes.push(SIGNED);
        bytes.extend_from_slice(&app_id.to_le_bytes());
        bytes.extend_from_slice(signature);
        bytes.extend_from_slice(envelope.key_id.as_bytes());
        (rebuilt(&bytes[1..], fields)? == text).then(|| KeptToken(bytes.into_boxed_slice()))
    }

    /// Whether only the app, key id and signature are kept.
    pub fn is_signed(&self) -> bool {
        self.0.first() == Some(&SIGNED)
    }

    /// The token's text, for the grant with `fields` (the ones it was kept with).
    pub fn text(&self, fields: &TokenFields<'_>) -> String {
        match self.0.split_first() {
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
    let token = token_of(fields, app_id, key_id)?;
    let envelope =
        pb::SignedToken { token: token.encode_to_vec(), signature: signature.to_vec(), key_id: key_id.into() };
    Some(URL_SAFE_NO_PAD.encode(envelope.encode_to_vec()))
}

/// The token the issuer mints for a grant with these fields (see `grant::mint`), if its order
/// number has the grant's shape.
fn token_of(fields: &TokenFields<'_>, app_id: i64, key_id: &str) -> Option<pb::RedPacketToken> {
    let mut parts = fields.order_no.split('_');
    let (_user, _scene, rain_id, award_type, stage) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(pb::RedPacketToken {
        app_id,
        act_id: fields.act_id,
        activity_id: fields.activity_id.into(),
        scene_id: fields.scene_id.into(),
        amount_cents: fields.amount_cents,
        order_no: fields.order_no.into(),
        open_time_ms: i64::try_from(fields.open_time_ms).ok()?,
        rain_id: rain_id.parse().ok()?,
        status: i64::from(TokenStatus::Pending.code()),
        key_id: key_id.into(),
        award_type: award_type.into(),
        stage: stage.parse().ok()?,
    })
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
        // text given back still verifies, whatever the user, scene, rain, award type and stage.
        #[test]
        fn minted_tokens_come_back_exactly(
            act_id in 1i64..i64::MAX,
            scene in "[A-Za-z0-9-]{1,64}",
            rain_id in 0i32..i32::MAX,
            award in "[A-Za-z0-9-]{1,64}",
            stage in any::<u32>(),
        ) {
            let issuer = Issuer::ephemeral();
            let (text, order_no) = minted(&issuer, act_id, &scene, rain_id, &award, stage);
            let fields = fields(act_id, &scene, &order_no);
            let kept = KeptToken::keep(&text, &fields);
            prop_assert!(kept.is_signed());
            prop_assert_eq!(kept.text(&fields), text.clone());
            prop_assert!(issuer.verify(&kept.text(&fields)).is_ok());
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
