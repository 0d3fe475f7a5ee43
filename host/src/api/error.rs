//! Every error the API answers: an HTTP status, a stable machine code and a message. The
//! mapping from each module's errors to status and code is here and only here.

use crate::access::AccessError;
use crate::access::signature::AuthError;
use crate::capability::inventory::AmountError;
use crate::capability::rate_limit::RateRejection;
use crate::capability::reconciliation::ReconcileError;
use crate::grant::GrantError;
use crate::identity::IdentityError;
use crate::store::{StockOut, StoreError};
use crate::wallet::WalletError;

/// Every code an error answer carries, with what it means: the OpenAPI document's enum of
/// `code`, and (checked when an error is made, in debug builds) the only codes there are.
pub const ERROR_CODES: [(&str, &str); 30] = [
    ("bad_request", "a field, the path or the query is not of its domain"),
    ("not_found", "no route for the path"),
    ("method_not_allowed", "the path is served with other methods (see `Allow`)"),
    ("request_timeout", "the body did not arrive in time"),
    ("body_too_large", "the body is over the route's bound"),
    ("unsupported_media_type", "the body is not `application/json`"),
    ("unauthenticated", "no credential, or one that does not hold"),
    ("forbidden", "the credential may not call this route, or act for this user"),
    ("unavailable", "a backend did not answer; nothing was changed, try again"),
    ("award_type_mismatch", "the award type is not the scene's"),
    ("amount_not_allowed", "the scene decides the amount; the request may not"),
    ("amount_required", "the scene's amount comes from the request, which gave none"),
    ("amount_out_of_range", "the requested amount is outside the scene's range"),
    ("app_not_allowed", "the app may not grant in this activity or scene"),
    ("unknown_activity", "no such activity is served"),
    ("unknown_scene", "no such scene in the activity"),
    ("budget_exhausted", "the activity's budget is spent"),
    ("out_of_stock", "the scene's stock or budget is spent"),
    ("rate_limited", "the scene's rate limit"),
    ("user_rate_limited", "the user's rate limit in the scene"),
    ("plugin_failed", "the scene's plugin failed and its policy is to fail closed"),
    ("insufficient_balance", "the wallet holds less than asked"),
    ("request_id_conflict", "the request id was used for a different request"),
    ("too_many_pending", "the user holds more pending tokens than one request credits"),
    ("packet_not_found", "no such group red packet (or not for this user)"),
    ("grab_not_allowed", "the packet names who may grab, and not this user"),
    ("packet_empty", "every share is claimed"),
    ("packet_expired", "the packet expired"),
    ("identity_conflict", "the phone number or user id is bound otherwise"),
    ("busy", "another reconciliation runs on this host"),
];

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Stable, for programs: `unknown_scene`, `rate_limited`, …
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        debug_assert!(ERROR_CODES.iter().any(|(known, _)| *known == code), "`{code}` is not in ERROR_CODES");
        ApiError { status, code, message: message.into() }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }

    /// 404 `not_found`: no route for the path.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(404, "not_found", format!("no route for `{path}`"))
    }

    /// 405 `method_not_allowed`: the path is served, with other methods.
    pub fn method_not_allowed(method: &hyper::Method, path: &str) -> ApiError {
        ApiError::new(405, "method_not_allowed", format!("{method} is not allowed on `{path}`"))
    }

    /// 408 `request_timeout`: the body did not arrive within `timeout`.
    pub fn request_timeout(timeout: std::time::Duration) -> ApiError {
        ApiError::new(408, "request_timeout", format!("request body not received within {timeout:?}"))
    }

    /// 413 `body_too_large`: the body was over `bytes_max`.
    pub fn body_too_large(bytes_max: usize) -> ApiError {
        ApiError::new(413, "body_too_large", format!("request body over {bytes_max} bytes"))
    }

    /// 415 `unsupported_media_type`: a body that is not `application/json`.
    pub fn unsupported_media_type(content_type: Option<&str>) -> ApiError {
        let given =
            content_type.map_or("none".to_owned(), |value| format!("`{}`", value.chars().take(64).collect::<String>()));
        ApiError::new(
            415,
            "unsupported_media_type",
            format!("request bodies must be `application/json` (Content-Type: {given})"),
        )
    }
}

impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> Self {
        let (status, code) = match &error {
            AccessError::Unauthenticated(_) => (401, "unauthenticated"),
            AccessError::Forbidden(_) => (403, "forbidden"),
            AccessError::Store(_) => (503, "unavailable"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        AccessError::Unauthenticated(error).into()
    }
}

impl From<GrantError> for ApiError {
    fn from(error: GrantError) -> Self {
        let (status, code) = match &error {
            GrantError::BadRequest(_) => (400, "bad_request"),
            GrantError::AwardTypeMismatch { .. } => (400, "award_type_mismatch"),
            GrantError::Amount(AmountError::NotAllowed(_)) => (400, "amount_not_allowed"),
            GrantError::Amount(AmountError::Missing(_)) => (400, "amount_required"),
            GrantError::Amount(AmountError::OutOfRange { .. }) => (400, "amount_out_of_range"),
            GrantError::AppNotAllowed(_) => (403, "app_not_allowed"),
            GrantError::UnknownActivity(_) => (404, "unknown_activity"),
            GrantError::UnknownScene(_) => (404, "unknown_scene"),
            GrantError::OutOfStock(StockOut::ActivityBudget) => (409, "budget_exhausted"),
            GrantError::OutOfStock(_) | GrantError::PluginOutOfStock => (409, "out_of_stock"),
            GrantError::RateLimited(RateRejection::Scene) | GrantError::PluginRateLimited(_) => (429, "rate_limited"),
            GrantError::RateLimited(RateRejection::User) => (429, "user_rate_limited"),
            GrantError::PluginFailed { .. } => (503, "plugin_failed"),
            GrantError::Store(_) | GrantError::Ledger(_) => (503, "unavailable"),
        };
        // A plugin's failure can name files on the host (a plugin that did not load); apps see
        // which plugin failed and how, operators the whole story in the log and `/v1/plugins`.
        let message = match &error {
            GrantError::PluginFailed { capability, failure } => {
                format!("the scene's {} plugin failed ({}); nothing was granted", capability.kind(), failure.code())
            }
            _ => error.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<WalletError> for ApiError {
    fn from(error: WalletError) -> Self {
        let (status, code) = match &error {
            WalletError::BadRequest(_) => (400, "bad_request"),
            WalletError::InsufficientBalance { .. } => (409, "insufficient_balance"),
            WalletError::RequestConflict(_) => (409, "request_id_conflict"),
            WalletError::Unavailable(_) => (503, "unavailable"),
            WalletError::TooManyPending(_) => (503, "too_many_pending"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<crate::packet::PacketError> for ApiError {
    fn from(error: crate::packet::PacketError) -> Self {
        use crate::packet::PacketError;
        let (status, code) = match &error {
            PacketError::BadRequest(_) => (400, "bad_request"),
            PacketError::NotFound(_) => (404, "packet_not_found"),
            PacketError::NotAllowed { .. } => (403, "grab_not_allowed"),
            PacketError::InsufficientBalance { .. } => (409, "insufficient_balance"),
            PacketError::RequestConflict(_) => (409, "request_id_conflict"),
            PacketError::Empty(_) => (409, "packet_empty"),
            PacketError::Expired(_) => (409, "packet_expired"),
            PacketError::Unavailable(_) => (503, "unavailable"),
            PacketError::TooManyPending(_) => (503, "too_many_pending"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        let (status, code) = match &error {
            IdentityError::BadRequest(_) => (400, "bad_request"),
            IdentityError::Conflict { .. } => (409, "identity_conflict"),
            IdentityError::Unavailable(_) => (503, "unavailable"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<ReconcileError> for ApiError {
    fn from(error: ReconcileError) -> Self {
        let (status, code) = match &error {
            ReconcileError::UnknownActivity(_) => (404, "unknown_activity"),
            ReconcileError::Busy => (429, "busy"),
            ReconcileError::Unavailable(_) => (503, "unavailable"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

/// A store that failed outside the grant and wallet paths (health, token verification): 503.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::new(503, "unavailable", error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the grant refusals keep the statuses and codes the API has always answered, the
    // scene's plugins answering like the built-ins they replace.
    #[test]
    fn grant_errors_keep_their_codes() {
        let cases = [
            (GrantError::BadRequest("x".into()), 400, "bad_request"),
            (GrantError::Amount(AmountError::Missing("x".into())), 400, "amount_required"),
            (GrantError::AppNotAllowed(1), 403, "app_not_allowed"),
            (GrantError::UnknownScene("x".into()), 404, "unknown_scene"),
            (GrantError::OutOfStock(StockOut::ActivityBudget), 409, "budget_exhausted"),
            (GrantError::OutOfStock(StockOut::SceneCount), 409, "out_of_stock"),
            (GrantError::PluginOutOfStock, 409, "out_of_stock"),
            (GrantError::RateLimited(RateRejection::Scene), 429, "rate_limited"),
            (GrantError::PluginRateLimited("x".into()), 429, "rate_limited"),
            (GrantError::RateLimited(RateRejection::User), 429, "user_rate_limited"),
            (GrantError::Store(StoreError::Unavailable("x".into())), 503, "unavailable"),
        ];
        for (error, status, code) in cases {
            let answer = ApiError::from(error);
            assert_eq!((answer.status, answer.code), (status, code), "{}", answer.message);
        }
    }

    // Proves a failed plugin's answer to an app names the plugin and how it failed, but no file
    // on the host (a plugin that did not load is named by its path in the load error).
    #[test]
    fn plugin_failures_show_apps_no_paths() {
        let failure = crate::plugin::PluginFailure::NotLoaded("`/srv/hongbao/plugins/copy.wasm` is not wasm".into());
        let error = GrantError::PluginFailed { capability: crate::plugin::Capability::BillCopy, failure };
        let answer = ApiError::from(error);
        assert_eq!((answer.status, answer.code), (503, "plugin_failed"));
        assert!(
            answer.message.contains("bill-copy") && answer.message.contains("plugin_not_loaded"),
            "{}",
            answer.message
        );
        assert!(!answer.message.contains("/srv"), "{}", answer.message);
    }
}
