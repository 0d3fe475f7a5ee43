//! Who may call what: the layer in front of the HTTP handlers.
//!
//! Three kinds of caller, as payment APIs have them:
//!
//! - **apps** sign every request with a secret of theirs (`signature`, the credentials in
//!   `apps`), and act only in the activities they are scoped to;
//! - **users**, through a short-lived session an app mints for one act_id and a few scopes
//!   (`session`), for mobile clients;
//! - **operators**, with the admin credential (`admin`), which apps cannot use.
//!
//! Public on purpose: the signing keys, token verification and health. Every route says which
//! caller it needs ([`Need`]); [`Access::authenticate`] turns a request's `Authorization` header
//! into a [`Caller`], and [`authorize`] checks the one against the other.

pub mod admin;
pub mod apps;
pub mod client;
pub mod session;
pub mod signature;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use self::admin::AdminToken;
use self::apps::{AppEntry, Apps, AppsError, FileStamp};
use self::session::{Scope, Session, SessionKey};
use self::signature::{AuthError, Authorization, TIMESTAMP_SKEW_S};
use crate::issuer::KeyError;
use crate::store::{Store, StoreError};

/// How often a host looks whether the credentials file (and the retired signing keys) changed:
/// a revoked key stops working within this long, everywhere.
pub const APPS_RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// What of a request its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'r> {
    /// `GET`, `POST`, …
    pub method: &'r str,
    /// The path with its query, as sent.
    pub path_and_query: &'r str,
    /// The body's bytes.
    pub body: &'r [u8],
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Nobody said (public routes only).
    Anonymous,
    /// An app, by a signed request.
    App(SignedApp),
    /// A user, by a session an app minted.
    User(Session),
    /// An operator, by the admin credential.
    Admin,
}

/// The app that signed a request: the credentials it was checked against (shared, not copied:
/// the grant path takes no allocation for it) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedApp {
    apps: Arc<Apps>,
    app_id: i64,
}

impl SignedApp {
    /// The app's entry; it is in `apps` by construction.
    pub fn entry(&self) -> &AppEntry {
        &self.apps.apps[&self.app_id]
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone.
    Public,
    /// A signed app request.
    App,
    /// A signed app request (the app has authenticated its user) or a session of this user
    /// with this scope.
    User {
        /// The user whose money the route reads or moves.
        act_id: i64,
        /// What the route does with it.
        scope: Scope,
    },
    /// A signed app request, or a session with this scope; the user the route acts for is in
    /// the request's body, so the handler checks it ([`authorize`] with [`Need::User`]) once the
    /// body is read.
    AppOrSession {
        /// What the route does.
        scope: Scope,
    },
    /// The admin credential.
    Admin,
}

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// Not authenticated (401).
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// Authenticated, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The nonce could not be checked (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The credentials a host checks callers against.
pub struct Access {
    data_dir: PathBuf,
    apps: ArcSwap<Apps>,
    apps_stamp: parking_lot::Mutex<FileStamp>,
    admin: AdminToken,
    sessions: SessionKey,
    /// With nonces kept only in memory, a restarted host has forgotten the nonces of requests
    /// signed before it started: it accepts only timestamps from this second on until the
    /// window has passed.
    timestamps_from_s: Option<u64>,
}

impl Access {
    /// Loads (creating on first start) the credentials in `data_dir`. `nonces_durable`: the
    /// store remembers nonces across a restart of this host.
    pub fn open(data_dir: &Path, nonces_durable: bool, now_ms: u64) -> Result<Access, AccessOpenError> {
        let (admin, session_key) = admin::load_or_create(data_dir)?;
        let stamp = apps::stamp(&data_dir.join(apps::APPS_FILE));
        let apps = Apps::load(data_dir)?;
        Ok(Access {
            data_dir: data_dir.to_path_buf(),
            apps: ArcSwap::from_pointee(apps),
            apps_stamp: parking_lot::Mutex::new(stamp),
            admin,
            sessions: SessionKey::new(session_key),
            timestamps_from_s: (!nonces_durable).then_some(now_ms / 1000),
        })
    }

    /// Reads the credentials file again if it changed since last read; a broken file is logged
    /// and the last good credentials stay.
    pub fn reload_if_changed(&self) {
        let path = self.data_dir.join(apps::APPS_FILE);
        let stamp = apps::stamp(&path);
        let mut last = self.apps_stamp.lock();
        if *last == stamp {
            return;
        }
        match Apps::load(&self.data_dir) {
            Ok(apps) => {
                tracing::info!(apps = apps.apps.len(), "app credentials reloaded");
                self.apps.store(Arc::new(apps));
                *last = stamp;
            }
            Err(error) => tracing::error!(%error, "app credentials not reloaded; the previous ones stay"),
        }
    }

    /// Who sent a request with this `Authorization` header, method, path and query, and body.
    /// A signed request's nonce is spent only once its signature checked, so nobody can burn
    /// another app's nonces. `basic_admin`: the route takes the admin credential as HTTP Basic
    /// (the dashboard's read-only routes, for browsers).
    pub async fn authenticate(
        &self,
        store: &Store,
        header: Option<&str>,
        request: RequestParts<'_>,
        now_ms: u64,
        basic_admin: bool,
    ) -> Result<Caller, AccessError> {
        let RequestParts { method, path_and_query, body } = request;
        let Some(header) = header else { return Ok(Caller::Anonymous) };
        match Authorization::parse(header)? {
            Authorization::Bearer(credential) => self.bearer(&credential, now_ms),
            Authorization::Basic { user, password } => {
                // Browsers send Basic credentials they remember on their own, also for requests
                // another site makes them send: only read-only routes take them, so such a
                // request can move nothing, and its answer stays with the browser.
                if !basic_admin {
                    return Err(AuthError::BadBasic("only the dashboard takes Basic credentials".into()).into());
                }
                if user == signature::BASIC_ADMIN_USER && self.admin.matches(&password) {
                    Ok(Caller::Admin)
                } else {
                    Err(AuthError::BadBasic(format!("not `{}` with the admin credential", signature::BASIC_ADMIN_USER))
                        .into())
                }
            }
            Authorization::Signed(signed) => {
                let apps = self.apps.load_full();
                let unknown = || AuthError::UnknownKey { app_id: signed.app_id, key_id: signed.key_id.clone() };
                let app = apps.apps.get(&signed.app_id).ok_or_else(unknown)?;
                let secret = app.secret(&signed.key_id).ok_or_else(unknown)?;
                let now_s = now_ms / 1000;
                signed.check_timestamp(now_s)?;
                if let Some(from_s) = self.timestamps_from_s
                    && signed.timestamp < from_s
                    && now_s < from_s + TIMESTAMP_SKEW_S
                {
                    return Err(AuthError::StaleTimestamp { timestamp: signed.timestamp, now: now_s }.into());
                }
                signed.verify(secret, method, path_and_query, body)?;
                // Remembered while the timestamp is acceptable: until it is the window old.
                let ttl_ms = ((signed.timestamp + TIMESTAMP_SKEW_S + 1) * 1000).saturating_sub(now_ms);
                match store.first_use_of_nonce(signed.app_id, &signed.nonce, signed.timestamp, now_ms, ttl_ms).await {
                    Ok(true) => {}
                    Ok(false) => return Err(AuthError::ReusedNonce.into()),
                    // A read moves nothing: replayed, it can only show again what it showed. With
                    // the nonce store down a signed GET goes through unchecked, so the wallet can
                    // answer degraded; whatever moves money still needs the check (503).
                    Err(error) if method == "GET" => {
                        tracing::warn!(%error, app_id = signed.app_id, "nonce not checked: the store is down; a read goes through");
                    }
                    Err(error) => return Err(error.into()),
                }
                Ok(Caller::App(SignedApp { apps: apps.clone(), app_id: signed.app_id }))
            }
        }
    }

    fn bearer(&self, credential: &str, now_ms: u64) -> Result<Caller, AccessError> {
        if credential.starts_with(admin::ADMIN_PREFIX) {
            return if self.admin.matches(credential) {
                Ok(Caller::Admin)
            } else {
                Err(AuthError::BadBearer("not the admin credential".into()).into())
            };
        }
        let session = self.sessions.check(credential, now_ms)?;
        // A session dies with its app: a revoked app's sessions stop working too.
        if !self.apps.load().apps.contains_key(&session.app_id) {
            return Err(AuthError::BadBearer(format!("app `{}` no longer exists", session.app_id)).into());
        }
        Ok(Caller::User(session))
    }

    /// A session for one user, minted for `app` (see [`session`]).
    pub fn mint_session(
        &self,
        app: &AppEntry,
        act_id: i64,
        scopes: Vec<Scope>,
        ttl_s: u64,
        now_ms: u64,
    ) -> (String, u64) {
        let expires_at_ms = now_ms + ttl_s * 1000;
        let session = Session { app_id: app.app_id, act_id, scopes, expires_at_ms };
        (self.sessions.mint(&session), expires_at_ms)
    }
}

/// Why the credentials could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessOpenError {
    /// The admin credential or session key.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The app credentials.
    #[error(transparent)]
    Apps(#[from] AppsError),
}

/// Whether `caller` may call a route that needs `need`.
pub fn authorize(caller: &Caller, need: Need) -> Result<(), AccessError> {
    let forbidden = |message: &str| Err(AccessError::Forbidden(message.to_owned()));
    match (need, caller) {
        (Need::Public, _) => Ok(()),
        (_, Caller::Anonymous) => Err(AuthError::Missing.into()),
        (Need::App, Caller::App(_)) | (Need::Admin, Caller::Admin) => Ok(()),
        (Need::App, _) => forbidden("this route needs a signed app request"),
        (Need::Admin, _) => forbidden("this route needs the admin credential"),
        (Need::User { .. }, Caller::App(_)) => Ok(()),
        (Need::User { act_id, scope }, Caller::User(session)) => {
            if session.act_id != act_id {
                return forbidden("the session is for another user");
            }
            if !session.scopes.contains(&scope) {
                return Err(AccessError::Forbidden(format!("the session lacks the `{}` scope", scope.name())));
            }
            Ok(())
        }
        (Need::User { .. } | Need::AppOrSession { .. }, Caller::Admin) => {
            forbidden("the admin credential does not act for users")
        }
        (Need::AppOrSession { .. }, Caller::App(_)) => Ok(()),
        (Need::AppOrSession { scope }, Caller::User(session)) => {
            if !session.scopes.contains(&scope) {
                return Err(AccessError::Forbidden(format!("the session lacks the `{}` scope", scope.name())));
            }
            Ok(())
        }
    }
}

/// Whether `app` may grant in `activity_id` as `app_id` (the app named in the request body must
/// be the signing app).
pub fn authorize_grant(app: &AppEntry, app_id: i64, activity_id: &str) -> Result<(), AccessError> {
    if app.app_id != app_id {
        return Err(AccessError::Forbidden(format!(
            "the request is signed by app `{}` but names app `{app_id}`",
            app.app_id
        )));
    }
    if !app.may_act_in(activity_id) {
        return Err(AccessError::Forbidden(format!(
            "app `{}` is not scoped to activity `{}`",
            app.app_id,
            activity_id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(app_id: i64, activities: &[&str]) -> AppEntry {
        AppEntry {
            app_id,
            name: String::new(),
            activities: activities.iter().map(|a| (*a).to_owned()).collect(),
            keys: Vec::new(),
        }
    }

    fn signed(entry: AppEntry) -> Caller {
        let app_id = entry.app_id;
        Caller::App(SignedApp { apps: Arc::new(Apps { apps: [(app_id, entry)].into() }), app_id })
    }

    // Proves each route kind lets through only its callers, and a session only its own user with
    // its scopes.
    #[test]
    fn routes_let_through_only_their_callers() {
        let user = |act_id, scopes: &[Scope]| {
            Caller::User(Session { app_id: 1, act_id, scopes: scopes.to_vec(), expires_at_ms: 0 })
        };
        let read = Need::User { act_id: 7, scope: Scope::WalletRead };
        assert!(authorize(&Caller::Anonymous, Need::Public).is_ok());
        assert!(matches!(authorize(&Caller::Anonymous, Need::App), Err(AccessError::Unauthenticated(_))));
        assert!(matches!(authorize(&Caller::Anonymous, read), Err(AccessError::Unauthenticated(_))));
        assert!(authorize(&signed(app(1, &["*"])), read).is_ok());
        assert!(authorize(&user(7, &[Scope::WalletRead]), read).is_ok());
        assert!(matches!(authorize(&user(8, &[Scope::WalletRead]), read), Err(AccessError::Forbidden(_))));
        assert!(matches!(authorize(&user(7, &[Scope::TokensRestore]), read), Err(AccessError::Forbidden(_))));
        assert!(matches!(authorize(&user(7, &[Scope::WalletRead]), Need::App), Err(AccessError::Forbidden(_))));
        for caller in [signed(app(1, &["*"])), user(7, &[Scope::WalletRead])] {
            assert!(matches!(authorize(&caller, Need::Admin), Err(AccessError::Forbidden(_))), "{caller:?}");
        }
        assert!(authorize(&Caller::Admin, Need::Admin).is_ok());
        assert!(matches!(authorize(&Caller::Admin, read), Err(AccessError::Forbidden(_))));
        assert!(matches!(authorize(&Caller::Admin, Need::App), Err(AccessError::Forbidden(_))));
    }

    // Proves a grant must name the signing app and an activity the app is scoped to.
    #[test]
    fn grants_stay_within_the_app_and_its_activities() {
        let scoped = app(1128, &["spring"]);
        assert!(authorize_grant(&scoped, 1128, "spring").is_ok());
        assert!(authorize_grant(&scoped, 2329, "spring").is_err());
        assert!(authorize_grant(&scoped, 1128, "autumn").is_err());
        assert!(authorize_grant(&app(1128, &["*"]), 1128, "autumn").is_ok());
    }
}
