//! One user across apps (seed 001 §4.1): each app names its users its own way (`app_user_id`),
//! and hongbao maps every (app, app_user_id) to the one user id money is keyed by (`act_id`).
//! When two apps know the same phone number, their users get the same act_id: the phone wins.
//!
//! # Rules
//!
//! - The same (app, app_user_id) always answers the same act_id (until the merge rule below
//!   re-points it, which only happens to an act_id that holds nothing).
//! - A new (app, app_user_id) whose phone number is already bound gets that number's act_id.
//! - A new (app, app_user_id) with no known phone gets a fresh act_id from hongbao's own range,
//!   [`IDENTITY_ACT_ID_BASE`] and up, from a durable counter (the embedded journal's highest
//!   act_id, or a PostgreSQL sequence a fleet shares): never handed out twice. Apps that pass
//!   act_ids directly use numbers below it.
//! - **Merge rule.** An existing (app, app_user_id) bound to act_id A that binds a phone number
//!   already bound to another act_id B is re-pointed to B if A holds nothing (ledger balance 0,
//!   no ledger entries, no tokens in the token store); otherwise the bind is refused with
//!   [`IdentityError::Conflict`] and nothing changes: joining two act_ids that hold money would
//!   move money to another owner without a ledger entry. A phone number bound to nobody yet is
//!   simply bound to A.
//!
//! Phone numbers are never stored: only HMAC-SHA256 under the 32-byte key in
//! [`IDENTITY_KEY_FILE`] (created owner-only on first start, shared by a fleet like the other
//! keys) of the normalized number ([`normalize_phone`]).
//!
//! Storage follows the ledger: `DATA/identities.log` ([`embedded`]) beside the embedded ledger,
//! or tables in the PostgreSQL ledger's database ([`postgres`]).

pub mod embedded;
pub mod postgres;

use std::path::Path;

use hmac::Mac as _;

use crate::app::App;
use crate::issuer::KeyError;
use crate::ledger::{Ledger, LedgerError, wallet_account};
use crate::store::StoreError;

pub use embedded::EmbeddedIdentities;
pub use postgres::PostgresIdentities;

/// The first act_id hongbao allocates itself. Apps that pass act_ids directly use numbers below
/// it (their own user ids), so the two ranges never meet.
pub const IDENTITY_ACT_ID_BASE: i64 = 1_000_000_000_000;

/// The key phone numbers are hashed under, in the data directory.
pub const IDENTITY_KEY_FILE: &str = "keys/identity.key";

/// The key's length.
const KEY_BYTES: usize = 32;

/// The longest `app_user_id`: an app's own ids (numbers, UUIDs, e-mail-like handles) fit.
pub const APP_USER_ID_BYTES_MAX: usize = 128;

/// The fewest digits of a phone number: short numbers of small countries.
pub const PHONE_DIGITS_MIN: usize = 6;

/// The most digits of a phone number: E.164 allows 15; 20 leaves room for extensions.
pub const PHONE_DIGITS_MAX: usize = 20;

/// How often a bind starts over when another request changed the binding between its steps;
/// each retry means another writer made progress, so a few always suffice.
const BIND_ATTEMPTS_MAX: usize = 5;

/// Why an identity could not be bound or resolved; each has a stable code and HTTP status,
/// mapped in [`crate::api::ApiError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A field is out of its domain (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The phone number belongs to another act_id and this user's act_id holds money (409
    /// `identity_conflict`); nothing changed.
    #[error(
        "the user is act_id `{act_id}`, which holds money or tokens, and the phone number is bound to act_id \
         `{phone_act_id}`; two act_ids that hold money are never joined"
    )]
    Conflict {
        /// The act_id the (app, app_user_id) is bound to.
        act_id: i64,
        /// The act_id the phone number is bound to.
        phone_act_id: i64,
    },
    /// The storage (or the ledger or token store asked for the merge rule) failed; nothing
    /// changed or the change is durable; retry (503 `unavailable`).
    #[error("identity storage unavailable: {0}")]
    Unavailable(String),
}

impl From<LedgerError> for IdentityError {
    fn from(error: LedgerError) -> Self {
        IdentityError::Unavailable(error.to_string())
    }
}

impl From<StoreError> for IdentityError {
    fn from(error: StoreError) -> Self {
        IdentityError::Unavailable(error.to_string())
    }
}

/// The answer to `POST /v1/identities`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Binding {
    /// The user id money is keyed by.
    pub act_id: i64,
    /// The app.
    pub app_id: i64,
    /// The app's name for the user.
    pub app_user_id: String,
    /// Whether this (app, app_user_id) was bound by this request (false: it was known).
    pub created: bool,
    /// Whether a phone number is bound to `act_id` (this request's or an earlier one).
    pub phone_bound: bool,
}

/// A phone number's keyed hash: what is stored instead of the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhoneHash(pub [u8; 32]);

/// What one atomic bind step of the storage found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The act_id the (app, app_user_id) is bound to now.
    pub act_id: i64,
    /// Whether the step bound the (app, app_user_id).
    pub created: bool,
    /// The act_id the phone number is bound to now, when one was given: `act_id` unless it was
    /// bound to another before.
    pub phone_act_id: Option<i64>,
}

/// The storage: the embedded journal or PostgreSQL tables, chosen like the ledger.
#[derive(Clone)]
pub enum IdentityStorage {
    /// `DATA/identities.log`, the bindings in memory.
    Embedded(EmbeddedIdentities),
    /// Tables in the ledger's PostgreSQL database.
    Postgres(PostgresIdentities),
}

/// Forwards a call to whichever storage this is; both have every method with the same
/// arguments. `dispatch!(memory self, ..)` is for reads the embedded storage answers from
/// memory, at once, and only PostgreSQL's is awaited.
macro_rules! dispatch {
    (memory $self:ident, $storage:ident => $call:expr) => {
        match $self {
            IdentityStorage::Embedded($storage) => $call,
            IdentityStorage::Postgres($storage) => $call.await,
        }
    };
    ($self:ident, $storage:ident => $call:expr) => {
        match $self {
            IdentityStorage::Embedded($storage) => $call.await,
            IdentityStorage::Postgres($storage) => $call.await,
        }
    };
}

impl IdentityStorage {
    /// The act_id of (app, app_user_id), if bound.
    pub async fn lookup(&self, app_id: i64, app_user_id: &str) -> Result<Option<i64>, IdentityError> {
        dispatch!(memory self, s => s.lookup(app_id, app_user_id))
    }

    /// In one atomic step: binds (app, app_user_id) if new (to the phone's act_id when the phone
    /// is bound, else to a fresh one), and binds the phone to the user's act_id if the phone is
    /// bound to nobody. Never re-points anything.
    pub async fn bind(
        &self,
        app_id: i64,
        app_user_id: &str,
        phone: Option<&PhoneHash>,
    ) -> Result<Bound, IdentityError> {
        dispatch!(self, s => s.bind(app_id, app_user_id, phone))
    }

    /// Re-points (app, app_user_id) from `from` to `to` if it is still bound to `from`; returns
    /// whether it did.
    pub async fn repoint(&self, app_id: i64, app_user_id: &str, from: i64, to: i64) -> Result<bool, IdentityError> {
        dispatch!(self, s => s.repoint(app_id, app_user_id, from, to))
    }

    /// Whether any phone number is bound to `act_id`.
    pub async fn has_phone(&self, act_id: i64) -> Result<bool, IdentityError> {
        dispatch!(memory self, s => s.has_phone(act_id))
    }
}

/// The identities: the storage and the phone key.
pub struct Identities {
    key: [u8; KEY_BYTES],
    /// Where the bindings are kept.
    pub storage: IdentityStorage,
}

impl Identities {
    /// Loads (creating on first start) the phone key and opens the storage that goes with
    /// `ledger`: the journal in `data_dir` beside the embedded ledger, tables in PostgreSQL's.
    pub async fn open(data_dir: &Path, ledger: &Ledger) -> anyhow::Result<Identities> {
        use anyhow::Context as _;
        let key = load_or_create_key(data_dir).context("loading the identity key")?;
        let storage = match ledger {
            Ledger::Embedded(_) => IdentityStorage::Embedded(EmbeddedIdentities::open(data_dir)?),
            Ledger::Postgres(ledger) => IdentityStorage::Postgres(PostgresIdentities::open(ledger).await?),
        };
        Ok(Identities { key, storage })
    }

    /// A keyed hash (HMAC-SHA256 under this host's identity key, shared by the fleet) of `text`
    /// in `domain`, for ids nobody without the key can work out (group red packets' ids).
    pub fn keyed_hash(&self, domain: &str, text: &str) -> [u8; 32] {
        phone_hash(&self.key, &format!("{domain}\0{text}"))
    }

    /// The keyed hash of a normalized phone number.
    pub fn hash_phone(&self, normalized: &str) -> PhoneHash {
        PhoneHash(phone_hash(&self.key, normalized))
    }
}

fn phone_hash(key: &[u8; KEY_BYTES], normalized: &str) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(normalized.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Reads `DATA/keys/identity.key`, creating it (owner-only) on first start. Hosts of a fleet
/// starting together on a shared key directory must end with one key, so the file is created by
/// linking a finished temporary file into place, which fails if another host was first; the
/// loser reads the winner's key.
fn load_or_create_key(data_dir: &Path) -> Result<[u8; KEY_BYTES], KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    crate::access::apps::create_owner_only_dir(&data_dir.join("keys"))?;
    let path = data_dir.join(IDENTITY_KEY_FILE);
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
        move |source| KeyError::Io { path: path.to_path_buf(), source }
    }
    if !path.exists() {
        let mut key = [0_u8; KEY_BYTES];
        getrandom::fill(&mut key).expect("the operating system has no random source");
        let temporary = path.with_extension(format!("tmp-{}-{}", std::process::id(), fastrand::u64(..)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io(&temporary))?;
        file.write_all(&key).and_then(|()| file.sync_all()).map_err(io(&temporary))?;
        let linked = std::fs::hard_link(&temporary, &path);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))?;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(KeyError::Io { path, source }),
        }
    }
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    bytes.try_into().map_err(|_| KeyError::Invalid { path, message: format!("not {KEY_BYTES} bytes") })
}

/// The normalized form of a phone number, the text that is hashed: spaces and dashes are
/// dropped, then an optional leading `+`, then 6 to 20 ASCII digits; the `+` is dropped too, so
/// `+86 138-0000-0000` and `8613800000000` are one number.
pub fn normalize_phone(phone: &str) -> Result<String, IdentityError> {
    let compact: String = phone.chars().filter(|c| *c != ' ' && *c != '-').collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    let valid = (PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit());
    if !valid {
        // The number is not repeated: it is personal data, and logs keep error messages.
        return Err(IdentityError::BadRequest(format!(
            "phone must be an optional `+` then {PHONE_DIGITS_MIN} to {PHONE_DIGITS_MAX} digits (spaces and dashes \
             are ignored)"
        )));
    }
    Ok(digits.to_owned())
}

/// Checks an app's name for a user: `[A-Za-z0-9._:@-]{1,128}`.
pub fn check_app_user_id(app_user_id: &str) -> Result<(), IdentityError> {
    let valid = (1..=APP_USER_ID_BYTES_MAX).contains(&app_user_id.len())
        && app_user_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._:@-".contains(&byte));
    if !valid {
        return Err(IdentityError::BadRequest(format!(
            "app_user_id `{}` must match [A-Za-z0-9._:@-]{{1,{APP_USER_ID_BYTES_MAX}}}",
            app_user_id.chars().take(APP_USER_ID_BYTES_MAX + 8).collect::<String>()
        )));
    }
    Ok(())
}

/// `POST /v1/identities`: binds `app_user_id` of `app_id` to an act_id, with the phone number
/// when one is given, under the rules of the [module docs](self).
pub async fn bind(app: &App, app_id: i64, app_user_id: &str, phone: Option<&str>) -> Result<Binding, IdentityError> {
    check_app_user_id(app_user_id)?;
    let phone = phone.map(normalize_phone).transpose()?;
    let phone = phone.as_deref().map(|normalized| app.identities.hash_phone(normalized));
    let storage = &app.identities.storage;
    for _ in 0..BIND_ATTEMPTS_MAX {
        let bound = storage.bind(app_id, app_user_id, phone.as_ref()).await?;
        let (act_id, created) = match bound.phone_act_id {
            Some(phone_act_id) if phone_act_id != bound.act_id => {
                if !holds_nothing(app, bound.act_id).await? {
                    return Err(IdentityError::Conflict { act_id: bound.act_id, phone_act_id });
                }
                if !storage.repoint(app_id, app_user_id, bound.act_id, phone_act_id).await? {
                    // Another request re-pointed this user meanwhile: decide again from what is.
                    continue;
                }
                tracing::info!(
                    app_id,
                    from = bound.act_id,
                    to = phone_act_id,
                    "identity re-pointed to its phone's act_id"
                );
                (phone_act_id, false)
            }
            _ => (bound.act_id, bound.created),
        };
        let phone_bound = phone.is_some() || storage.has_phone(act_id).await?;
        return Ok(Binding { act_id, app_id, app_user_id: app_user_id.to_owned(), created, phone_bound });
    }
    Err(IdentityError::Unavailable(format!("the binding kept changing over {BIND_ATTEMPTS_MAX} attempts; retry")))
}

/// Whether `act_id` holds nothing: a zero ledger balance, no ledger entries, no tokens in the
/// token store. Only such an act_id may be left behind by the merge rule.
async fn holds_nothing(app: &App, act_id: i64) -> Result<bool, IdentityError> {
    let balance = app.ledger.balance(&wallet_account(act_id)).await?;
    if balance != 0 || !app.ledger.user_entries(act_id, None, 1).await?.is_empty() {
        return Ok(false);
    }
    Ok(app.store.user_tokens(act_id, None, 1).await?.is_empty())
}

/// The act_id a request means: `act_id` as given, or `app_user_id` of `app_id` resolved
/// (bound without a phone number if new); exactly one of the two.
pub async fn resolve_act_id(
    app: &App,
    app_id: i64,
    act_id: Option<i64>,
    app_user_id: Option<&str>,
) -> Result<i64, IdentityError> {
    match (act_id, app_user_id) {
        (Some(act_id), None) if act_id > 0 && act_id < i64::MAX => Ok(act_id),
        (Some(act_id), None) => {
            Err(IdentityError::BadRequest(format!("act_id `{act_id}` must be positive and below 2^63-1")))
        }
        (None, Some(app_user_id)) => {
            check_app_user_id(app_user_id)?;
            if let Some(act_id) = app.identities.storage.lookup(app_id, app_user_id).await? {
                return Ok(act_id);
            }
            Ok(bind(app, app_id, app_user_id, None).await?.act_id)
        }
        (Some(_), Some(_)) => {
            Err(IdentityError::BadRequest("name the user by `act_id` or by `app_user_id`, not both".into()))
        }
        (None, None) => Err(IdentityError::BadRequest("name the user by `act_id` or by `app_user_id`".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    // Proves phone numbers normalize to their digits (spaces, dashes and the `+` dropped) and
    // that anything else, or too few or too many digits, is refused without echoing the number.
    #[test]
    fn phone_numbers_normalize_to_their_digits() {
        assert_eq!(normalize_phone("+8613800000000").unwrap(), "8613800000000");
        assert_eq!(normalize_phone("+86 138-0000-0000").unwrap(), "8613800000000");
        assert_eq!(normalize_phone("8613800000000").unwrap(), "8613800000000");
        assert_eq!(normalize_phone("123456").unwrap(), "123456");
        assert_eq!(normalize_phone(&"9".repeat(20)).unwrap(), "9".repeat(20));
        for bad in
            ["", "+", "12345", &"9".repeat(21), "++8613800000000", "86138000o0000", "861380000000+", "１２３４５６７"]
        {
            let error = normalize_phone(bad).unwrap_err();
            assert!(matches!(error, IdentityError::BadRequest(_)), "{bad}");
            if bad.len() > 3 {
                assert!(!error.to_string().contains(bad), "{error}");
            }
        }
    }

    // Proves app_user_id takes exactly `[A-Za-z0-9._:@-]{1,128}`.
    #[test]
    fn app_user_ids_are_checked() {
        for good in ["u1", "a.b_c", "wx:oABC-12@x", &"a".repeat(128)] {
            assert!(check_app_user_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a+b", &"a".repeat(129)] {
            assert!(check_app_user_id(bad).is_err(), "{bad}");
        }
    }

    // Proves the key is created owner-only once and read back the same, and that the hash is
    // keyed: another key hashes the same number differently.
    #[test]
    fn the_phone_key_is_created_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        assert_eq!(load_or_create_key(dir.path()).unwrap(), key);
        let mode = std::fs::metadata(dir.path().join(IDENTITY_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        let other_key = load_or_create_key(other.path()).unwrap();
        assert_ne!(phone_hash(&key, "8613800000000"), phone_hash(&other_key, "8613800000000"));
        assert_eq!(phone_hash(&key, "8613800000000"), phone_hash(&key, "8613800000000"));
    }
}
