//! Request routing and the handlers' HTTP glue; the logic lives in `grant`, `wallet` and
//! `capability`.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{ApiError, REQUEST_BODY_BYTES_MAX, RESTORE_BODY_BYTES_MAX, body, named_user, request_id};
use crate::access::apps::AppEntry;
use crate::access::session::{SESSION_TTL_S_MAX, Scope};
use crate::access::signature::AuthError;
use crate::access::{self, AccessError, Caller, Need, RequestParts};
use crate::app::App;
use crate::capability::reconciliation;
use crate::issuer::TokenError;
use crate::issuer::pb::RedPacketToken;
use crate::issuer::watch::ForgeryWatch;
use crate::metrics::GrantKind;
use crate::{grant, identity, packet, wallet};

type Answer = Result<Response<Full<Bytes>>, ApiError>;

/// Answers one request; never fails: errors become JSON error answers. Every answer carries
/// the request's id ([`request_id`]), and the request's log lines name it.
pub async fn handle(app: &App, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let id = request_id::of(request.headers());
    let span = tracing::info_span!("request", id = %id);
    let on_dashboard = request.uri().path().starts_with("/dashboard");
    let mut response = match route(app, request).instrument(span).await {
        Ok(response) => response,
        Err(error) => respond(error.status, &error),
    };
    // A browser asks its user for the admin credential when told which scheme to use.
    if on_dashboard && response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hongbao dashboard\", charset=\"UTF-8\""),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    response
}

fn respond(status: u16, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static headers are valid")
}

/// `GET /dashboard`: the page, which runs only its own inline script and style, talks only to
/// this host, and may not be framed by another site.
fn dashboard_page() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header(
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        .body(Full::new(Bytes::from_static(crate::dashboard::PAGE.as_bytes())))
        .expect("static headers are valid")
}

fn ok(body: &impl serde::Serialize) -> Answer {
    Ok(respond(200, body))
}

fn parse_act_id(text: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(act_id) if act_id > 0 && act_id < i64::MAX => Ok(act_id),
        _ => Err(ApiError::bad_request(format!(
            "act_id `{}` must be a positive integer",
            text.chars().take(32).collect::<String>()
        ))),
    }
}

/// A wallet path segment that names the signing app's user instead of an act_id.
const APP_USER_PREFIX: &str = "app_user:";

/// `GET /v1/wallets/{…}/flow?limit=&cursor=`.
async fn flow(app: &App, act_id: i64, admitted: &Admitted) -> Answer {
    let query = admitted.query.as_deref();
    let limit = query_param(query, "limit")
        .map(|text| text.parse::<usize>().map_err(|_| ApiError::bad_request(format!("limit `{text}` is not a number"))))
        .transpose()?;
    let cursor = query_param(query, "cursor").filter(|cursor| !cursor.is_empty());
    ok(&wallet::flow_view(app, act_id, limit, cursor).await?)
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Every route: what it does, with the path's parts it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'p> {
    Health,
    Metrics,
    Dashboard,
    DashboardData,
    Keys,
    Verify,
    Grant,
    GrantBatch,
    Identities,
    Sessions,
    Wallet(i64),
    Flow(i64),
    /// `GET /v1/wallets/app_user:{app_user_id}`: the signing app's user.
    WalletOf(&'p str),
    /// `GET /v1/wallets/app_user:{app_user_id}/flow`.
    FlowOf(&'p str),
    Withdraw(i64),
    Restore(i64),
    Scenes,
    Plugins,
    Security,
    Reconciliation(&'p str),
    Repair(&'p str),
    PacketSend,
    Packet(&'p str),
    PacketGrab(&'p str),
    PacketRefund(&'p str),
    PacketBooks(&'p str),
}

impl<'p> Endpoint<'p> {
    /// The route for a method and path: 404 for an unknown path, 405 for a known path with
    /// another method.
    fn resolve(method: &Method, path: &'p str) -> Result<Endpoint<'p>, ApiError> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let endpoint = match (method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Endpoint::Health,
            (&Method::GET, ["metrics"]) => Endpoint::Metrics,
            (&Method::GET, ["dashboard"]) => Endpoint::Dashboard,
            (&Method::GET, ["dashboard", "data"]) => Endpoint::DashboardData,
            (&Method::GET, ["v1", "keys"]) => Endpoint::Keys,
            (&Method::POST, ["v1", "tokens:verify"]) => Endpoint::Verify,
            (&Method::POST, ["v1", "grants"]) => Endpoint::Grant,
            (&Method::POST, ["v1", "grants:batch"]) => Endpoint::GrantBatch,
            (&Method::POST, ["v1", "sessions"]) => Endpoint::Sessions,
            (&Method::POST, ["v1", "identities"]) => Endpoint::Identities,
            (&Method::GET, ["v1", "wallets", user]) if user.starts_with(APP_USER_PREFIX) => {
                Endpoint::WalletOf(&user[APP_USER_PREFIX.len()..])
            }
            (&Method::GET, ["v1", "wallets", user, "flow"]) if user.starts_with(APP_USER_PREFIX) => {
                Endpoint::FlowOf(&user[APP_USER_PREFIX.len()..])
            }
            (&Method::GET, ["v1", "wallets", act_id]) => Endpoint::Wallet(parse_act_id(act_id)?),
            (&Method::GET, ["v1", "wallets", act_id, "flow"]) => Endpoint::Flow(parse_act_id(act_id)?),
            (&Method::POST, ["v1", "wallets", act_id, "withdrawals"]) => Endpoint::Withdraw(parse_act_id(act_id)?),
            (&Method::POST, ["v1", "wallets", act_id, "tokens:restore"]) => Endpoint::Restore(parse_act_id(act_id)?),
            (&Method::POST, ["v1", "packets"]) => Endpoint::PacketSend,
            (&Method::GET, ["v1", "packets", id]) => Endpoint::Packet(id),
            (&Method::POST, ["v1", "packets", id, "grabs"]) => Endpoint::PacketGrab(id),
            (&Method::POST, ["v1", "packets", id, "refund"]) => Endpoint::PacketRefund(id),
            (&Method::GET, ["v1", "packets", id, "reconciliation"]) => Endpoint::PacketBooks(id),
            (&Method::GET, ["v1", "scenes"]) => Endpoint::Scenes,
            (&Method::GET, ["v1", "plugins"]) => Endpoint::Plugins,
            (&Method::GET, ["v1", "security"]) => Endpoint::Security,
            (&Method::GET, ["v1", "activities", activity_id, "reconciliation"]) => {
                Endpoint::Reconciliation(activity_id)
            }
            (&Method::POST, ["v1", "activities", activity_id, "reconciliation:repair"]) => {
                Endpoint::Repair(activity_id)
            }
            (
                _,
                ["healthz" | "metrics" | "dashboard"]
                | ["dashboard", "data"]
                | [
                    "v1",
                    "scenes" | "keys" | "tokens:verify" | "grants" | "grants:batch" | "sessions" | "identities"
                    | "plugins" | "security",
                ]
                | ["v1", "wallets", _, ..]
                | ["v1", "packets"]
                | ["v1", "packets", _]
                | ["v1", "packets", _, "grabs" | "refund" | "reconciliation"]
                | ["v1", "activities", _, _],
            ) => return Err(ApiError::method_not_allowed(method, path)),
            _ => return Err(ApiError::not_found(path)),
        };
        Ok(endpoint)
    }

    /// Who may call it (see [`access`]).
    fn need(self) -> Need {
        match self {
            Endpoint::Health | Endpoint::Keys | Endpoint::Verify => Need::Public,
            Endpoint::Grant | Endpoint::GrantBatch | Endpoint::Sessions | Endpoint::Identities => Need::App,
            // Only an app knows its own users' names; a session is for one act_id.
            Endpoint::WalletOf(_) | Endpoint::FlowOf(_) => Need::App,
            Endpoint::Wallet(act_id) | Endpoint::Flow(act_id) => Need::User { act_id, scope: Scope::WalletRead },
            Endpoint::Withdraw(act_id) => Need::User { act_id, scope: Scope::WalletWithdraw },
            Endpoint::Restore(act_id) => Need::User { act_id, scope: Scope::TokensRestore },
            Endpoint::PacketSend => Need::AppOrSession { scope: Scope::WalletWithdraw },
            Endpoint::Packet(_) => Need::AppOrSession { scope: Scope::WalletRead },
            Endpoint::PacketGrab(_) => Need::AppOrSession { scope: Scope::PacketsGrab },
            Endpoint::Metrics
            | Endpoint::Dashboard
            | Endpoint::DashboardData
            | Endpoint::Scenes
            | Endpoint::Plugins
            | Endpoint::Security
            | Endpoint::Reconciliation(_)
            | Endpoint::PacketRefund(_)
            | Endpoint::PacketBooks(_)
            | Endpoint::Repair(_) => Need::Admin,
        }
    }

    /// Whether it takes the admin credential as HTTP Basic, as a browser sends it: the
    /// dashboard's read-only routes only (see [`access::Access::authenticate`]).
    fn takes_basic_admin(self) -> bool {
        matches!(self, Endpoint::Dashboard | Endpoint::DashboardData)
    }

    /// The largest body it reads; GET routes read none (and sign an empty one).
    fn body_bytes_max(self) -> Option<usize> {
        match self {
            Endpoint::Restore(_) => Some(RESTORE_BODY_BYTES_MAX),
            Endpoint::Verify
            | Endpoint::Grant
            | Endpoint::GrantBatch
            | Endpoint::Sessions
            | Endpoint::Identities
            | Endpoint::Withdraw(_)
            | Endpoint::PacketSend
            | Endpoint::PacketGrab(_)
            | Endpoint::PacketRefund(_)
            | Endpoint::Repair(_) => Some(REQUEST_BODY_BYTES_MAX),
            _ => None,
        }
    }
}

/// `POST /v1/tokens:verify`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The token as the client holds it.
    pub token: String,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// The user the session acts for.
    pub act_id: i64,
    /// What the session may do.
    pub scopes: Vec<Scope>,
    /// Seconds until it expires, at most [`SESSION_TTL_S_MAX`].
    pub ttl_s: u64,
}

/// What a request to `method` and `path` needs of its caller (`None`: no such route), for
/// clients that pick their credential by route (`hongbao call`, the benchmarks).
pub fn need_of(method: &Method, path: &str) -> Option<Need> {
    Endpoint::resolve(method, path).ok().map(Endpoint::need)
}

/// A request that passed the access layer: its caller and its body.
struct Admitted {
    caller: Caller,
    content_type: Option<String>,
    body: Bytes,
    query: Option<String>,
}

impl Admitted {
    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        body::decode(self.content_type.as_deref(), &self.body)
    }

    /// The app a request acts through: the signing app, or the app that minted the session.
    fn app_id(&self) -> Result<i64, ApiError> {
        match &self.caller {
            Caller::App(app) => Ok(app.entry().app_id),
            Caller::User(session) => Ok(session.app_id),
            _ => Err(AccessError::Forbidden("this route needs a signed app request or a session".into()).into()),
        }
    }

    /// The user a session acts for; `None` for other callers.
    fn session_user(&self) -> Option<i64> {
        match &self.caller {
            Caller::User(session) => Some(session.act_id),
            _ => None,
        }
    }

    /// Refuses a session that names a user by `app_user_id`: resolving a name binds it, and a
    /// session may act only for the act_id it was minted for.
    fn names_users_by_act_id(&self, app_user_id: Option<&str>) -> Result<(), ApiError> {
        if app_user_id.is_some() && matches!(self.caller, Caller::User(_)) {
            return Err(AccessError::Forbidden("a session names its user by act_id, not app_user_id".into()).into());
        }
        Ok(())
    }

    /// Checks that a route whose user is named in the body may act for `act_id` with `scope`.
    fn acting_for(&self, act_id: i64, scope: Scope) -> Result<(), ApiError> {
        access::authorize(&self.caller, Need::User { act_id, scope }).map_err(ApiError::from)
    }

    fn app(&self) -> Result<&AppEntry, ApiError> {
        match &self.caller {
            Caller::App(app) => Ok(app.entry()),
            _ => Err(AccessError::Forbidden("this route needs a signed app request".into()).into()),
        }
    }
}

/// The access layer: reads the body (the signature covers it), authenticates the caller and
/// checks it against the route, before any handler runs.
async fn admit(app: &App, endpoint: Endpoint<'_>, request: Request<Incoming>) -> Result<Admitted, ApiError> {
    let (parts, incoming) = request.into_parts();
    let body = match endpoint.body_bytes_max() {
        Some(bytes_max) => body::read(&parts.headers, incoming, bytes_max).await?,
        None => Bytes::new(),
    };
    let need = endpoint.need();
    let caller = if need == Need::Public {
        Caller::Anonymous
    } else {
        let header = parts.headers.get(hyper::header::AUTHORIZATION).map(|value| value.to_str());
        let header = header.transpose().map_err(|_| AuthError::Malformed("not ASCII".into()))?;
        let path_and_query = parts.uri.path_and_query().map_or("/", |value| value.as_str());
        let request = RequestParts { method: parts.method.as_str(), path_and_query, body: &body };
        let basic = endpoint.takes_basic_admin();
        app.access.authenticate(&app.store, header, request, app.clock.now_ms(), basic).await?
    };
    access::authorize(&caller, need)?;
    Ok(Admitted {
        caller,
        content_type: body::content_type(&parts.headers).map(str::to_owned),
        body,
        query: parts.uri.query().map(str::to_owned),
    })
}

async fn route(app: &App, request: Request<Incoming>) -> Answer {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let endpoint = Endpoint::resolve(request.method(), &path)?;
    let admitted = admit(app, endpoint, request).await?;
    match endpoint {
        Endpoint::Health => health(app).await,
        Endpoint::Metrics => {
            let page = crate::metrics::exposition::render(app).await?;
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header("content-type", crate::metrics::exposition::CONTENT_TYPE)
                .body(Full::new(Bytes::from(page)))
                .expect("static headers are valid"))
        }
        Endpoint::Dashboard => Ok(dashboard_page()),
        Endpoint::DashboardData => ok(&app.dashboard.data(app).await?),
        Endpoint::Keys => ok(&json!({ "keys": app.issuer.public_keys() })),
        Endpoint::Verify => {
            let body: VerifyBody = admitted.json()?;
            verify(app, &body.token).await
        }
        // A grant names its user by `act_id` or by `app_user_id` (see `named_user`).
        Endpoint::Grant => {
            let answer = named_user::grant(app, admitted.app()?, admitted.json()?).await;
            app.metrics.grant_request(GrantKind::Single, started.elapsed());
            ok(&answer?)
        }
        Endpoint::GrantBatch => {
            let answers = named_user::grant_batch(app, admitted.app()?, admitted.json()?).await;
            app.metrics.grant_request(GrantKind::Batch, started.elapsed());
            let results: Vec<GrantBatchItem> = answers?.into_iter().map(GrantBatchItem::from).collect();
            ok(&json!({ "results": results }))
        }
        Endpoint::Identities => ok(&named_user::bind(app, admitted.app()?, admitted.json()?).await?),
        Endpoint::Sessions => sessions(app, &admitted),
        Endpoint::Wallet(act_id) => ok(&wallet::summary_view(app, act_id).await?),
        Endpoint::Flow(act_id) => flow(app, act_id, &admitted).await,
        Endpoint::WalletOf(user) => {
            let act_id = named_user::act_id_of(app, admitted.app()?, user).await?;
            ok(&wallet::summary_view(app, act_id).await?)
        }
        Endpoint::FlowOf(user) => flow(app, named_user::act_id_of(app, admitted.app()?, user).await?, &admitted).await,
        Endpoint::Withdraw(act_id) => ok(&wallet::withdraw(app, act_id, admitted.json()?).await?),
        Endpoint::Restore(act_id) => ok(&json!({ "results": wallet::restore(app, act_id, admitted.json()?).await? })),
        Endpoint::PacketSend => {
            let body: packet::SendBody = admitted.json()?;
            let app_id = admitted.app_id()?;
            admitted.names_users_by_act_id(body.sender_app_user_id.as_deref())?;
            let sender = identity::resolve_act_id(app, app_id, body.sender_act_id, body.sender_app_user_id.as_deref())
                .await
                .map_err(packet::PacketError::from)?;
            admitted.acting_for(sender, Scope::WalletWithdraw)?;
            ok(&packet::send(app, app_id, sender, body).await?)
        }
        Endpoint::Packet(id) => ok(&packet::show(app, id, admitted.session_user()).await?),
        Endpoint::PacketGrab(id) => {
            let body: packet::GrabBody = admitted.json()?;
            let app_id = admitted.app_id()?;
            admitted.names_users_by_act_id(body.app_user_id.as_deref())?;
            let grabber = identity::resolve_act_id(app, app_id, body.act_id, body.app_user_id.as_deref())
                .await
                .map_err(packet::PacketError::from)?;
            admitted.acting_for(grabber, Scope::PacketsGrab)?;
            ok(&packet::grab(app, app_id, id, grabber).await?)
        }
        Endpoint::PacketBooks(id) => ok(&packet::reconcile(app, id).await?),
        Endpoint::PacketRefund(id) => {
            packet::refund::refund_now(app, id).await?;
            ok(&packet::show(app, id, None).await?)
        }
        Endpoint::Scenes => ok(&scenes(app)),
        Endpoint::Plugins => ok(&plugins(app)),
        Endpoint::Security => ok(&json!({ "forgery_watch": app.forgery.to_json(), "keys": app.issuer.public_keys() })),
        Endpoint::Reconciliation(activity_id) => {
            answer_report(reconciliation::check(&reconciliation_sources(app), activity_id).await?)
        }
        Endpoint::Repair(activity_id) => {
            let credit = |keys| app.writer.credit_keys_now(keys);
            answer_report(reconciliation::repair(&reconciliation_sources(app), activity_id, credit).await?)
        }
    }
}

/// `POST /v1/sessions`: a session for one of the signing app's users.
fn sessions(app: &App, admitted: &Admitted) -> Answer {
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
    ok(&json!({ "session": session, "expires_at_ms": expires_at_ms }))
}

async fn health(app: &App) -> Answer {
    use std::sync::atomic::Ordering::Relaxed;
    let queue_len = app.store.queue_len().await?;
    ok(&json!({
        "status": "ok",
        "crediting_backlog": queue_len,
        "writer": {
            "applied": app.writer.stats.applied.load(Relaxed),
            "batches": app.writer.stats.batches.load(Relaxed),
            "failures": app.writer.stats.failures.load(Relaxed),
            "parked": app.writer.stats.parked.load(Relaxed),
            "compensation_retries": app.writer.stats.compensation_retries.load(Relaxed),
            "compensation_alerts": app.writer.stats.compensation_alerts.load(Relaxed),
        },
    }))
}

fn scenes(app: &App) -> Value {
    let snapshot = app.registry.snapshot();
    let activities: Vec<Value> = snapshot
        .activities()
        .map(|activity| {
            let scenes: Vec<Value> = activity
                .scenes
                .values()
                .map(|scene| {
                    json!({
                        "activity_id": scene.activity_id,
                        "award_type": scene.award_type,
                        "award_id": scene.award_id,
                        "scene_id": scene.id,
                        "name": scene.name,
                        "app_ids": scene.app_ids,
                        "plugins": scene.plugins.specs.iter().map(|spec| json!({
                            "capability": spec.capability,
                            "sha256": crate::plugin::hex(&spec.sha256),
                            "on_failure": spec.on_failure,
                        })).collect::<Vec<_>>(),
                        "capabilities": {
                            "bill_copy": scene.bill_copy.is_some(),
                            "compensation": scene.compensation.is_some(),
                            "rate_limit": scene.rate_limit.is_some(),
                            "inventory": scene.inventory.is_some(),
                            "reconciliation": scene.reconciliation.is_some(),
                        },
                        "version": scene.version,
                    })
                })
                .collect();
            json!({
                "activity_id": activity.id,
                "name": activity.name,
                "budget_cents": activity.budget_cents,
                "version": activity.version,
                "file": activity.file,
                "scenes": scenes,
            })
        })
        .collect();
    let files: Vec<Value> = snapshot
        .files()
        .map(|(path, state)| {
            json!({
                "file": path,
                "activity_id": state.activity_id,
                "version": state.version,
                "errors": state.errors.iter().map(|e| json!({
                    "line": e.line, "path": e.path, "message": e.message, "text": e.to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "activities": activities, "files": files })
}

/// The fields of a token as JSON, for `tokens:verify` and `token inspect`.
pub fn token_json(token: &RedPacketToken) -> Value {
    json!({
        "app_id": token.app_id,
        "act_id": token.act_id,
        "activity_id": token.activity_id,
        "scene_id": token.scene_id,
        "amount_cents": token.amount_cents,
        "order_no": token.order_no,
        "open_time_ms": token.open_time_ms,
        "rain_id": token.rain_id,
        "status": token.status,
        "key_id": token.key_id,
        "award_type": token.award_type,
        "stage": token.stage,
    })
}

async fn verify(app: &App, text: &str) -> Answer {
    match app.issuer.verify(text) {
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
            ok(&json!({ "valid": true, "token": token_json(token), "live_status": live }))
        }
        Err(error) => {
            let (counter, code) = match error {
                TokenError::RetiredKey(_) => (&app.forgery.verify_retired_key, "retired_key"),
                _ => (&app.forgery.verify_failed, "invalid_token"),
            };
            ForgeryWatch::note(counter);
            tracing::warn!(%error, "forgery watch: a token failed verification");
            ok(&json!({ "valid": false, "code": code, "message": error.to_string() }))
        }
    }
}

/// Every loaded scene plugin with its declaration, load state and call counts.
fn plugins(app: &App) -> Value {
    let snapshot = app.registry.snapshot();
    let mut list = Vec::new();
    for activity in snapshot.activities() {
        for scene in activity.scenes.values() {
            for spec in &scene.plugins.specs {
                let Some(plugin) = scene.plugins.get(spec.capability) else { continue };
                list.push(json!({
                    "activity_id": activity.id,
                    "scene_id": scene.id,
                    "capability": spec.capability,
                    "path": spec.path,
                    "sha256": crate::plugin::hex(&spec.sha256),
                    "on_failure": spec.on_failure,
                    "deadline_ms": spec.deadline_ms,
                    "memory_mb": spec.memory_mb,
                    "settings": spec.settings.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "load_error": plugin.load_error().map(ToString::to_string),
                    "stats": plugin.stats().to_json(),
                }));
            }
        }
    }
    json!({ "plugins": list })
}

fn reconciliation_sources(app: &App) -> reconciliation::Sources<'_> {
    let snapshot = app.registry.snapshot();
    reconciliation::Sources { snapshot, store: &app.store, ledger: &app.ledger, clock: &*app.clock }
}

fn answer_report(report: reconciliation::Report) -> Answer {
    // Through a `Value`, as the other answers here: the keys come out in the order they always had.
    ok(&json!(report))
}

/// The answer to one grant of a batch: what `POST /v1/grants` would have answered, with its HTTP
/// status.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[serde(untagged)]
enum GrantBatchItem {
    /// Granted or replayed.
    Granted {
        /// 200.
        status: u16,
        /// The grant.
        grant: grant::GrantResponse,
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

impl From<Result<grant::GrantResponse, ApiError>> for GrantBatchItem {
    fn from(answer: Result<grant::GrantResponse, ApiError>) -> Self {
        match answer {
            Ok(grant) => GrantBatchItem::Granted { status: 200, grant },
            Err(ApiError { status, code, message }) => GrantBatchItem::Refused { status, code, message },
        }
    }
}
