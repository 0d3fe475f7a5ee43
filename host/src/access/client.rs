//! The client side of the access layer, for `hongbao call` and the benchmarks: which credential a
//! request to a route carries, read from a data directory's `keys/`.

use std::path::Path;

use super::Need;
use super::admin::ADMIN_TOKEN_FILE;
use super::apps::{Apps, AppsError};
use super::signature::authorization_header;

/// What a client signs with.
#[derive(Clone, Default)]
pub struct ClientCredentials {
    /// `(app id, key id, secret)` of the app that signs.
    pub app: Option<(i64, String, String)>,
    /// The admin credential, for the admin routes.
    pub admin: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("app", &self.app.as_ref().map(|(app_id, key_id, _)| (app_id, key_id)))
            .field("admin", &self.admin.is_some())
            .finish()
    }
}

impl ClientCredentials {
    /// The newest key of app `app_id` (of the only app, when `None`) and the admin credential in
    /// `data_dir`, as far as they are there.
    pub fn load(data_dir: &Path, app_id: Option<i64>) -> Result<ClientCredentials, AppsError> {
        let apps = Apps::load(data_dir)?;
        let entry = match app_id {
            Some(app_id) => Some(apps.apps.get(&app_id).ok_or_else(|| {
                AppsError::Refused(format!(
                    "no app `{app_id}` in `{}`",
                    data_dir.join(super::apps::APPS_FILE).display()
                ))
            })?),
            None if apps.apps.len() == 1 => apps.apps.values().next(),
            None => None,
        };
        let app = entry.and_then(|entry| {
            let key = entry.keys.last()?;
            Some((entry.app_id, key.key_id.clone(), key.secret.clone()))
        });
        let admin = std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE)).ok().map(|text| text.trim().to_owned());
        Ok(ClientCredentials { app, admin })
    }

    /// The `Authorization` header for a request, by what the route needs (the server's own
    /// table, [`crate::api::need_of`]): none on the public routes, the admin credential on the
    /// admin routes, a signature of the app's otherwise (none if there is no app).
    pub fn authorization(&self, method: &str, path_and_query: &str, body: &[u8], now_s: u64) -> Option<String> {
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        let need =
            hyper::Method::from_bytes(method.as_bytes()).ok().and_then(|method| crate::api::need_of(&method, path));
        match need {
            Some(Need::Public) => return None,
            Some(Need::Admin) => return self.admin.as_ref().map(|token| format!("Bearer {token}")),
            Some(Need::App | Need::User { .. } | Need::AppOrSession { .. }) | None => {}
        }
        let (app_id, key_id, secret) = self.app.as_ref()?;
        let nonce = nonce();
        Some(authorization_header(*app_id, key_id, secret.as_bytes(), method, path_and_query, now_s, &nonce, body))
    }
}

/// 24 random characters of `[A-Za-z0-9]`.
fn nonce() -> String {
    (0..24).map(|_| fastrand::alphanumeric()).collect()
}
