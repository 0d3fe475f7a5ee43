//! Every error the API answers: an HTTP status, a stable machine code and a message.

use crate::grant::GrantError;
use crate::wallet::WalletError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
        ApiError { status, code, message: message.into() }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }
}

impl From<GrantError> for ApiError {
    fn from(error: GrantError) -> Self {
        ApiError::new(error.http_status(), error.code(), error.to_string())
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
