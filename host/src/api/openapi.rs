//! The OpenAPI 3.1 document (`GET /v1/openapi.json`), generated, never kept by hand: utoipa
//! derives it from each handler's description (`operations`) and the request and answer types
//! they use; then [`RouteTable`] completes every operation from the route table the access layer
//! itself applies — its security (from the route's `need()`), the refusals every route of its
//! kind can answer (401 and 403 on guarded routes; 400, 408, 413 and 415 on routes that read a
//! body) — and lists every error code in the error schema ([`ERROR_CODES`]).

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::Method;
use utoipa::OpenApi as _;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use super::error::ERROR_CODES;
use super::operations;
use super::routes::{RouteFacts, route_facts};
use crate::access::Need;

/// The security scheme of signed app requests.
pub const APP_SIGNATURE: &str = "app_signature";
/// The security scheme of user sessions.
pub const SESSION: &str = "session";
/// The security scheme of the admin credential.
pub const ADMIN: &str = "admin";
/// The admin credential as HTTP Basic, from a browser (the dashboard only).
pub const ADMIN_BASIC: &str = "admin_basic";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hongbao",
        description = "Red packets (红包) at Spring Festival scale: grants that mint signed tokens at once, a throttled ledger writer, wallets that show credited + pending, group red packets. Every amount is integer cents in a field ending `_cents`; every error is `{\"code\", \"message\"}` with a stable code.",
        license(name = "Apache-2.0"),
    ),
    paths(
        operations::health,
        operations::keys,
        operations::verify,
        operations::openapi_document,
        operations::grant,
        operations::grant_batch,
        operations::identities,
        operations::sessions,
        operations::wallet,
        operations::flow,
        operations::withdraw,
        operations::restore,
        operations::packet_send,
        operations::packet,
        operations::packet_grab,
        operations::packet_refund,
        operations::packet_books,
        operations::scenes,
        operations::plugins,
        operations::security,
        operations::reconcile,
        operations::repair,
        operations::metrics,
        operations::dashboard,
        operations::dashboard_data,
    ),
    modifiers(&RouteTable),
    tags(
        (name = "public", description = "Anyone: health, the signing keys, token verification, this document."),
        (name = "grants", description = "App backends, signed: grants, identities, sessions."),
        (name = "wallets", description = "A signed app request, or the user's session with the scope the route needs."),
        (name = "packets", description = "Group red packets between people."),
        (name = "operators", description = "The admin credential: the scene tree, plugins, books, repairs, metrics, the dashboard."),
    ),
)]
struct ApiDoc;

/// The document as JSON, made once.
pub fn document_json() -> Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| Bytes::from(ApiDoc::openapi().to_json().expect("the document serializes"))).clone()
}

/// The document.
pub fn document() -> OpenApi {
    ApiDoc::openapi()
}

/// Completes the derived document from the route table (see the module docs).
struct RouteTable;

impl utoipa::Modify for RouteTable {
    fn modify(&self, openapi: &mut OpenApi) {
        add_security_schemes(openapi);
        list_error_codes(openapi);
        for (template, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in [(Method::GET, &mut item.get), (Method::POST, &mut item.post)] {
                let Some(operation) = operation else { continue };
                let facts = route_facts(&method, &example_path(template))
                    .unwrap_or_else(|| panic!("{method} {template} is documented but not served"));
                complete(operation, facts);
            }
        }
    }
}

/// A path the route table resolves for `template`: each `{parameter}` given a valid value.
pub fn example_path(template: &str) -> String {
    template.replace("{wallet}", "1").replace("{act_id}", "1").replace("{packet_id}", "p").replace("{activity_id}", "a")
}

fn complete(operation: &mut Operation, facts: RouteFacts) {
    let requirement = |scheme: &str| SecurityRequirement::new(scheme, Vec::<String>::new());
    operation.security = match facts.need {
        Need::Public => None,
        Need::App => Some(vec![requirement(APP_SIGNATURE)]),
        Need::User { .. } | Need::AppOrSession { .. } => Some(vec![requirement(APP_SIGNATURE), requirement(SESSION)]),
        Need::Admin if facts.basic_admin => Some(vec![requirement(ADMIN), requirement(ADMIN_BASIC)]),
        Need::Admin => Some(vec![requirement(ADMIN)]),
    };
    let mut refusals: Vec<(&str, &str)> = Vec::new();
    if facts.need != Need::Public {
        refusals.push(("401", "`unauthenticated`: no credential, or one that does not hold."));
        refusals.push(("403", "`forbidden` (or a refusal of its own): the credential may not call this route."));
    }
    let has_parameters = operation.parameters.as_ref().is_some_and(|parameters| !parameters.is_empty());
    if facts.reads_body || has_parameters {
        refusals.push(("400", "`bad_request`: a field, the path or the query is not of its domain."));
    }
    if facts.reads_body {
        refusals.push(("408", "`request_timeout`: the body did not arrive in time."));
        refusals.push(("413", "`body_too_large`: the body is over the route's bound."));
        refusals.push(("415", "`unsupported_media_type`: the body is not `application/json`."));
    }
    if facts.may_be_unavailable {
        refusals.push(("503", "`unavailable` (or a code of its own): a backend did not answer; nothing changed."));
    }
    for (status, description) in refusals {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(error_response(description)));
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build())
        .build()
}

fn add_security_schemes(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        APP_SIGNATURE,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "An app backend's signed request: `HONGBAO-HMAC-SHA256 app_id=…,key_id=…,timestamp=UNIX_SECONDS,nonce=N,signature=S` where S = base64url_nopad(HMAC-SHA256(secret, METHOD \\n PATH_AND_QUERY \\n timestamp \\n nonce \\n hex(sha256(body)) \\n)); the timestamp within 300 s, the nonce (16 to 64 of [A-Za-z0-9_-]) never used twice.",
        ))),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("hbs_… (POST /v1/sessions)")
                .description(Some("A user session an app minted for one act_id and a few scopes."))
                .build(),
        ),
    );
    components.add_security_scheme(
        ADMIN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("hbadmin_… (DATA/keys/admin.token)")
                .description(Some("The operators' credential."))
                .build(),
        ),
    );
    components.add_security_scheme(
        ADMIN_BASIC,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some("The admin credential from a browser: user `admin`, the credential as the password."))
                .build(),
        ),
    );
}

/// The error schema's `code` as the enum of every code there is.
fn list_error_codes(openapi: &mut OpenApi) {
    let Some(components) = openapi.components.as_mut() else { return };
    let Some(RefOr::T(Schema::Object(error))) = components.schemas.get_mut("ApiError") else {
        panic!("the ApiError schema is not an object");
    };
    let meanings: Vec<String> = ERROR_CODES.iter().map(|(code, meaning)| format!("`{code}`: {meaning}")).collect();
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ERROR_CODES.iter().map(|(code, _)| *code)))
        .description(Some(format!("Stable, for programs. {}.", meanings.join("; "))))
        .build();
    error.properties.insert("code".to_owned(), RefOr::T(Schema::Object(code)));
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the document is OpenAPI 3.1, every operation it lists is served, and every route
    // is in it, with the security its route table asks for.
    #[test]
    fn the_document_covers_every_route_and_only_those() {
        let document = serde_json::to_value(document()).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().unwrap();
        let mut operations = 0;
        for (template, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let facts = route_facts(&method, &example_path(template)).expect("served");
                let schemes: Vec<&str> = operation["security"]
                    .as_array()
                    .map(|list| {
                        list.iter().flat_map(|one| one.as_object().unwrap().keys().map(String::as_str)).collect()
                    })
                    .unwrap_or_default();
                assert_eq!(schemes.is_empty(), facts.need == Need::Public, "{method} {template}: {schemes:?}");
                operations += 1;
            }
        }
        let mut documented = std::collections::BTreeSet::new();
        for (template, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let facts = route_facts(&method, &example_path(template)).expect("served");
                assert!(documented.insert(facts.endpoint), "{} documented twice", facts.endpoint);
            }
        }
        let served: std::collections::BTreeSet<&str> = super::super::routes::EXAMPLE_REQUESTS
            .iter()
            .map(|(method, path)| route_facts(method, path).expect("an example of a route").endpoint)
            .collect();
        assert_eq!(documented, served, "served routes missing from the document, or the other way round");
        assert_eq!(operations, documented.len());
        let codes = &document["components"]["schemas"]["ApiError"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), ERROR_CODES.len());
    }

    // Proves the bounds the document states are the ones the host applies (they are written as
    // literals in the schema attributes; a bound changed in one place fails here).
    #[test]
    fn the_documents_bounds_are_the_hosts() {
        let document = serde_json::to_value(document()).unwrap();
        let property = |schema: &str, field: &str, bound: &str| {
            document["components"]["schemas"][schema]["properties"][field][bound].as_u64()
        };
        let bounds = [
            ("SessionBody", "ttl_s", "maximum", crate::access::session::SESSION_TTL_S_MAX),
            ("SendBody", "shares", "maximum", u64::from(crate::packet::PACKET_SHARES_MAX)),
            ("SendBody", "expires_in_s", "maximum", crate::packet::PACKET_EXPIRES_IN_S_MAX),
            ("SendBody", "grabbers", "maxItems", crate::packet::PACKET_GRABBERS_MAX as u64),
            ("SendBody", "greeting", "maxLength", crate::packet::GREETING_CHARS_MAX as u64),
            ("RestoreBody", "tokens", "maxItems", crate::wallet::RESTORE_TOKENS_MAX as u64),
            ("GrantBatchBody", "grants", "maxItems", crate::grant::GRANT_BATCH_MAX as u64),
        ];
        for (schema, field, bound, host) in bounds {
            assert_eq!(property(schema, field, bound), Some(host), "{schema}.{field} {bound}");
        }
    }
}
