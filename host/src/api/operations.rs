//! One handler per API operation, each with its OpenAPI description (`#[utoipa::path]`): what it
//! takes, what it answers, and the refusals of its own. The refusals every operation of a kind
//! shares (authentication, bodies, availability) and its security are added to the document from
//! the route table by [`super::openapi`], from the same `need()` and `body_bytes_max()` the access
//! layer applies, so the document cannot promise a credential the route does not ask for.
//!
//! The logic lives in `grant`, `wallet`, `packet`, `identity` and `capability`; a handler turns
//! the admitted request into their call and their answer into JSON.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::answers::{
    ActivityEntry, Capabilities, GrantBatchAnswer, GrantBatchItem, Health, Keys, NoFields, PluginEntry, PluginsAnswer,
    RestoreAnswer, SceneEntry, SceneFile, SceneFileError, ScenePlugin, ScenesAnswer, SecurityAnswer, SessionAnswer,
    TokenFields, Verification,
};
use super::named_user::{self, GrantBatchBody, GrantBody, IdentityBody};
use super::routes::{Admitted, Answer, SessionBody, VerifyBody, ok, query_param};
use super::{ApiError, openapi};
use crate::access::session::{SESSION_TTL_S_MAX, Scope};
use crate::app::App;
use crate::capability::reconciliation;
use crate::dashboard::DashboardData;
use crate::grant::GrantResponse;
use crate::identity::{self, Binding};
use crate::issuer::TokenError;
use crate::issuer::watch::ForgeryWatch;
use crate::metrics::GrantKind;
use crate::packet::{self, GrabAnswer, GrabBody, PacketBooks, PacketView, SendAnswer, SendBody};
use crate::wallet::degraded::{FlowView, SummaryView};
use crate::wallet::{self, RestoreBody, WithdrawalAnswer, WithdrawalBody};

/// A response with this status, content type and body.
fn answer_bytes(content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Full::new(body))
        .expect("static headers are valid")
}

/// Whether the host and its token store answer, with the crediting backlog.
#[utoipa::path(get, path = "/healthz", tag = "public",
    responses((status = 200, description = "The host and its token store answer.", body = Health)))]
pub(super) async fn health(app: &App) -> Answer {
    let backlog = app.store.queue_len().await?;
    ok(&Health::of(app, backlog))
}

/// This host's metrics in the Prometheus text format (0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operators",
    responses((status = 200, description = "The metrics page.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub(super) async fn metrics(app: &App) -> Answer {
    let page = crate::metrics::exposition::render(app).await?;
    Ok(answer_bytes(crate::metrics::exposition::CONTENT_TYPE, Bytes::from(page)))
}

/// The live dashboard: one page that polls `/dashboard/data`. A browser may send the admin
/// credential as HTTP Basic (user `admin`).
#[utoipa::path(get, path = "/dashboard", tag = "operators",
    responses((status = 200, description = "The page.", content_type = "text/html; charset=utf-8", body = String)))]
pub(super) fn dashboard() -> Answer {
    Ok(super::routes::dashboard_page())
}

/// The dashboard's figures: current counts, the last minutes' rates and projections.
#[utoipa::path(get, path = "/dashboard/data", tag = "operators",
    responses((status = 200, description = "The figures.", body = DashboardData)))]
pub(super) async fn dashboard_data(app: &App) -> Answer {
    ok(&app.dashboard.data(app).await?)
}

/// This document: the API in OpenAPI 3.1.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "public",
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
pub(super) fn openapi_document() -> Answer {
    Ok(answer_bytes("application/json", openapi::document_json()))
}

/// The public keys that sign tokens (ed25519), for anyone who wants to check a token offline.
#[utoipa::path(get, path = "/v1/keys", tag = "public",
    responses((status = 200, description = "Every key, active and not.", body = Keys)))]
pub(super) fn keys(app: &App) -> Answer {
    ok(&Keys { keys: app.issuer.public_keys() })
}

/// Checks a token's signature and tells its fields and its crediting status now.
#[utoipa::path(post, path = "/v1/tokens:verify", tag = "public", request_body = VerifyBody,
    responses((status = 200, description = "Whether it verifies; a forged or altered token is `valid: false`.", body = Verification)))]
pub(super) async fn verify(app: &App, admitted: &Admitted) -> Answer {
    let body: VerifyBody = admitted.json()?;
    match app.issuer.verify(&body.token) {
        Ok(verified) => {
            let token = &verified.token;
            let live = app.store.lookup(&token.activity_id, &token.order_no).await?.map(|record| record.status());
            if live.is_none() {
                let flow_id = crate::store::red_packet_flow_id(&token.activity_id, &token.order_no);
                // A ledger that cannot answer leaves this one uncounted; the answer does not need it.
                if let Ok(None) = app.ledger.entry(&flow_id).await {
                    ForgeryWatch::note(&app.forgery.verify_never_issued);
                    tracing::warn!(order_no = %token.order_no, key_id = %token.key_id,
                        "forgery watch: a validly signed token neither the store nor the ledger knows");
                }
            }
            ok(&Verification::Valid { valid: true, token: TokenFields::from(token), live_status: live })
        }
        Err(error) => {
            let (counter, code) = match error {
                TokenError::RetiredKey(_) => (&app.forgery.verify_retired_key, "retired_key"),
                _ => (&app.forgery.verify_failed, "invalid_token"),
            };
            ForgeryWatch::note(counter);
            tracing::warn!(%error, "forgery watch: a token failed verification");
            ok(&Verification::Invalid { valid: false, code, message: error.to_string() })
        }
    }
}

/// Grants a red packet: mints a signed token at once; the ledger is credited later. The same
/// order number (`${act_id}_${scene_id}_${rain_id}_${award_type}_${stage}`) answers the same
/// token again (`replayed: true`).
#[utoipa::path(post, path = "/v1/grants", tag = "grants", request_body = GrantBody,
    responses(
        (status = 200, description = "Granted, or replayed.", body = GrantResponse),
        (status = 404, description = "`unknown_activity` or `unknown_scene`.", body = ApiError),
        (status = 409, description = "`out_of_stock`, `budget_exhausted` or `identity_conflict`.", body = ApiError),
        (status = 429, description = "`rate_limited` or `user_rate_limited`.", body = ApiError),
    ))]
pub(super) async fn grant(app: &App, admitted: &Admitted, started: Instant) -> Answer {
    let answer = named_user::grant(app, admitted.app()?, admitted.json()?).await;
    app.metrics.grant_request(GrantKind::Single, started.elapsed());
    ok(&answer?)
}

/// Grants up to 100 red packets at once, each as `POST /v1/grants` would, each answered on its
/// own (a refusal does not affect the others).
#[utoipa::path(post, path = "/v1/grants:batch", tag = "grants", request_body = GrantBatchBody,
    responses(
        (status = 200, description = "One answer per grant, in order.", body = GrantBatchAnswer),
        (status = 404, description = "`unknown_activity`.", body = ApiError),
    ))]
pub(super) async fn grant_batch(app: &App, admitted: &Admitted, started: Instant) -> Answer {
    let answers = named_user::grant_batch(app, admitted.app()?, admitted.json()?).await;
    app.metrics.grant_request(GrantKind::Batch, started.elapsed());
    let results: Vec<GrantBatchItem> = answers?.into_iter().map(GrantBatchItem::from).collect();
    ok(&GrantBatchAnswer { results })
}

/// Maps the signing app's own user id to an act_id; a phone number shared with another app's
/// user makes them one user.
#[utoipa::path(post, path = "/v1/identities", tag = "grants", request_body = IdentityBody,
    responses(
        (status = 200, description = "The binding.", body = Binding),
        (status = 409, description = "`identity_conflict`.", body = ApiError),
    ))]
pub(super) async fn identities(app: &App, admitted: &Admitted) -> Answer {
    ok(&named_user::bind(app, admitted.app()?, admitted.json()?).await?)
}

/// Mints a short-lived session for one of the signing app's users, for a mobile client.
#[utoipa::path(post, path = "/v1/sessions", tag = "grants", request_body = SessionBody,
    responses((status = 200, description = "The session.", body = SessionAnswer)))]
pub(super) fn sessions(app: &App, admitted: &Admitted) -> Answer {
    let body: SessionBody = admitted.json()?;
    if body.act_id <= 0 || body.act_id == i64::MAX {
        return Err(ApiError::bad_request(format!("act_id `{}` must be positive and below 2^63-1", body.act_id)));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::bad_request("a session needs at least one scope"));
    }
    if body.ttl_s == 0 || body.ttl_s > SESSION_TTL_S_MAX {
        return Err(ApiError::bad_request(format!("ttl_s `{}` must be 1 to {SESSION_TTL_S_MAX}", body.ttl_s)));
    }
    let mut scopes = body.scopes;
    scopes.sort_by_key(|scope| scope.name());
    scopes.dedup();
    let (session, expires_at_ms) =
        app.access.mint_session(admitted.app()?, body.act_id, scopes, body.ttl_s, app.clock.now_ms());
    ok(&SessionAnswer { session, expires_at_ms })
}

/// A user's wallet: balance = credited + pending. The user is an act_id, or `app_user:ID` for the
/// signing app's own id. With one backend down the answer is marked `degraded`.
#[utoipa::path(get, path = "/v1/wallets/{wallet}", tag = "wallets",
    params(("wallet" = String, Path, description = "An act_id, or `app_user:` and the signing app's user id.", pattern = r"^([1-9][0-9]{0,18}|app_user:[A-Za-z0-9._:@-]{1,128})$")),
    responses((status = 200, description = "The wallet.", body = SummaryView)))]
pub(super) async fn wallet(app: &App, admitted: &Admitted, act_id: Option<i64>, app_user: Option<&str>) -> Answer {
    let act_id = match (act_id, app_user) {
        (Some(act_id), _) => act_id,
        (None, user) => named_user::act_id_of(app, admitted.app()?, user.unwrap_or_default()).await?,
    };
    ok(&wallet::summary_view(app, act_id).await?)
}

/// A user's flow, newest first: red packets, withdrawals, packets sent, grabbed and refunded;
/// pass `next_cursor` back as `cursor` for the next page.
#[utoipa::path(get, path = "/v1/wallets/{wallet}/flow", tag = "wallets",
    params(
        ("wallet" = String, Path, description = "An act_id, or `app_user:` and the signing app's user id.", pattern = r"^([1-9][0-9]{0,18}|app_user:[A-Za-z0-9._:@-]{1,128})$"),
        ("limit" = Option<u32>, Query, description = "Items per page, 1 to 100 (default 20)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses((status = 200, description = "One page.", body = FlowView)))]
pub(super) async fn flow(app: &App, admitted: &Admitted, act_id: Option<i64>, app_user: Option<&str>) -> Answer {
    let act_id = match (act_id, app_user) {
        (Some(act_id), _) => act_id,
        (None, user) => named_user::act_id_of(app, admitted.app()?, user.unwrap_or_default()).await?,
    };
    let query = admitted.query.as_deref();
    let limit = query_param(query, "limit")
        .map(|text| text.parse::<usize>().map_err(|_| ApiError::bad_request(format!("limit `{text}` is not a number"))))
        .transpose()?;
    let cursor = query_param(query, "cursor").filter(|cursor| !cursor.is_empty());
    ok(&wallet::flow_view(app, act_id, limit, cursor).await?)
}

/// Withdraws from the wallet: pending tokens are credited first, it never overdraws, and the
/// same `request_id` is done once.
#[utoipa::path(post, path = "/v1/wallets/{act_id}/withdrawals", tag = "wallets", request_body = WithdrawalBody,
    params(("act_id" = i64, Path, minimum = 1, description = "The user.")),
    responses(
        (status = 200, description = "Withdrawn, or replayed.", body = WithdrawalAnswer),
        (status = 409, description = "`insufficient_balance` or `request_id_conflict`.", body = ApiError),
    ))]
pub(super) async fn withdraw(app: &App, admitted: &Admitted, act_id: i64) -> Answer {
    ok(&wallet::withdraw(app, act_id, admitted.json()?).await?)
}

/// Hands back tokens a client kept; tokens the server lost are registered again, once.
#[utoipa::path(post, path = "/v1/wallets/{act_id}/tokens:restore", tag = "wallets", request_body = RestoreBody,
    params(("act_id" = i64, Path, minimum = 1, description = "The user.")),
    responses((status = 200, description = "What happened to each token.", body = RestoreAnswer)))]
pub(super) async fn restore(app: &App, admitted: &Admitted, act_id: i64) -> Answer {
    ok(&RestoreAnswer { results: wallet::restore(app, act_id, admitted.json()?).await? })
}

/// Sends a group red packet from the sender's wallet (pending tokens credited first), split at
/// send time; what nobody grabs goes back at expiry.
#[utoipa::path(post, path = "/v1/packets", tag = "packets", request_body = SendBody,
    responses(
        (status = 200, description = "Sent, or replayed.", body = SendAnswer),
        (status = 409, description = "`insufficient_balance`, `request_id_conflict` or `identity_conflict`.", body = ApiError),
    ))]
pub(super) async fn packet_send(app: &App, admitted: &Admitted) -> Answer {
    let body: SendBody = admitted.json()?;
    let app_id = admitted.app_id()?;
    admitted.names_users_by_act_id(body.sender_app_user_id.as_deref())?;
    let sender = identity::resolve_act_id(app, app_id, body.sender_act_id, body.sender_app_user_id.as_deref())
        .await
        .map_err(packet::PacketError::from)?;
    admitted.acting_for(sender, Scope::WalletWithdraw)?;
    ok(&packet::send(app, app_id, sender, body).await?)
}

/// A group red packet: its shares left and who grabbed what.
#[utoipa::path(get, path = "/v1/packets/{packet_id}", tag = "packets",
    params(("packet_id" = String, Path, description = "The packet.")),
    responses(
        (status = 200, description = "The packet.", body = PacketView),
        (status = 404, description = "`packet_not_found`.", body = ApiError),
    ))]
pub(super) async fn packet(app: &App, admitted: &Admitted, id: &str) -> Answer {
    ok(&packet::show(app, id, admitted.session_user()).await?)
}

/// Grabs a share: the amount and a signed token at once; crediting follows.
#[utoipa::path(post, path = "/v1/packets/{packet_id}/grabs", tag = "packets", request_body = GrabBody,
    params(("packet_id" = String, Path, description = "The packet.")),
    responses(
        (status = 200, description = "Grabbed, or replayed.", body = GrabAnswer),
        (status = 404, description = "`packet_not_found`.", body = ApiError),
        (status = 409, description = "`packet_empty`, `packet_expired` or `identity_conflict`.", body = ApiError),
    ))]
pub(super) async fn packet_grab(app: &App, admitted: &Admitted, id: &str) -> Answer {
    let body: GrabBody = admitted.json()?;
    let app_id = admitted.app_id()?;
    admitted.names_users_by_act_id(body.app_user_id.as_deref())?;
    let grabber = identity::resolve_act_id(app, app_id, body.act_id, body.app_user_id.as_deref())
        .await
        .map_err(packet::PacketError::from)?;
    admitted.acting_for(grabber, Scope::PacketsGrab)?;
    ok(&packet::grab(app, app_id, id, grabber).await?)
}

/// Gives what is left of an expired packet back to its sender now, once.
#[utoipa::path(post, path = "/v1/packets/{packet_id}/refund", tag = "operators",
    params(("packet_id" = String, Path, description = "The packet.")),
    request_body(content = Option<NoFields>, description = "None, or `{}`.", content_type = "application/json"),
    responses(
        (status = 200, description = "The packet after it.", body = PacketView),
        (status = 404, description = "`packet_not_found`.", body = ApiError),
    ))]
pub(super) async fn packet_refund(app: &App, admitted: &Admitted, id: &str) -> Answer {
    admitted.no_fields()?;
    packet::refund::refund_now(app, id).await?;
    ok(&packet::show(app, id, None).await?)
}

/// A packet's books: sent, claimed, credited, pending, refunded, the packet account.
#[utoipa::path(get, path = "/v1/packets/{packet_id}/reconciliation", tag = "operators",
    params(("packet_id" = String, Path, description = "The packet.")),
    responses(
        (status = 200, description = "The books.", body = PacketBooks),
        (status = 404, description = "`packet_not_found`.", body = ApiError),
    ))]
pub(super) async fn packet_books(app: &App, id: &str) -> Answer {
    ok(&packet::reconcile(app, id).await?)
}

/// The scene tree served, and every scene file's problems.
#[utoipa::path(get, path = "/v1/scenes", tag = "operators",
    responses((status = 200, description = "The scenes.", body = ScenesAnswer)))]
pub(super) fn scenes(app: &App) -> Answer {
    let snapshot = app.registry.snapshot();
    let activities = snapshot
        .activities()
        .map(|activity| ActivityEntry {
            activity_id: activity.id.clone(),
            name: activity.name.clone(),
            budget_cents: activity.budget_cents,
            version: activity.version.clone(),
            file: activity.file.clone(),
            scenes: activity
                .scenes
                .values()
                .map(|scene| SceneEntry {
                    activity_id: scene.activity_id.clone(),
                    award_type: scene.award_type.clone(),
                    award_id: scene.award_id.clone(),
                    scene_id: scene.id.clone(),
                    name: scene.name.clone(),
                    app_ids: scene.app_ids.clone(),
                    plugins: scene
                        .plugins
                        .specs
                        .iter()
                        .map(|spec| ScenePlugin {
                            capability: spec.capability,
                            sha256: crate::plugin::hex(&spec.sha256),
                            on_failure: spec.on_failure,
                        })
                        .collect(),
                    capabilities: Capabilities {
                        bill_copy: scene.bill_copy.is_some(),
                        compensation: scene.compensation.is_some(),
                        rate_limit: scene.rate_limit.is_some(),
                        inventory: scene.inventory.is_some(),
                        reconciliation: scene.reconciliation.is_some(),
                    },
                    version: scene.version.clone(),
                })
                .collect(),
        })
        .collect();
    let files = snapshot
        .files()
        .map(|(path, state)| SceneFile {
            file: path.to_path_buf(),
            activity_id: state.activity_id.clone(),
            version: state.version.clone(),
            pending_version: state.pending_version.clone(),
            errors: state
                .errors
                .iter()
                .map(|error| SceneFileError {
                    line: error.line,
                    path: error.path.clone(),
                    message: error.message.clone(),
                    text: error.to_string(),
                })
                .collect(),
        })
        .collect();
    ok(&ScenesAnswer { activities, files })
}

/// Every scene plugin with its declaration, load state and call counts.
#[utoipa::path(get, path = "/v1/plugins", tag = "operators",
    responses((status = 200, description = "The plugins.", body = PluginsAnswer)))]
pub(super) fn plugins(app: &App) -> Answer {
    let snapshot = app.registry.snapshot();
    let mut plugins = Vec::new();
    for activity in snapshot.activities() {
        for scene in activity.scenes.values() {
            for spec in &scene.plugins.specs {
                let Some(plugin) = scene.plugins.get(spec.capability) else { continue };
                plugins.push(PluginEntry {
                    activity_id: activity.id.clone(),
                    scene_id: scene.id.clone(),
                    capability: spec.capability,
                    path: spec.path.clone(),
                    sha256: crate::plugin::hex(&spec.sha256),
                    on_failure: spec.on_failure,
                    state: match (plugin.is_ready(), plugin.load_error()) {
                        (false, _) => "warming",
                        (true, None) => "ready",
                        (true, Some(_)) => "failed",
                    },
                    deadline_ms: spec.deadline_ms,
                    instructions_max: spec.instructions_max,
                    memory_mb: spec.memory_mb,
                    settings: spec.settings.iter().cloned().collect(),
                    load_error: plugin.load_error().map(ToString::to_string),
                    stats: plugin.stats().to_json(),
                });
            }
        }
    }
    ok(&PluginsAnswer { plugins })
}

/// The forgery watch's counts and the signing keys.
#[utoipa::path(get, path = "/v1/security", tag = "operators",
    responses((status = 200, description = "The watch.", body = SecurityAnswer)))]
pub(super) fn security(app: &App) -> Answer {
    ok(&SecurityAnswer { forgery_watch: app.forgery.counts().into_iter().collect(), keys: app.issuer.public_keys() })
}

fn reconciliation_sources(app: &App) -> reconciliation::Sources<'_> {
    let snapshot = app.registry.snapshot();
    reconciliation::Sources { snapshot, store: &app.store, ledger: &app.ledger, clock: &*app.clock }
}

/// An activity's books per scene: issued, credited, in flight, parked, stock, and findings.
#[utoipa::path(get, path = "/v1/activities/{activity_id}/reconciliation", tag = "operators",
    params(("activity_id" = String, Path, description = "The activity.")),
    responses(
        (status = 200, description = "The books.", body = reconciliation::Report),
        (status = 404, description = "`unknown_activity`.", body = ApiError),
        (status = 429, description = "`busy`: another reconciliation runs on this host.", body = ApiError),
    ))]
pub(super) async fn reconcile(app: &App, activity_id: &str) -> Answer {
    ok(&reconciliation::check(&reconciliation_sources(app), activity_id).await?)
}

/// Reconciles, then applies the repairs the findings propose (crediting in-flight grants now).
#[utoipa::path(post, path = "/v1/activities/{activity_id}/reconciliation:repair", tag = "operators",
    params(("activity_id" = String, Path, description = "The activity.")),
    request_body(content = Option<NoFields>, description = "None, or `{}`.", content_type = "application/json"),
    responses(
        (status = 200, description = "The books and the repairs.", body = reconciliation::Report),
        (status = 404, description = "`unknown_activity`.", body = ApiError),
        (status = 429, description = "`busy`: another reconciliation runs on this host.", body = ApiError),
    ))]
pub(super) async fn repair(app: &App, admitted: &Admitted, activity_id: &str) -> Answer {
    admitted.no_fields()?;
    let credit = |keys| app.writer.credit_keys_now(keys);
    ok(&reconciliation::repair(&reconciliation_sources(app), activity_id, credit).await?)
}
