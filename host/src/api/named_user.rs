//! Requests that name their user by the app's own id: `POST /v1/identities`, grant bodies
//! (`POST /v1/grants` and each item of `grants:batch`) that carry `"app_user_id"` instead of
//! `"act_id"`, and wallet reads of `app_user:{app_user_id}`, resolved for the signing app
//! ([`identity::resolve_act_id`]).
//!
//! A grant body is decoded as [`GrantRequest`] (the same strict fields) with the user taken out
//! first, and the request is authorized before anything is bound, so a refused request binds
//! nobody.

use std::sync::Arc;

use super::ApiError;
use crate::access::{self, apps::AppEntry};
use crate::app::App;
use crate::grant::{self, GRANT_BATCH_MAX, GrantBatchRequest, GrantRequest, GrantResponse};
use crate::identity::{self, Binding};
use crate::metrics::SceneCounters;

/// `POST /v1/identities`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"app_user_id": "shop-user-42", "phone": "+86 138 0013 8000"}))]
pub struct IdentityBody {
    /// The signing app's name for the user, `[A-Za-z0-9._:@-]{1,128}`.
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
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

/// A grant as `POST /v1/grants` takes it, and each item of `grants:batch`: the fields of
/// [`GrantRequest`], the user named by exactly one of `act_id` and `app_user_id`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"app_id": 1128, "act_id": 10001, "activity_id": "spring-festival-2027",
    "scene_id": "eve-rain", "award_type": "cash", "rain_id": 1, "stage": 0}))]
pub struct GrantBody {
    /// The app the user is in (the signing app, or one it may grant for).
    pub app_id: i64,
    /// The user (or `app_user_id`: exactly one of the two).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub act_id: Option<i64>,
    /// The user by the signing app's own id, `[A-Za-z0-9._:@-]{1,128}`, bound to an act_id on
    /// first use (see `POST /v1/identities`).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    pub app_user_id: Option<String>,
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

/// `POST /v1/grants:batch` as its body comes: each grant as a JSON object, decoded on its own.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBatchBody {
    /// The grants, 1 to 100, each as `POST /v1/grants` takes it.
    #[serde(deserialize_with = "super::body::objects")]
    #[schema(min_items = 1, max_items = 100)]
    pub grants: Vec<GrantBody>,
}

/// A grant body with its user taken out: the request (its `act_id` a placeholder when the user
/// is named by `app_user_id`) and the app_user_id.
struct Named {
    request: GrantRequest,
    app_user_id: Option<String>,
}

/// Takes the user out of a grant body, which names it by exactly one of `act_id` and
/// `app_user_id`.
fn decode(body: GrantBody) -> Result<Named, ApiError> {
    let act_id = match (body.act_id, &body.app_user_id) {
        (Some(act_id), None) => act_id,
        // A placeholder the grant's checks accept; replaced before the grant runs.
        (None, Some(_)) => 1,
        (None, None) => return Err(ApiError::bad_request("name the user by `act_id` or by `app_user_id`")),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("name the user by `act_id` or by `app_user_id`, not both"));
        }
    };
    let request = GrantRequest {
        app_id: body.app_id,
        act_id,
        activity_id: body.activity_id,
        scene_id: body.scene_id,
        rain_id: body.rain_id,
        award_type: body.award_type,
        stage: body.stage,
        amount_cents: body.amount_cents,
        locale: body.locale,
    };
    Ok(Named { request, app_user_id: body.app_user_id })
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
pub async fn grant(app: &App, signer: &AppEntry, body: GrantBody) -> Result<GrantResponse, ApiError> {
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

    /// A grant body with `extra`'s fields, decoded as `POST /v1/grants` decodes its body.
    fn decoded(extra: serde_json::Value) -> Result<Named, ApiError> {
        let mut object = serde_json::json!({
            "app_id": 1128, "activity_id": "a", "scene_id": "s", "rain_id": 1, "award_type": "cash", "stage": 1,
        });
        object.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let bytes = serde_json::to_vec(&object).unwrap();
        decode(super::super::body::decode(Some("application/json"), &bytes)?)
    }

    // Proves a grant body names its user by exactly one of act_id and app_user_id, and keeps
    // the grant's strict fields (an unknown field is still refused).
    #[test]
    fn grant_bodies_name_their_user_once() {
        let by_act = decoded(serde_json::json!({ "act_id": 7 })).unwrap();
        assert_eq!((by_act.request.act_id, by_act.app_user_id), (7, None));
        let by_user = decoded(serde_json::json!({ "app_user_id": "u-1" })).unwrap();
        assert_eq!(by_user.app_user_id.as_deref(), Some("u-1"));
        for bad in [
            serde_json::json!({}),
            serde_json::json!({ "act_id": 7, "app_user_id": "u-1" }),
            serde_json::json!({ "app_user_id": 5 }),
            serde_json::json!({ "app_user_id": "u-1", "extra": 1 }),
        ] {
            let error = decoded(bad.clone()).err().unwrap_or_else(|| panic!("{bad} decoded"));
            assert_eq!((error.status, error.code), (400, "bad_request"), "{bad}");
        }
    }
}
