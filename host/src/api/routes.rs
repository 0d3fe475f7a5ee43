//! Request routing and the handlers' HTTP glue; the logic lives in `grant`, `wallet` and
//! `capability`.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, BODY_READ_TIMEOUT, REQUEST_BODY_BYTES_MAX, RESTORE_BODY_BYTES_MAX};
use crate::app::App;
use crate::capability::reconciliation;
use crate::issuer::pb::RedPacketToken;
use crate::{grant, wallet};

type Answer = Result<Response<Full<Bytes>>, ApiError>;

/// Answers one request; never fails: errors become JSON error answers.
pub async fn handle(app: &App, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match route(app, request).await {
        Ok(response) => response,
        Err(error) => respond(error.status, &error),
    }
}

fn respond(status: u16, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static headers are valid")
}

fn ok(body: &impl serde::Serialize) -> Answer {
    Ok(respond(200, body))
}

async fn read_json<T: DeserializeOwned>(request: Request<Incoming>, bytes_max: usize) -> Result<T, ApiError> {
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(request.into_body(), bytes_max).collect())
        .await
        .map_err(|_| ApiError::request_timeout(BODY_READ_TIMEOUT))?;
    let body = collected.map_err(|_| ApiError::body_too_large(bytes_max))?.to_bytes();
    serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
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

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

async fn route(app: &App, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => health(app).await,
        (&Method::GET, ["v1", "scenes"]) => ok(&scenes(app)),
        (&Method::GET, ["v1", "keys"]) => ok(&json!({ "keys": app.issuer.public_keys() })),
        (&Method::POST, ["v1", "tokens:verify"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct VerifyBody {
                token: String,
            }
            let body: VerifyBody = read_json(request, REQUEST_BODY_BYTES_MAX).await?;
            verify(app, &body.token).await
        }
        (&Method::POST, ["v1", "grants"]) => {
            let body: grant::GrantRequest = read_json(request, REQUEST_BODY_BYTES_MAX).await?;
            ok(&grant::grant(app, body).await?)
        }
        (&Method::POST, ["v1", "grants:batch"]) => {
            let body: grant::GrantBatchRequest = read_json(request, REQUEST_BODY_BYTES_MAX).await?;
            let results: Vec<GrantBatchItem> =
                grant::grant_batch(app, body).await?.into_iter().map(GrantBatchItem::from).collect();
            ok(&json!({ "results": results }))
        }
        (&Method::GET, ["v1", "wallets", act_id]) => ok(&wallet::summary(app, parse_act_id(act_id)?).await?),
        (&Method::GET, ["v1", "wallets", act_id, "flow"]) => {
            let act_id = parse_act_id(act_id)?;
            let limit = query_param(query.as_deref(), "limit")
                .map(|text| {
                    text.parse::<usize>().map_err(|_| ApiError::bad_request(format!("limit `{text}` is not a number")))
                })
                .transpose()?;
            let cursor = query_param(query.as_deref(), "cursor").filter(|cursor| !cursor.is_empty());
            ok(&wallet::flow(app, act_id, limit, cursor).await?)
        }
        (&Method::POST, ["v1", "wallets", act_id, "withdrawals"]) => {
            let act_id = parse_act_id(act_id)?;
            let body: wallet::WithdrawalBody = read_json(request, REQUEST_BODY_BYTES_MAX).await?;
            ok(&wallet::withdraw(app, act_id, body).await?)
        }
        (&Method::POST, ["v1", "wallets", act_id, "tokens:restore"]) => {
            let act_id = parse_act_id(act_id)?;
            let body: wallet::RestoreBody = read_json(request, RESTORE_BODY_BYTES_MAX).await?;
            ok(&json!({ "results": wallet::restore(app, act_id, body).await? }))
        }
        (&Method::GET, ["v1", "activities", activity_id, "reconciliation"]) => {
            answer_report(reconciliation::check(&reconciliation_sources(app), activity_id).await?)
        }
        (&Method::POST, ["v1", "activities", activity_id, "reconciliation:repair"]) => {
            let credit = |keys| app.writer.credit_keys_now(keys);
            answer_report(reconciliation::repair(&reconciliation_sources(app), activity_id, credit).await?)
        }
        (&Method::GET, ["v1", "plugins"]) => ok(&plugins(app)),
        (
            _,
            ["healthz"]
            | ["v1", "scenes" | "keys" | "tokens:verify" | "grants"]
            | ["v1", "wallets", _, ..]
            | ["v1", "activities", _, _],
        ) => Err(ApiError::method_not_allowed(&method, &path)),
        _ => Err(ApiError::not_found(&path)),
    }
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
            let live = app
                .store
                .lookup(&verified.token.activity_id, &verified.token.order_no)
                .await?
                .map(|record| record.status());
            ok(&json!({ "valid": true, "token": token_json(&verified.token), "live_status": live }))
        }
        Err(error) => ok(&json!({ "valid": false, "code": "invalid_token", "message": error.to_string() })),
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

impl From<Result<grant::GrantResponse, grant::GrantError>> for GrantBatchItem {
    fn from(answer: Result<grant::GrantResponse, grant::GrantError>) -> Self {
        match answer {
            Ok(grant) => GrantBatchItem::Granted { status: 200, grant },
            Err(error) => {
                let ApiError { status, code, message } = error.into();
                GrantBatchItem::Refused { status, code, message }
            }
        }
    }
}
