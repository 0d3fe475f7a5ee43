//! The grant path: rate limit → inventory → order number → token → store.
//!
//! The order number `${actID}_${scene_id}_${rain_id}_${award_type}_${stage}` is the idempotency key
//! of the grant, its token and its ledger entry: a user gets each scene's award of a rain stage at
//! most once, and a retried request gets the original answer back. A refused grant consumes
//! nothing: no stock, no rate allowance, no token.

mod replay;

use std::cell::RefCell;

use crate::app::App;
use crate::capability::rate_limit::RatePermit;
use crate::capability::rate_limit::RateRejection;
use crate::capability::{bill_copy, inventory};
use crate::config::{Activity, AmountRule, Scene, Snapshot};
use crate::issuer::pb::RedPacketToken;
use crate::ledger::LedgerError;
use crate::plugin::bindings::bill_copy::exports::hongbao::plugin::bill_copy::Award;
use crate::plugin::bindings::inventory::exports::hongbao::plugin::inventory::{Allocation, AmountRequest};
use crate::plugin::bindings::rate_limit::exports::hongbao::plugin::rate_limit::Decision;
use crate::plugin::{CallInput, Capability, FailurePolicy, Plugin, PluginFailure};
use crate::store::{GrantCommit, GrantRecord, StockOut, StoreError, TokenStatus, UserRate};
use crate::writer::WriterError;
use replay::Committed;

/// A grant as an app backend asks for it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The app the user is in.
    pub app_id: i64,
    /// The user.
    pub act_id: i64,
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// The rain.
    pub rain_id: i32,
    /// The scene's award type.
    pub award_type: String,
    /// The stage within the rain.
    pub stage: u32,
    /// The amount, for scenes whose amount rule is `caller`.
    #[serde(default)]
    pub amount_cents: Option<i64>,
    /// The locale for the bill copy; the scene's default when absent.
    #[serde(default)]
    pub locale: Option<String>,
}

/// The answer to a grant.
#[derive(Debug, Clone, serde::Serialize, PartialEq, utoipa::ToSchema)]
pub struct GrantResponse {
    /// The idempotency key.
    pub order_no: String,
    /// The amount granted.
    pub amount_cents: i64,
    /// `base64url(SignedToken)`, for the client to keep.
    pub token: String,
    /// The token's crediting status now.
    pub status: TokenStatus,
    /// Whether this order number had been granted before (the original answer is returned).
    pub replayed: bool,
    /// The text on the user's bill.
    pub bill_copy: String,
}

/// Why a grant was refused; each has a stable code and HTTP status, mapped in
/// [`crate::api::ApiError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// A field is out of its domain.
    #[error("{0}")]
    BadRequest(String),
    /// No such activity is served.
    #[error("unknown activity `{0}`")]
    UnknownActivity(String),
    /// No such scene in the activity.
    #[error("unknown scene `{0}`")]
    UnknownScene(String),
    /// The scene's award type is another.
    #[error("scene `{scene}` hands out award type `{expected}`, not `{given}`")]
    AwardTypeMismatch {
        /// The scene.
        scene: String,
        /// Its award type.
        expected: String,
        /// What the request said.
        given: String,
    },
    /// The app may not grant in this scene.
    #[error("app `{0}` is not allowed in this scene")]
    AppNotAllowed(i64),
    /// The amount was not acceptable.
    #[error(transparent)]
    Amount(#[from] inventory::AmountError),
    /// The scene's rate-limit plugin rejected the request; the reason is logged, not shown.
    #[error("rate limited by the scene's policy")]
    PluginRateLimited(String),
    /// The scene's inventory plugin says there is no stock for this grant.
    #[error("out of stock (the scene's inventory policy)")]
    PluginOutOfStock,
    /// A scene plugin failed and the scene's policy is `fail_closed`; nothing was granted.
    #[error("the scene's {} plugin failed: {failure}", .capability.kind())]
    PluginFailed {
        /// Which plugin.
        capability: Capability,
        /// How it failed.
        failure: PluginFailure,
    },
    /// Too many grants, for the scene or the user.
    #[error("rate limited ({})", match .0 { RateRejection::Scene => "scene", RateRejection::User => "user" })]
    RateLimited(RateRejection),
    /// The stock or budget cannot cover it.
    #[error("out of stock ({})", match .0 { StockOut::SceneCount => "scene count", StockOut::SceneBudget => "scene budget", StockOut::ActivityBudget => "activity budget" })]
    OutOfStock(StockOut),
    /// The store failed; nothing was granted; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger could not be asked about the order number; nothing was granted; retry.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl GrantError {
    /// Whether the scene refused the grant (as opposed to a bad request or a backend failure):
    /// before answering a refusal, the grant path checks the order was not answered already.
    fn is_refusal(&self) -> bool {
        !matches!(self, GrantError::BadRequest(_) | GrantError::Store(_) | GrantError::Ledger(_))
    }
}

/// `${actID}_${scene_id}_${rain_id}_${award_type}_${stage}`.
pub fn order_no(act_id: i64, scene_id: &str, rain_id: i32, award_type: &str, stage: u32) -> String {
    use std::fmt::Write as _;
    let mut order = String::with_capacity(scene_id.len() + award_type.len() + 40);
    let _ = write!(order, "{act_id}_{scene_id}_{rain_id}_{award_type}_{stage}");
    order
}

thread_local! {
    /// One random source per worker thread: choosing an amount takes no lock.
    static RANDOM: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

fn check_request(request: &GrantRequest) -> Result<(), GrantError> {
    let bad = |message: String| Err(GrantError::BadRequest(message));
    if request.app_id <= 0 {
        return bad(format!("app_id `{}` must be positive", request.app_id));
    }
    if request.act_id <= 0 || request.act_id == i64::MAX {
        return bad(format!("act_id `{}` must be positive and below 2^63-1", request.act_id));
    }
    if request.rain_id < 0 {
        return bad(format!("rain_id `{}` must not be negative", request.rain_id));
    }
    for (name, value) in
        [("activity_id", &request.activity_id), ("scene_id", &request.scene_id), ("award_type", &request.award_type)]
    {
        if !crate::config::is_valid_id(value) {
            return bad(format!(
                "{name} `{}` must match [A-Za-z0-9-]{{1,64}}",
                value.chars().take(80).collect::<String>()
            ));
        }
    }
    if request.locale.as_ref().is_some_and(|locale| locale.len() > 35) {
        return bad("locale is longer than 35 bytes".into());
    }
    Ok(())
}

fn answer(record: GrantRecord, replayed: bool) -> GrantResponse {
    GrantResponse {
        status: record.status(),
        order_no: record.order_no,
        amount_cents: record.amount_cents,
        token: record.token,
        replayed,
        bill_copy: record.bill_copy,
    }
}

/// The most grants one batch request carries: enough for an app backend that aggregates its
/// users' requests to spend one HTTP round trip (and one group commit) on many grants, few
/// enough that a batch fits the request body limit and answers within a grant's deadline.
pub const GRANT_BATCH_MAX: usize = 100;

/// `POST /v1/grants:batch`: grants an app backend gathered.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBatchRequest {
    /// The grants, each as `POST /v1/grants` takes it (a JSON object each).
    #[serde(deserialize_with = "crate::api::body::objects")]
    pub grants: Vec<GrantRequest>,
}

/// Grants a batch: each grant is independent (its own checks, order number, refusal), they run
/// at once, and the answers come back in the request's order.
pub async fn grant_batch(
    app: &App,
    batch: GrantBatchRequest,
) -> Result<Vec<Result<GrantResponse, GrantError>>, GrantError> {
    if batch.grants.is_empty() || batch.grants.len() > GRANT_BATCH_MAX {
        return Err(GrantError::BadRequest(format!(
            "a batch carries 1 to {GRANT_BATCH_MAX} grants, not {}",
            batch.grants.len()
        )));
    }
    Ok(futures_util::future::join_all(batch.grants.into_iter().map(|request| grant(app, request))).await)
}

/// Grants a red packet, or replays the original answer for an order number seen before (the
/// `replay` module says where original answers are found).
pub async fn grant(app: &App, request: GrantRequest) -> Result<GrantResponse, GrantError> {
    check_request(&request)?;
    let order_no = order_no(request.act_id, &request.scene_id, request.rain_id, &request.award_type, request.stage);
    if let Some(original) = replay::answered_locally(app, &request.activity_id, &order_no).await? {
        return Ok(original);
    }
    match grant_new(app, &request, order_no.clone()).await {
        Err(error) if error.is_refusal() => {
            // Boxed, as every path a grant rarely takes: this future stays small (see `commit`).
            Box::pin(replay::find_answered(app, &request.activity_id, &order_no)).await.ok_or(error)
        }
        other => other,
    }
}

/// The grant path for an order number the store did not answer from memory: resolve the scene,
/// run its hooks, mint the token, commit the grant. The rate permit the hooks take is given
/// back on every way out but a stored grant.
async fn grant_new(app: &App, request: &GrantRequest, order_no: String) -> Result<GrantResponse, GrantError> {
    // The snapshot is held to the end: a reload mid-request does not change this grant's rules.
    let snapshot = app.registry.snapshot();
    let (activity, scene) = resolve_scene(&snapshot, request)?;
    let now_ms = app.clock.now_ms();
    let (permit, decided) = run_hooks(app, scene, request, now_ms).await?;
    let record = mint(app, request, scene, order_no, now_ms, decided);
    commit(app, activity, scene, record, permit).await
}

/// The activity and scene a request names, once the request may grant in that scene.
fn resolve_scene<'s>(snapshot: &'s Snapshot, request: &GrantRequest) -> Result<(&'s Activity, &'s Scene), GrantError> {
    let activity = snapshot
        .activity(&request.activity_id)
        .ok_or_else(|| GrantError::UnknownActivity(request.activity_id.clone()))?;
    let scene = snapshot
        .scene(&request.activity_id, &request.scene_id)
        .ok_or_else(|| GrantError::UnknownScene(request.scene_id.clone()))?;
    if scene.award_type != request.award_type {
        return Err(GrantError::AwardTypeMismatch {
            scene: scene.id.clone(),
            expected: scene.award_type.clone(),
            given: request.award_type.clone(),
        });
    }
    if !scene.allows_app(request.app_id) {
        return Err(GrantError::AppNotAllowed(request.app_id));
    }
    Ok((activity, scene))
}

/// What the scene's hooks decided for a grant.
struct Decided {
    amount_cents: i64,
    bill_copy: String,
}

/// The scene's hooks, the plugin's or the built-in for each: rate limit, amount, bill copy.
async fn run_hooks(
    app: &App,
    scene: &Scene,
    request: &GrantRequest,
    now_ms: u64,
) -> Result<(RatePermit, Decided), GrantError> {
    let (builtin_amount, random_seed) = RANDOM.with(|random| {
        let random = &mut random.borrow_mut();
        inventory::choose_amount(scene, request.amount_cents, random).map(|amount| (amount, random.u64(..)))
    })?;
    let input = CallInput {
        award_type: &scene.award_type,
        app_id: request.app_id,
        act_id: request.act_id,
        rain_id: request.rain_id,
        stage: request.stage,
        now_ms,
        random_seed,
        locale: request.locale.as_deref(),
    };
    // Any grant-path plugin may ask for `stock-remaining`; it is read here, not in the call.
    let plugins = &scene.plugins;
    if plugins.inventory.is_some() || plugins.rate_limit.is_some() || plugins.bill_copy.is_some() {
        app.store.prepare_plugin_stock(&scene.activity_id, &scene.id).await;
    }
    // The scene's hooks run inline on this worker: the plugin sandbox never blocks
    // (`plugin::sandbox::seal_streams`). A hook that refuses drops the permit, which gives it back.
    let permit = rate_limit(app, scene, &input)?;
    let amount_cents = choose_amount(scene, &input, request.amount_cents, builtin_amount)?;
    let bill_copy = render_bill_copy(scene, &input, amount_cents)?;
    Ok((permit, Decided { amount_cents, bill_copy }))
}

/// Signs the token and builds the record the store keeps of the grant.
fn mint(
    app: &App,
    request: &GrantRequest,
    scene: &Scene,
    order_no: String,
    now_ms: u64,
    decided: Decided,
) -> GrantRecord {
    let mut token = RedPacketToken {
        app_id: request.app_id,
        act_id: request.act_id,
        activity_id: scene.activity_id.clone(),
        scene_id: scene.id.clone(),
        amount_cents: decided.amount_cents,
        order_no: order_no.clone(),
        open_time_ms: now_ms as i64,
        rain_id: request.rain_id,
        status: i64::from(TokenStatus::Pending.code()),
        key_id: String::new(),
        award_type: scene.award_type.clone(),
        stage: request.stage,
    };
    let token_text = app.issuer.mint(&mut token);
    GrantRecord {
        activity_id: scene.activity_id.clone(),
        order_no,
        scene_id: scene.id.clone(),
        act_id: request.act_id,
        amount_cents: decided.amount_cents,
        open_time_ms: now_ms,
        status: TokenStatus::Pending.code(),
        seq: 0,
        token: token_text,
        bill_copy: decided.bill_copy,
        app_id: request.app_id,
        queue_id: String::new(),
    }
}

/// Writes the grant with the scene's stock and fleet-wide user limits. The permit is kept only
/// when the grant is stored; every other answer drops it, which gives it back.
async fn commit(
    app: &App,
    activity: &Activity,
    scene: &Scene,
    record: GrantRecord,
    mut permit: RatePermit,
) -> Result<GrantResponse, GrantError> {
    let user_rate = scene
        .rate_limit
        .as_ref()
        .filter(|_| scene.plugins.rate_limit.is_none())
        .map(|limit| UserRate { max: limit.user_max, window_ms: u64::from(limit.user_window_seconds) * 1000 });
    let limits = scene.stock_limits(activity.budget_cents);
    let committing = std::pin::pin!(replay::commit_checked(app, record, limits, user_rate));
    let committed = permit.kept_if_abandoned(committing).await;
    let committed = match committed? {
        Committed::Store(committed) => committed,
        Committed::Ledger(original) => return Ok(original),
    };
    match committed {
        GrantCommit::Granted(mut record) => {
            permit.keep();
            if app.sync_credit {
                // The traditional design, for comparison: the ledger first, then the answer.
                // Boxed: inline, the writer's future would make every grant's as large, and a
                // grant's future is moved (copied whole) as it is awaited.
                Box::pin(app.writer.credit_keys_now(vec![record.key()])).await.map_err(|error| match error {
                    WriterError::Store(error) => GrantError::Store(error),
                    WriterError::Ledger(error) => GrantError::Ledger(error),
                })?;
                record.status = TokenStatus::Credited.code();
            }
            Ok(answer(record, false))
        }
        GrantCommit::Replayed(record) => Ok(answer(record, true)),
        GrantCommit::OutOfStock(out) => Err(GrantError::OutOfStock(out)),
        GrantCommit::UserRateLimited => Err(GrantError::RateLimited(RateRejection::User)),
        GrantCommit::CheckLedger | GrantCommit::CheckRetired => {
            Err(GrantError::Store(StoreError::Unavailable("the store asked for a ledger check twice".into())))
        }
    }
}

/// What to do after a plugin failed, by the scene's policy: `Ok(true)` to use the built-in,
/// `Ok(false)` to skip the step, `Err` to refuse the grant.
fn after_failure(plugin: &Plugin, failure: PluginFailure) -> Result<bool, GrantError> {
    match plugin.spec().on_failure {
        FailurePolicy::FailClosed => Err(GrantError::PluginFailed { capability: plugin.spec().capability, failure }),
        FailurePolicy::FailOpen => Ok(false),
        FailurePolicy::Builtin => Ok(true),
    }
}

/// The rate-limit step: the scene's plugin when it has one, else the built-in limiter.
fn rate_limit(app: &App, scene: &Scene, input: &CallInput<'_>) -> Result<RatePermit, GrantError> {
    if let Some(plugin) = &scene.plugins.rate_limit {
        match plugin.check(&plugin.context(input)).0 {
            Ok(Decision::Allow) => return Ok(RatePermit::unlimited()),
            Ok(Decision::Reject(reason)) => {
                tracing::debug!(scene = %scene.id, act_id = input.act_id, %reason, "rate-limit plugin rejected");
                return Err(GrantError::PluginRateLimited(reason));
            }
            Err(failure) => {
                if !after_failure(plugin, failure)? {
                    return Ok(RatePermit::unlimited());
                }
            }
        }
    }
    app.rate.acquire(scene, input.act_id, app.clock.monotonic_ms()).map_err(GrantError::RateLimited)
}

/// The amount bounds of a scene's rule.
fn amount_bounds(scene: &Scene) -> (i64, i64) {
    match scene.amount {
        AmountRule::Fixed { cents } => (cents, cents),
        AmountRule::Random { min_cents, max_cents } | AmountRule::Caller { min_cents, max_cents } => {
            (min_cents, max_cents)
        }
    }
}

/// The inventory step: the scene's plugin may choose the amount (within the scene's bounds) or
/// say there is no stock; the store still checks and reserves the stock when it records the
/// grant.
fn choose_amount(
    scene: &Scene,
    input: &CallInput<'_>,
    requested_cents: Option<i64>,
    builtin_amount: i64,
) -> Result<i64, GrantError> {
    let Some(plugin) = &scene.plugins.inventory else { return Ok(builtin_amount) };
    let stock = plugin.stock_remaining().map_err(|error| GrantError::Store(StoreError::Unavailable(error)))?;
    let (min_cents, max_cents) = amount_bounds(scene);
    let amount_request = AmountRequest { requested_cents, min_cents, max_cents, stock };
    match plugin.choose(&plugin.context(input), &amount_request).0 {
        // A scene whose caller names the amount grants that amount or nothing.
        Ok(Allocation::Amount(amount)) if requested_cents.is_some_and(|requested| requested != amount) => {
            let failure = PluginFailure::InvalidOutput(format!(
                "amount {amount} differs from the {} cents the caller asked for",
                requested_cents.unwrap_or_default()
            ));
            plugin.count_invalid_answer(&failure);
            after_failure(plugin, failure).map(|_| builtin_amount)
        }
        Ok(Allocation::Amount(amount)) => Ok(amount),
        Ok(Allocation::OutOfStock) => Err(GrantError::PluginOutOfStock),
        // Skipping the step and the built-in are the same here: the scene's amount rule.
        Err(failure) => after_failure(plugin, failure).map(|_| builtin_amount),
    }
}

/// The bill-copy step: the scene's plugin when it has one, else the scene's templates.
fn render_bill_copy(scene: &Scene, input: &CallInput<'_>, amount_cents: i64) -> Result<String, GrantError> {
    let builtin = || bill_copy::render(scene, input.locale, amount_cents, input.rain_id, input.stage);
    let Some(plugin) = &scene.plugins.bill_copy else { return Ok(builtin()) };
    let award = Award { amount_cents, scene_name: scene.name.clone(), activity_name: scene.activity_name.clone() };
    match plugin.render(&plugin.context(input), &award).0 {
        Ok(text) => Ok(text.text),
        Err(failure) => Ok(if after_failure(plugin, failure)? { builtin() } else { String::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `make` returns, without making it.
    fn size_of_made<R>(_make: &impl Fn() -> R) -> usize {
        std::mem::size_of::<R>()
    }

    // Proves a grant's future stays small: it is moved (copied whole) into its caller's as it
    // is awaited, and Redis's futures, the ledger's, the writer's and the refusal path's are
    // boxed, and the wrappers around the store call hold it once. It was 13.8 KB (debug build)
    // before they were; the bound leaves room for compilers and builds, not for a Redis call.
    #[test]
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    fn a_grants_future_stays_small() {
        // The closures are never called: only their return types are looked at.
        let grant_size = size_of_made(&|| grant(unreachable!(), unreachable!()));
        let store_size = size_of_made(&|| {
            let store: &crate::store::Store = unreachable!();
            store.commit_grant_checked(unreachable!(), unreachable!(), unreachable!(), unreachable!())
        });
        assert!(grant_size <= 6 * 1024, "a grant's future is {grant_size} bytes");
        assert!(store_size <= 3 * 1024, "the store's commit is {store_size} bytes");
    }

    // Proves the order number has the seed's layout and ids cannot contain its separator.
    #[test]
    fn order_number_layout() {
        assert_eq!(order_no(42, "eve-rain", 3, "cash", 1), "42_eve-rain_3_cash_1");
        assert!(crate::config::is_valid_id("eve-rain"));
        assert!(!crate::config::is_valid_id("eve_rain"));
        assert!(!crate::config::is_valid_id(""));
        assert!(!crate::config::is_valid_id(&"a".repeat(65)));
    }
}
