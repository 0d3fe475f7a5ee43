//! Requests that name their user by the app's own id: `POST /v1/identities`, grant bodies
//! (`POST /v1/grants` and each item of `grants:batch`) that carry `"app_user_id"` instead of
//! `"act_id"`, and wallet reads of `app_user:{app_user_id}`, resolved for the signing app
//! ([`identity::resolve_act_id`]).
//!
//! A grant body is decoded as [`GrantRequest`] (the same strict fields) with the user taken out
//! first, and the request is authorized before anything is bound, so a refused request binds
//! nobody.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::ApiError;
use crate::access::{self, apps::AppEntry};
use crate::app::App;
use crate::grant::{self, GRANT_BATCH_MAX, GrantBatchRequest, GrantRequest, GrantResponse};
use crate::identity::{self, Binding};
use crate::metrics::SceneCounters;

/// `POST /v1/identities`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityBody {
    /// The signing app's name for the user, `[A-Za-z0-9._:@-]{1,128}`.
    pub app_user_id: String,
    /// The user's phone number, when the app knows it: an optional `+`, then 6 to 20 digits
    /// (spaces and dashes ignored). Never stored; its keyed hash is.
    #[serde(default)]
    pub phone: Option<String>,
}

/// `POST /v1/identities` for the signing app.
pub async fn bind(app: &App, signer: &AppEntry, body: IdentityBody) -> Result<Binding, ApiError> {
    Ok(identity::bind(app, signer.app_id, &body.app_user_id, body.phone.as_deref()).await?)
}

/// The act_id of the signing app's user named in a wallet path (`app_user:{app_user_id}`),
/// resolved as a grant's: an unknown user is bound (and has an empty wallet).
pub async fn act_id_of(app: &App, signer: &AppEntry, app_user_id: &str) -> Result<i64, ApiError> {
    Ok(identity::resolve_act_id(app, signer.app_id, None, Some(app_user_id)).await?)
}

/// `POST /v1/grants:batch` as its body comes: each grant as a JSON object.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBatchBody {
    /// The grants, each as `POST /v1/grants` takes it.
    #[serde(deserialize_with = "super::body::objects")]
    pub grants: Vec<Map<String, Value>>,
}

/// A grant body with its user taken out: the request (its `act_id` a placeholder when the user
/// is named by `app_user_id`) and the app_user_id.
struct Named {
    request: GrantRequest,
    app_user_id: Option<String>,
}

/// Decodes a grant body that names its user by exactly one of `act_id` and `app_user_id`.
fn decode(mut object: Map<String, Value>) -> Result<Named, ApiError> {
    let app_user_id = match object.remove("app_user_id") {
        None if object.contains_key("act_id") => None,
        None => return Err(ApiError::bad_request("name the user by `act_id` or by `app_user_id`")),
        Some(_) if object.contains_key("act_id") => {
            return Err(ApiError::bad_request("name the user by `act_id` or by `app_user_id`, not both"));
        }
        Some(Value::String(app_user_id)) => {
            // A placeholder the grant's checks accept; replaced before the grant runs.
            object.insert("act_id".into(), Value::from(1));
            Some(app_user_id)
        }
        Some(_) => return Err(ApiError::bad_request("app_user_id must be a string")),
    };
    let request = serde_json::from_value(Value::Object(object))
        .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))?;
    Ok(Named { request, app_user_id })
}

/// The grant a decoded body means, its user resolved for the signing app.
async fn resolve(app: &App, signer: &AppEntry, named: Named) -> Result<GrantRequest, ApiError> {
    let Named { mut request, app_user_id } = named;
    if let Some(app_user_id) = app_user_id {
        request.act_id = identity::resolve_act_id(app, signer.app_id, None, Some(&app_user_id)).await?;
    }
    Ok(request)
}

/// The metrics counters of the scene a grant names.
fn counters_of(app: &App, request: &GrantRequest) -> Arc<SceneCounters> {
    let (activity_id, scene_id) = (request.activity_id.as_str(), request.scene_id.as_str());
    app.metrics.scene(activity_id, scene_id, || app.registry.snapshot().scene(activity_id, scene_id).is_some())
}

/// A grant answer's outcome for the metrics: `granted`, `replayed`, or the refusal's code.
fn outcome(answer: &Result<GrantResponse, ApiError>) -> &'static str {
    match answer {
        Ok(response) if response.replayed => "replayed",
        Ok(_) => "granted",
        Err(error) => error.code,
    }
}

/// `POST /v1/grants`.
pub async fn grant(app: &App, signer: &AppEntry, body: Map<String, Value>) -> Result<GrantResponse, ApiError> {
    let named = decode(body)?;
    let counters = counters_of(app, &named.request);
    let answer = async {
        access::authorize_grant(signer, named.request.app_id, &named.request.activity_id)?;
        let request = resolve(app, signer, named).await?;
        Ok(grant::grant(app, request).await?)
    }
    .await;
    counters.count(outcome(&answer));
    answer
}

/// `POST /v1/grants:batch`: every item decoded and authorized first (any failure refuses the
/// whole batch, as before), then each item's user resolved and each grant run on its own; an
/// item whose user cannot be resolved is refused alone.
pub async fn grant_batch(
    app: &App,
    signer: &AppEntry,
    body: GrantBatchBody,
) -> Result<Vec<Result<GrantResponse, ApiError>>, ApiError> {
    if body.grants.is_empty() || body.grants.len() > GRANT_BATCH_MAX {
        return Err(ApiError::bad_request(format!(
            "a batch carries 1 to {GRANT_BATCH_MAX} grants, not {}",
            body.grants.len()
        )));
    }
    let named = body.grants.into_iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    for item in &named {
        access::authorize_grant(signer, item.request.app_id, &item.request.activity_id)?;
    }
    let counters: Vec<Arc<SceneCounters>> = named.iter().map(|item| counters_of(app, &item.request)).collect();
    let resolved = futures_util::future::join_all(named.into_iter().map(|item| resolve(app, signer, item))).await;
    let mut answers: Vec<Option<Result<GrantResponse, ApiError>>> = Vec::with_capacity(resolved.len());
    let mut requests = Vec::new();
    for item in resolved {
        match item {
            Ok(request) => {
                requests.push(request);
                answers.push(None);
            }
            Err(error) => answers.push(Some(Err(error))),
        }
    }
    let mut granted = if requests.is_empty() {
        Vec::new().into_iter()
    } else {
        grant::grant_batch(app, GrantBatchRequest { grants: requests }).await?.into_iter()
    };
    let answers: Vec<Result<GrantResponse, ApiError>> = answers
        .into_iter()
        .map(|answer| match answer {
            Some(refused) => refused,
            None => granted.next().expect("one answer per request").map_err(ApiError::from),
        })
        .collect();
    for (counters, answer) in counters.iter().zip(&answers) {
        counters.count(outcome(answer));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: Value) -> Map<String, Value> {
        let mut object = serde_json::json!({
            "app_id": 1128, "activity_id": "a", "scene_id": "s", "rain_id": 1, "award_type": "cash", "stage": 1,
        })
        .as_object()
        .unwrap()
        .clone();
        object.extend(extra.as_object().unwrap().clone());
        object
    }

    // Proves a grant body names its user by exactly one of act_id and app_user_id, and keeps
    // the grant's strict fields (an unknown field is still refused).
    #[test]
    fn grant_bodies_name_their_user_once() {
        let by_act = decode(body(serde_json::json!({ "act_id": 7 }))).unwrap();
        assert_eq!((by_act.request.act_id, by_act.app_user_id), (7, None));
        let by_user = decode(body(serde_json::json!({ "app_user_id": "u-1" }))).unwrap();
        assert_eq!(by_user.app_user_id.as_deref(), Some("u-1"));
        for bad in [
            serde_json::json!({}),
            serde_json::json!({ "act_id": 7, "app_user_id": "u-1" }),
            serde_json::json!({ "app_user_id": 5 }),
            serde_json::json!({ "app_user_id": "u-1", "extra": 1 }),
        ] {
            let error = decode(body(bad.clone())).err().unwrap_or_else(|| panic!("{bad} decoded"));
            assert_eq!((error.status, error.code), (400, "bad_request"), "{bad}");
        }
    }
}
