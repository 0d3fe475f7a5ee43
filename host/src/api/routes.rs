//! Request routing and the handlers' HTTP glue; the logic lives in `grant`, `wallet` and
//! `capability`.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument as _;

use super::answers::TokenFields;
use super::{ApiError, REQUEST_BODY_BYTES_MAX, RESTORE_BODY_BYTES_MAX, body, operations, request_id};
use crate::access::apps::AppEntry;
use crate::access::session::Scope;
use crate::access::signature::AuthError;
use crate::access::{self, AccessError, Caller, Need, RequestParts};
use crate::app::App;
use crate::issuer::pb::RedPacketToken;

/// What a handler answers: a response, or an error the API answers as JSON.
pub(super) type Answer = Result<Response<Full<Bytes>>, ApiError>;

/// Answers one request; never fails: errors become JSON error answers. Every answer carries
/// the request's id ([`request_id`]), and the request's log lines name it.
pub async fn handle(app: &App, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let id = request_id::of(request.headers());
    let span = tracing::info_span!("request", id = %id);
    let path = request.uri().path().to_owned();
    let basic_admin = Endpoint::resolve(request.method(), &path).is_ok_and(Endpoint::takes_basic_admin);
    let mut response = match route(app, request).instrument(span).await {
        Ok(response) => response,
        Err(error) => respond(error.status, &error),
    };
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Ok(allow) = HeaderValue::from_str(&allowed_methods(&path))
    {
        response.headers_mut().insert(hyper::header::ALLOW, allow);
    }
    // A browser asks its user for the admin credential when told which scheme to use.
    if basic_admin && response.status() == StatusCode::UNAUTHORIZED {
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
pub(super) fn dashboard_page() -> Response<Full<Bytes>> {
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

pub(super) fn ok(body: &impl serde::Serialize) -> Answer {
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

pub(super) fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
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
    OpenApi,
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
            (&Method::GET, ["v1", "openapi.json"]) => Endpoint::OpenApi,
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
                    "scenes" | "keys" | "openapi.json" | "tokens:verify" | "grants" | "grants:batch" | "sessions"
                    | "identities" | "plugins" | "security",
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
            Endpoint::Health | Endpoint::OpenApi | Endpoint::Keys | Endpoint::Verify => Need::Public,
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

    /// The operation it is in the OpenAPI document (two routes of one path template, a wallet by
    /// act_id and by the app's user id, are one operation).
    fn operation(self) -> &'static str {
        match self {
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Dashboard => "dashboard",
            Endpoint::DashboardData => "dashboard_data",
            Endpoint::OpenApi => "openapi_document",
            Endpoint::Keys => "keys",
            Endpoint::Verify => "verify",
            Endpoint::Grant => "grant",
            Endpoint::GrantBatch => "grant_batch",
            Endpoint::Identities => "identities",
            Endpoint::Sessions => "sessions",
            Endpoint::Wallet(_) | Endpoint::WalletOf(_) => "wallet",
            Endpoint::Flow(_) | Endpoint::FlowOf(_) => "flow",
            Endpoint::Withdraw(_) => "withdraw",
            Endpoint::Restore(_) => "restore",
            Endpoint::Scenes => "scenes",
            Endpoint::Plugins => "plugins",
            Endpoint::Security => "security",
            Endpoint::Reconciliation(_) => "reconcile",
            Endpoint::Repair(_) => "repair",
            Endpoint::PacketSend => "packet_send",
            Endpoint::Packet(_) => "packet",
            Endpoint::PacketGrab(_) => "packet_grab",
            Endpoint::PacketRefund(_) => "packet_refund",
            Endpoint::PacketBooks(_) => "packet_books",
        }
    }

    /// Whether a backend that does not answer can make it answer 503.
    fn may_be_unavailable(self) -> bool {
        !matches!(self, Endpoint::Keys | Endpoint::OpenApi | Endpoint::Dashboard | Endpoint::Sessions)
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
            // A repair and a refund take nothing but what their path names; a body sent is
            // still read, because a signature covers it.
            | Endpoint::PacketRefund(_)
            | Endpoint::Repair(_) => Some(REQUEST_BODY_BYTES_MAX),
            _ => None,
        }
    }
}

/// A request of every route (each [`Endpoint`]), for the check that the OpenAPI document lists
/// every route: a new route goes here and into `openapi.rs`'s paths.
#[cfg(test)]
pub(super) const EXAMPLE_REQUESTS: [(Method, &str); 27] = [
    (Method::GET, "/healthz"),
    (Method::GET, "/metrics"),
    (Method::GET, "/dashboard"),
    (Method::GET, "/dashboard/data"),
    (Method::GET, "/v1/openapi.json"),
    (Method::GET, "/v1/keys"),
    (Method::POST, "/v1/tokens:verify"),
    (Method::POST, "/v1/grants"),
    (Method::POST, "/v1/grants:batch"),
    (Method::POST, "/v1/identities"),
    (Method::POST, "/v1/sessions"),
    (Method::GET, "/v1/wallets/7"),
    (Method::GET, "/v1/wallets/app_user:u-1"),
    (Method::GET, "/v1/wallets/7/flow"),
    (Method::GET, "/v1/wallets/app_user:u-1/flow"),
    (Method::POST, "/v1/wallets/7/withdrawals"),
    (Method::POST, "/v1/wallets/7/tokens:restore"),
    (Method::GET, "/v1/scenes"),
    (Method::GET, "/v1/plugins"),
    (Method::GET, "/v1/security"),
    (Method::GET, "/v1/activities/a/reconciliation"),
    (Method::POST, "/v1/activities/a/reconciliation:repair"),
    (Method::POST, "/v1/packets"),
    (Method::GET, "/v1/packets/p"),
    (Method::POST, "/v1/packets/p/grabs"),
    (Method::POST, "/v1/packets/p/refund"),
    (Method::GET, "/v1/packets/p/reconciliation"),
];

/// What the route table says of a route, for the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RouteFacts {
    /// Its operation's name.
    pub(super) endpoint: &'static str,
    /// Who may call it.
    pub(super) need: Need,
    /// Whether it reads a body.
    pub(super) reads_body: bool,
    /// Whether it takes the admin credential as HTTP Basic.
    pub(super) basic_admin: bool,
    /// Whether a backend that does not answer can make it answer 503.
    pub(super) may_be_unavailable: bool,
}

/// The facts of the route `method` and `path` take (`None`: no such route).
pub(super) fn route_facts(method: &Method, path: &str) -> Option<RouteFacts> {
    let endpoint = Endpoint::resolve(method, path).ok()?;
    Some(RouteFacts {
        endpoint: endpoint.operation(),
        need: endpoint.need(),
        reads_body: endpoint.body_bytes_max().is_some(),
        basic_admin: endpoint.takes_basic_admin(),
        may_be_unavailable: endpoint.may_be_unavailable(),
    })
}

/// The methods `path` is served with, for the `Allow` header of a 405.
fn allowed_methods(path: &str) -> String {
    [Method::GET, Method::POST]
        .into_iter()
        .filter(|method| Endpoint::resolve(method, path).is_ok())
        .map(|method| method.as_str().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `POST /v1/tokens:verify`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The token as the client holds it.
    pub token: String,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"act_id": 10001, "scopes": ["wallet:read"], "ttl_s": 600}))]
pub struct SessionBody {
    /// The user the session acts for.
    #[schema(minimum = 1)]
    pub act_id: i64,
    /// What the session may do.
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// Seconds until it expires, at most [`crate::access::session::SESSION_TTL_S_MAX`].
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_s: u64,
}

/// What a request to `method` and `path` needs of its caller (`None`: no such route), for
/// clients that pick their credential by route (`hongbao call`, the benchmarks).
pub fn need_of(method: &Method, path: &str) -> Option<Need> {
    Endpoint::resolve(method, path).ok().map(Endpoint::need)
}

/// A request that passed the access layer: its caller and its body.
pub(super) struct Admitted {
    /// Who is calling.
    pub(super) caller: Caller,
    content_type: Option<String>,
    body: Bytes,
    /// The query string, if any.
    pub(super) query: Option<String>,
}

impl Admitted {
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        body::decode(self.content_type.as_deref(), &self.body)
    }

    /// Refuses a body other than none or `{}`, on routes that take nothing but their path.
    pub(super) fn no_fields(&self) -> Result<(), ApiError> {
        if !self.body.is_empty() {
            self.json::<super::answers::NoFields>()?;
        }
        Ok(())
    }

    /// The app a request acts through: the signing app, or the app that minted the session.
    pub(super) fn app_id(&self) -> Result<i64, ApiError> {
        match &self.caller {
            Caller::App(app) => Ok(app.entry().app_id),
            Caller::User(session) => Ok(session.app_id),
            _ => Err(AccessError::Forbidden("this route needs a signed app request or a session".into()).into()),
        }
    }

    /// The user a session acts for; `None` for other callers.
    pub(super) fn session_user(&self) -> Option<i64> {
        match &self.caller {
            Caller::User(session) => Some(session.act_id),
            _ => None,
        }
    }

    /// Refuses a session that names a user by `app_user_id`: resolving a name binds it, and a
    /// session may act only for the act_id it was minted for.
    pub(super) fn names_users_by_act_id(&self, app_user_id: Option<&str>) -> Result<(), ApiError> {
        if app_user_id.is_some() && matches!(self.caller, Caller::User(_)) {
            return Err(AccessError::Forbidden("a session names its user by act_id, not app_user_id".into()).into());
        }
        Ok(())
    }

    /// Checks that a route whose user is named in the body may act for `act_id` with `scope`.
    pub(super) fn acting_for(&self, act_id: i64, scope: Scope) -> Result<(), ApiError> {
        access::authorize(&self.caller, Need::User { act_id, scope }).map_err(ApiError::from)
    }

    pub(super) fn app(&self) -> Result<&AppEntry, ApiError> {
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
        Endpoint::Health => operations::health(app).await,
        Endpoint::Metrics => operations::metrics(app).await,
        Endpoint::Dashboard => operations::dashboard(),
        Endpoint::DashboardData => operations::dashboard_data(app).await,
        Endpoint::OpenApi => operations::openapi_document(),
        Endpoint::Keys => operations::keys(app),
        Endpoint::Verify => operations::verify(app, &admitted).await,
        Endpoint::Grant => operations::grant(app, &admitted, started).await,
        Endpoint::GrantBatch => operations::grant_batch(app, &admitted, started).await,
        Endpoint::Identities => operations::identities(app, &admitted).await,
        Endpoint::Sessions => operations::sessions(app, &admitted),
        Endpoint::Wallet(act_id) => operations::wallet(app, &admitted, Some(act_id), None).await,
        Endpoint::WalletOf(user) => operations::wallet(app, &admitted, None, Some(user)).await,
        Endpoint::Flow(act_id) => operations::flow(app, &admitted, Some(act_id), None).await,
        Endpoint::FlowOf(user) => operations::flow(app, &admitted, None, Some(user)).await,
        Endpoint::Withdraw(act_id) => operations::withdraw(app, &admitted, act_id).await,
        Endpoint::Restore(act_id) => operations::restore(app, &admitted, act_id).await,
        Endpoint::PacketSend => operations::packet_send(app, &admitted).await,
        Endpoint::Packet(id) => operations::packet(app, &admitted, id).await,
        Endpoint::PacketGrab(id) => operations::packet_grab(app, &admitted, id).await,
        Endpoint::PacketRefund(id) => operations::packet_refund(app, &admitted, id).await,
        Endpoint::PacketBooks(id) => operations::packet_books(app, id).await,
        Endpoint::Scenes => operations::scenes(app),
        Endpoint::Plugins => operations::plugins(app),
        Endpoint::Security => operations::security(app),
        Endpoint::Reconciliation(activity_id) => operations::reconcile(app, activity_id).await,
        Endpoint::Repair(activity_id) => operations::repair(app, &admitted, activity_id).await,
    }
}

/// The fields of a token as JSON, for `tokens:verify` and `token inspect`.
pub fn token_json(token: &RedPacketToken) -> Value {
    serde_json::to_value(TokenFields::from(token)).unwrap_or(Value::Null)
}
