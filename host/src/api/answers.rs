//! The answers of the routes whose logic has no answer type of its own (health, keys, token
//! verification, sessions, batches, restores, the operators' views): typed here, so that the
//! OpenAPI document describes exactly what the handlers serialize.

use std::collections::BTreeMap;

use crate::app::App;
use crate::grant::GrantResponse;
use crate::issuer::PublicKey;
use crate::issuer::pb::RedPacketToken;
use crate::plugin::{Capability, FailurePolicy};
use crate::store::TokenStatus;
use crate::wallet::RestoreItem;

use super::ApiError;

/// The body of a route that takes nothing but what its path names (a repair, a refund): none,
/// or an empty JSON object.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// `GET /healthz`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the host answers and its token store does.
    pub status: &'static str,
    /// Granted tokens not yet credited.
    pub crediting_backlog: u64,
    /// This host's writer since start.
    pub writer: WriterTotals,
    /// Scene plugins being served that are still compiling (their calls get the scenes'
    /// failure policies meanwhile).
    pub plugins_warming: usize,
}

/// The ledger writer's totals since start.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WriterTotals {
    /// Ledger entries written.
    pub applied: u64,
    /// Batches committed.
    pub batches: u64,
    /// Steps that failed and were retried.
    pub failures: u64,
    /// Tokens the ledger refused, parked until funding.
    pub parked: u64,
    /// Parked tokens queued again because a compensation plugin said to retry.
    pub compensation_retries: u64,
    /// Refused tokens a compensation plugin gave up on.
    pub compensation_alerts: u64,
}

impl Health {
    /// The host's health now.
    pub fn of(app: &App, crediting_backlog: u64) -> Health {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &app.writer.stats;
        let snapshot = app.registry.snapshot();
        let plugins_warming = snapshot
            .activities()
            .flat_map(|activity| activity.scenes.values())
            .flat_map(|scene| scene.plugins.specs.iter().filter_map(|spec| scene.plugins.get(spec.capability)))
            .filter(|plugin| !plugin.is_ready())
            .count();
        Health {
            status: "ok",
            crediting_backlog,
            plugins_warming,
            writer: WriterTotals {
                applied: stats.applied.load(Relaxed),
                batches: stats.batches.load(Relaxed),
                failures: stats.failures.load(Relaxed),
                parked: stats.parked.load(Relaxed),
                compensation_retries: stats.compensation_retries.load(Relaxed),
                compensation_alerts: stats.compensation_alerts.load(Relaxed),
            },
        }
    }
}

/// `GET /v1/keys`: every key that signs or signed tokens.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Keys {
    /// The keys, active and not.
    pub keys: Vec<PublicKey>,
}

/// A token's fields, as `tokens:verify` and `hongbao token inspect` show them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenFields {
    /// The app the grant came through.
    pub app_id: i64,
    /// The user.
    pub act_id: i64,
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// The amount.
    pub amount_cents: i64,
    /// The order number.
    pub order_no: String,
    /// When it was granted, ms since the epoch.
    pub open_time_ms: i64,
    /// The rain.
    pub rain_id: i32,
    /// The crediting status the token was minted with (1: pending).
    pub status: i64,
    /// The key that signed it.
    pub key_id: String,
    /// The award type.
    pub award_type: String,
    /// The stage.
    pub stage: u32,
}

impl From<&RedPacketToken> for TokenFields {
    fn from(token: &RedPacketToken) -> Self {
        TokenFields {
            app_id: token.app_id,
            act_id: token.act_id,
            activity_id: token.activity_id.clone(),
            scene_id: token.scene_id.clone(),
            amount_cents: token.amount_cents,
            order_no: token.order_no.clone(),
            open_time_ms: token.open_time_ms,
            rain_id: token.rain_id,
            status: token.status,
            key_id: token.key_id.clone(),
            award_type: token.award_type.clone(),
            stage: token.stage,
        }
    }
}

/// `POST /v1/tokens:verify`: whether the token is one this platform signed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Verification {
    /// The signature holds.
    Valid {
        /// `true`.
        valid: bool,
        /// Its fields.
        token: TokenFields,
        /// Its crediting status in the token store now; `null` when the store no longer (or
        /// never) held it.
        live_status: Option<TokenStatus>,
    },
    /// It does not.
    Invalid {
        /// `false`.
        valid: bool,
        /// `invalid_token` or `retired_key`.
        code: &'static str,
        /// Why.
        message: String,
    },
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SessionAnswer {
    /// The credential, sent as `Authorization: Bearer …`.
    pub session: String,
    /// When it stops working, ms since the epoch.
    pub expires_at_ms: u64,
}

/// `POST /v1/grants:batch`: one answer per grant, in order.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct GrantBatchAnswer {
    /// The answers.
    pub results: Vec<GrantBatchItem>,
}

/// The answer to one grant of a batch: what `POST /v1/grants` would have answered, with its HTTP
/// status.
#[derive(Debug, Clone, serde::Serialize, PartialEq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum GrantBatchItem {
    /// Granted or replayed.
    Granted {
        /// 200.
        status: u16,
        /// The grant.
        grant: GrantResponse,
    },
    /// Refused or failed; the other grants of the batch are not affected.
    Refused {
        /// The status `POST /v1/grants` would have answered.
        status: u16,
        /// The stable machine code.
        code: &'static str,
        /// For people.
        message: String,
    },
}

impl From<Result<GrantResponse, ApiError>> for GrantBatchItem {
    fn from(answer: Result<GrantResponse, ApiError>) -> Self {
        match answer {
            Ok(grant) => GrantBatchItem::Granted { status: 200, grant },
            Err(ApiError { status, code, message }) => GrantBatchItem::Refused { status, code, message },
        }
    }
}

/// `POST /v1/wallets/{act_id}/tokens:restore`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RestoreAnswer {
    /// One per token sent, in order.
    pub results: Vec<RestoreItem>,
}

/// `GET /v1/scenes`: what is served, and every scene file's state.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScenesAnswer {
    /// The activities served.
    pub activities: Vec<ActivityEntry>,
    /// Every scene file read, with its problems.
    pub files: Vec<SceneFile>,
}

/// One served activity.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ActivityEntry {
    /// Its id.
    pub activity_id: String,
    /// Its name.
    pub name: String,
    /// Its budget.
    pub budget_cents: i64,
    /// The first 16 hex digits of its file's sha256.
    pub version: String,
    /// Its file.
    #[schema(value_type = String)]
    pub file: std::path::PathBuf,
    /// Its scenes.
    pub scenes: Vec<SceneEntry>,
}

/// One served scene.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SceneEntry {
    /// Its activity.
    pub activity_id: String,
    /// Its award type.
    pub award_type: String,
    /// Its award.
    pub award_id: String,
    /// Its id.
    pub scene_id: String,
    /// Its name.
    pub name: String,
    /// The apps that may grant in it (empty: every app of the activity).
    pub app_ids: Vec<i64>,
    /// Its plugins.
    pub plugins: Vec<ScenePlugin>,
    /// Which capabilities it switches on.
    pub capabilities: Capabilities,
    /// The version of its file.
    pub version: String,
}

/// A scene's plugin as declared.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScenePlugin {
    /// The capability it serves.
    pub capability: Capability,
    /// The pinned sha256, hex.
    pub sha256: String,
    /// What happens when it fails.
    pub on_failure: FailurePolicy,
}

/// The capabilities a scene switches on.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// Bill copy.
    pub bill_copy: bool,
    /// Compensation.
    pub compensation: bool,
    /// Rate limiting.
    pub rate_limit: bool,
    /// Inventory.
    pub inventory: bool,
    /// Reconciliation.
    pub reconciliation: bool,
}

/// One scene file.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SceneFile {
    /// Its path.
    #[schema(value_type = String)]
    pub file: std::path::PathBuf,
    /// The activity it defines, once it loaded.
    pub activity_id: Option<String>,
    /// The version served from it.
    pub version: Option<String>,
    /// A newer valid version waiting for its plugins to compile (`version` serves meanwhile).
    pub pending_version: Option<String>,
    /// Its problems (the last good version keeps being served).
    pub errors: Vec<SceneFileError>,
}

/// A problem in a scene file.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SceneFileError {
    /// The line.
    pub line: u64,
    /// The key path.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// `FILE:LINE: PATH: MESSAGE`.
    pub text: String,
}

/// `GET /v1/plugins`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginsAnswer {
    /// Every scene plugin loaded (or that failed to load).
    pub plugins: Vec<PluginEntry>,
}

/// One scene plugin.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginEntry {
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// The capability it serves.
    pub capability: Capability,
    /// Its file.
    #[schema(value_type = String)]
    pub path: std::path::PathBuf,
    /// The pinned sha256, hex.
    pub sha256: String,
    /// What happens when it fails.
    pub on_failure: FailurePolicy,
    /// `warming` (compiling in the background: calls get the failure policy), `ready`, or
    /// `failed` (see `load_error`).
    pub state: &'static str,
    /// Its deadline per call.
    pub deadline_ms: u64,
    /// The instructions one call may run.
    pub instructions_max: u64,
    /// Its memory cap.
    pub memory_mb: u64,
    /// The settings it is handed.
    pub settings: BTreeMap<String, String>,
    /// Why it did not load, if it did not.
    pub load_error: Option<String>,
    /// Its calls: `calls`, `ok`, `failures` by code, `instantiations`, `call_ns_total`.
    #[schema(value_type = Object)]
    pub stats: serde_json::Value,
}

/// `GET /v1/security`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SecurityAnswer {
    /// Tokens refused or suspicious since start, by event.
    pub forgery_watch: BTreeMap<&'static str, u64>,
    /// The signing keys.
    pub keys: Vec<PublicKey>,
}
