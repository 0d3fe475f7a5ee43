//! User sessions: a short-lived credential an app mints for one user and a few scopes, for a
//! mobile client to call the wallet routes itself (Stripe's ephemeral keys do the same).
//!
//! A session is `hbs_` + base64url(payload) + `.` + base64url(HMAC-SHA256(session key, payload)),
//! the payload a small JSON object. The session key (`DATA/keys/session.key`, owner-only) is
//! shared by a fleet like the signing keys, so any host accepts any host's sessions; nothing is
//! stored per session.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::signature::AuthError;

/// The session key's file in the data directory.
pub const SESSION_KEY_FILE: &str = "keys/session.key";

/// The longest a session lives: a mobile client asks its app backend for a new one.
pub const SESSION_TTL_S_MAX: u64 = 3_600;

/// The prefix of every session.
pub const SESSION_PREFIX: &str = "hbs_";

/// The longest session accepted; a real one is about 150 bytes.
const SESSION_BYTES_MAX: usize = 512;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub enum Scope {
    /// Read the wallet and its flow.
    #[serde(rename = "wallet:read")]
    WalletRead,
    /// Withdraw (and send red packets) from the wallet.
    #[serde(rename = "wallet:withdraw")]
    WalletWithdraw,
    /// Give back tokens the client kept.
    #[serde(rename = "tokens:restore")]
    TokensRestore,
    /// Grab group red packets.
    #[serde(rename = "packets:grab")]
    PacketsGrab,
}

impl Scope {
    /// The scope's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Scope::WalletRead => "wallet:read",
            Scope::WalletWithdraw => "wallet:withdraw",
            Scope::TokensRestore => "tokens:restore",
            Scope::PacketsGrab => "packets:grab",
        }
    }
}

/// What a session says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The app that minted it.
    #[serde(rename = "a")]
    pub app_id: i64,
    /// The one user it acts for.
    #[serde(rename = "u")]
    pub act_id: i64,
    /// What it may do.
    #[serde(rename = "s")]
    pub scopes: Vec<Scope>,
    /// When it stops working.
    #[serde(rename = "e")]
    pub expires_at_ms: u64,
}

/// Mints and checks sessions with one key.
pub struct SessionKey {
    key: [u8; 32],
}

impl SessionKey {
    /// A session key of these bytes.
    pub fn new(key: [u8; 32]) -> SessionKey {
        SessionKey { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// The credential for `session`.
    pub fn mint(&self, session: &Session) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).expect("sessions serialize"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{SESSION_PREFIX}{payload}.{tag}")
    }

    /// The session a credential holds, if this key made it (compared in constant time) and it
    /// has not expired at `now_ms`.
    pub fn check(&self, credential: &str, now_ms: u64) -> Result<Session, AuthError> {
        let bad = |message: &str| AuthError::BadBearer(message.to_owned());
        if credential.len() > SESSION_BYTES_MAX {
            return Err(bad("too long"));
        }
        let body = credential.strip_prefix(SESSION_PREFIX).ok_or_else(|| bad("not a session"))?;
        let (payload, tag) = body.split_once('.').ok_or_else(|| bad("not a session"))?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad("not a session"))?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| bad("session signature does not match"))?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad("not a session"))?;
        let session: Session = serde_json::from_slice(&bytes).map_err(|_| bad("not a session"))?;
        if session.expires_at_ms <= now_ms {
            return Err(AuthError::Expired);
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session { app_id: 1128, act_id: 7, scopes: vec![Scope::WalletRead], expires_at_ms: 10_000 }
    }

    // Proves a session checks with its key until it expires, and an altered or foreign one never.
    #[test]
    fn sessions_check_only_unaltered_and_in_time() {
        let key = SessionKey::new([7; 32]);
        let credential = key.mint(&session());
        assert_eq!(key.check(&credential, 9_999).unwrap(), session());
        assert_eq!(key.check(&credential, 10_000), Err(AuthError::Expired));
        assert!(SessionKey::new([8; 32]).check(&credential, 0).is_err(), "another key's session");
        let (payload, tag) = credential.split_once('.').unwrap();
        let mut other = session();
        other.act_id = 8;
        let forged_payload = key.mint(&other);
        let forged = format!("{}.{tag}", forged_payload.split_once('.').unwrap().0);
        assert!(key.check(&forged, 0).is_err(), "another user's payload with this tag");
        assert!(key.check(&format!("{payload}.{tag}x"), 0).is_err());
        assert!(key.check("hbs_", 0).is_err());
    }
}
