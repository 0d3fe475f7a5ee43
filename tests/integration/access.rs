//! Who may move money: signed app requests, user sessions, the admin credential and strict input,
//! against the real server. Every refusal here would pass without its check.

use std::process::Command;

use serde_json::{Value, json};

use crate::deployment::{Deployment, conformance};
use crate::support::{
    Auth, SCOPED_APP, Server, TEST_ADMIN_TOKEN, grant_body, raw_request, request_as, signed_header, signed_header_at,
    test_secret, wait_for,
};

/// The non-public routes, each with a body it takes.
fn guarded_routes() -> Vec<(&'static str, String, Value)> {
    vec![
        ("POST", "/v1/grants".into(), grant_body(6001, "rain", 1, 0)),
        ("POST", "/v1/grants:batch".into(), json!({ "grants": [grant_body(6001, "rain", 1, 1)] })),
        ("POST", "/v1/sessions".into(), json!({ "act_id": 6001, "scopes": ["wallet:read"], "ttl_s": 60 })),
        ("GET", "/v1/wallets/6001".into(), Value::Null),
        ("GET", "/v1/wallets/6001/flow".into(), Value::Null),
        ("POST", "/v1/wallets/6001/withdrawals".into(), json!({ "request_id": "w1", "amount_cents": 1 })),
        ("POST", "/v1/wallets/6001/tokens:restore".into(), json!({ "tokens": [] })),
        ("GET", "/v1/scenes".into(), Value::Null),
        ("GET", "/v1/plugins".into(), Value::Null),
        ("GET", "/metrics".into(), Value::Null),
        ("GET", "/dashboard".into(), Value::Null),
        ("GET", "/dashboard/data".into(), Value::Null),
        ("GET", "/v1/activities/test-campaign/reconciliation".into(), Value::Null),
        ("POST", "/v1/activities/test-campaign/reconciliation:repair".into(), json!({})),
    ]
}

fn text(body: &Value) -> String {
    if body.is_null() { String::new() } else { body.to_string() }
}

fn code(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["code"].as_str())
}

// Proves every non-public route refuses an unsigned request with 401, and the public ones need
// nothing.
conformance!(unsigned_requests_are_refused_on_every_guarded_route);
fn unsigned_requests_are_refused_on_every_guarded_route(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    for (method, path, body) in guarded_routes() {
        let answer = request_as(&server.addr, &Auth::None, method, &path, &text(&body), "application/json");
        assert_eq!(code(&answer), (401, Some("unauthenticated")), "{method} {path}: {}", answer.1);
    }
    for (method, path, body) in
        [("GET", "/healthz", ""), ("GET", "/v1/keys", ""), ("POST", "/v1/tokens:verify", r#"{"token":"x"}"#)]
    {
        let answer = request_as(&server.addr, &Auth::None, method, path, body, "application/json");
        assert_eq!(answer.0, 200, "{method} {path}: {}", answer.1);
    }
    // The anonymous drain of the issue: a withdrawal from someone else's wallet.
    server.grant_rain(6002, 1, 0);
    server.wait_credited(6002);
    let drain = request_as(
        &server.addr,
        &Auth::None,
        "POST",
        "/v1/wallets/6002/withdrawals",
        r#"{"request_id":"x","amount_cents":1}"#,
        "application/json",
    );
    assert_eq!(drain.0, 401);
    assert_eq!(server.wallet(6002)["balance_cents"], 88, "nothing moved");
}

// Proves a signature holds only for the exact request: another secret, an altered body, an
// altered path, a stale timestamp, a reused nonce, an unknown app or key and a malformed
// header are all 401, and say which.
conformance!(altered_or_replayed_signatures_are_refused);
fn altered_or_replayed_signatures_are_refused(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    let body = grant_body(6101, "rain", 1, 0).to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let secret = test_secret(1128);
    let signed = |secret: &str, path: &str, signed_body: &str, timestamp: u64, nonce: &str| {
        signed_header_at(1128, "test-key", secret, "POST", path, signed_body.as_bytes(), timestamp, nonce)
    };
    let send = |header: String, path: &str, sent_body: &str| {
        request_as(&server.addr, &Auth::Header(header), "POST", path, sent_body, "application/json")
    };
    let cases = [
        (
            "wrong secret",
            signed("hbsk_wrong", "/v1/grants", &body, now, "nonce-wrong-secret-01"),
            "/v1/grants",
            body.clone(),
            "signature",
        ),
        (
            "altered body",
            signed(&secret, "/v1/grants", &body, now, "nonce-altered-body-01"),
            "/v1/grants",
            body.replace("6101", "6102"),
            "signature",
        ),
        (
            "altered path",
            signed(&secret, "/v1/grants:batch", &body, now, "nonce-altered-path-01"),
            "/v1/grants",
            body.clone(),
            "signature",
        ),
        (
            "stale timestamp",
            signed(&secret, "/v1/grants", &body, now - 301, "nonce-stale-time-0001"),
            "/v1/grants",
            body.clone(),
            "timestamp",
        ),
        (
            "future timestamp",
            // 301 s ahead of `now` is only 300 s ahead once the server reads its clock a second
            // later (a loaded machine): a minute of slack keeps the case a refusal.
            signed(&secret, "/v1/grants", &body, now + 361, "nonce-future-time-001"),
            "/v1/grants",
            body.clone(),
            "timestamp",
        ),
        (
            "unknown key",
            signed_header(1128, "no-such-key", &secret, "POST", "/v1/grants", body.as_bytes()),
            "/v1/grants",
            body.clone(),
            "unknown app",
        ),
        (
            "unknown app",
            signed_header(31337, "test-key", &secret, "POST", "/v1/grants", body.as_bytes()),
            "/v1/grants",
            body.clone(),
            "unknown app",
        ),
        ("malformed", "HONGBAO-HMAC-SHA256 app_id=1128".to_owned(), "/v1/grants", body.clone(), "malformed"),
        ("other scheme", "Digest username=\"user\"".to_owned(), "/v1/grants", body.clone(), "malformed"),
        ("Basic on an app route", "Basic dXNlcjpwYXNz".to_owned(), "/v1/grants", body.clone(), "only the dashboard"),
    ];
    for (what, header, path, sent_body, says) in cases {
        let answer = send(header, path, &sent_body);
        assert_eq!(code(&answer), (401, Some("unauthenticated")), "{what}: {}", answer.1);
        assert!(answer.1["message"].as_str().unwrap().contains(says), "{what}: {}", answer.1);
        assert!(!answer.1.to_string().contains(&secret), "{what}: the answer shows the secret");
    }
    // The same signed request twice: the second is a replay of the nonce.
    let header = signed(&secret, "/v1/grants", &body, now, "nonce-used-once-00001");
    assert_eq!(send(header.clone(), "/v1/grants", &body).0, 200);
    let again = send(header, "/v1/grants", &body);
    assert_eq!(code(&again), (401, Some("unauthenticated")));
    assert!(again.1["message"].as_str().unwrap().contains("nonce"), "{}", again.1);
    assert!(server.wallet(6102)["pending_count"] == 0 && server.wallet(6102)["credited_cents"] == 0, "nothing granted");
}

// Proves an app acts only as itself, only in its activities and in scenes that list it: a body
// naming another app, an activity out of the app's scope, and a scene without the app are 403.
#[test]
fn apps_act_only_within_their_scope() {
    let server = Server::start(&[]);
    let as_app = |app_id: i64, body: &Value| {
        request_as(&server.addr, &Auth::App(app_id), "POST", "/v1/grants", &body.to_string(), "application/json")
    };
    let mut other_app = grant_body(6201, "rain", 1, 0);
    other_app["app_id"] = json!(2329);
    assert_eq!(code(&as_app(1128, &other_app)), (403, Some("forbidden")), "signed by 1128, names 2329");
    let mut scoped = grant_body(6201, "rain", 1, 0);
    scoped["app_id"] = json!(SCOPED_APP);
    let answer = as_app(SCOPED_APP, &scoped);
    assert_eq!(code(&answer), (403, Some("forbidden")), "{}", answer.1);
    assert!(answer.1["message"].as_str().unwrap().contains("not scoped"), "{}", answer.1);
    let mut not_listed = grant_body(6201, "rain", 1, 0);
    not_listed["app_id"] = json!(9);
    assert_eq!(code(&as_app(9, &not_listed)), (403, Some("app_not_allowed")), "the scene does not list app 9");
    let batch = json!({ "grants": [grant_body(6201, "rain", 1, 1), other_app] });
    let answer =
        request_as(&server.addr, &Auth::App(1128), "POST", "/v1/grants:batch", &batch.to_string(), "application/json");
    assert_eq!(code(&answer), (403, Some("forbidden")), "a batch with one grant of another app is refused whole");
    assert_eq!(server.wallet(6201)["pending_count"], 0, "nothing was granted");
}

fn mint_session(server: &Server, act_id: i64, scopes: &[&str], ttl_s: u64) -> String {
    let body = json!({ "act_id": act_id, "scopes": scopes, "ttl_s": ttl_s });
    let (status, answer) = server.post("/v1/sessions", &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["expires_at_ms"].as_u64().unwrap() > 0);
    answer["session"].as_str().unwrap().to_owned()
}

// Proves a session acts only for its user and with its scopes, and an altered, expired or
// foreign-keyed one is refused.
conformance!(sessions_act_for_one_user_with_their_scopes);
fn sessions_act_for_one_user_with_their_scopes(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    server.grant_rain(6301, 1, 0);
    server.wait_credited(6301);
    let read = mint_session(&server, 6301, &["wallet:read"], 600);
    let bearer = |session: &str| Auth::Header(format!("Bearer {session}"));
    let get = |auth: &Auth, path: &str| request_as(&server.addr, auth, "GET", path, "", "application/json");
    assert_eq!(get(&bearer(&read), "/v1/wallets/6301").1["balance_cents"], 88);
    assert_eq!(get(&bearer(&read), "/v1/wallets/6301/flow").0, 200);
    assert_eq!(code(&get(&bearer(&read), "/v1/wallets/6302")), (403, Some("forbidden")), "another user's wallet");
    let withdraw = request_as(
        &server.addr,
        &bearer(&read),
        "POST",
        "/v1/wallets/6301/withdrawals",
        r#"{"request_id":"s1","amount_cents":1}"#,
        "application/json",
    );
    assert_eq!(code(&withdraw), (403, Some("forbidden")), "no wallet:withdraw scope");
    let grant = request_as(
        &server.addr,
        &bearer(&read),
        "POST",
        "/v1/grants",
        &grant_body(6301, "rain", 2, 0).to_string(),
        "application/json",
    );
    assert_eq!(code(&grant), (403, Some("forbidden")), "sessions do not grant");
    assert_eq!(code(&get(&bearer(&read), "/v1/scenes")), (403, Some("forbidden")), "sessions are not admin");

    let mut altered = read.clone();
    let flipped = if altered.ends_with('A') { 'B' } else { 'A' };
    altered.pop();
    altered.push(flipped);
    assert_eq!(code(&get(&bearer(&altered), "/v1/wallets/6301")), (401, Some("unauthenticated")), "altered");

    let short = mint_session(&server, 6301, &["wallet:read"], 1);
    wait_for(std::time::Duration::from_secs(30), || (get(&bearer(&short), "/v1/wallets/6301").0 == 401).then_some(()));
    let expired = get(&bearer(&short), "/v1/wallets/6301");
    assert!(expired.1["message"].as_str().unwrap().contains("expired"), "{}", expired.1);

    let withdraw_session = mint_session(&server, 6301, &["wallet:withdraw", "wallet:read"], 600);
    let moved = request_as(
        &server.addr,
        &bearer(&withdraw_session),
        "POST",
        "/v1/wallets/6301/withdrawals",
        r#"{"request_id":"s2","amount_cents":8}"#,
        "application/json",
    );
    assert_eq!(moved.0, 200, "{}", moved.1);
    // A host with other credentials does not take this host's sessions.
    let other = Server::start(&[]);
    std::fs::write(other.data.join("keys/session.key"), [9_u8; 32]).unwrap();
    let mut other = other;
    other.kill9();
    other.launch(&[]);
    assert_eq!(
        code(&request_as(&other.addr, &bearer(&read), "GET", "/v1/wallets/6301", "", "application/json")),
        (401, Some("unauthenticated"))
    );
    for bad in [
        json!({ "act_id": 6301, "scopes": ["wallet:read"], "ttl_s": 3601 }),
        json!({ "act_id": 6301, "scopes": [], "ttl_s": 60 }),
        json!({ "act_id": 6301, "scopes": ["admin"], "ttl_s": 60 }),
    ] {
        assert_eq!(server.post("/v1/sessions", &bad).0, 400, "{bad}");
    }
}

// Proves the admin routes take only the admin credential: app signatures and sessions are 403,
// a wrong admin credential 401.
#[test]
fn admin_routes_refuse_apps_and_sessions() {
    let server = Server::start(&[]);
    let session = mint_session(&server, 6401, &["wallet:read", "wallet:withdraw", "tokens:restore"], 600);
    for path in [
        "/v1/scenes",
        "/v1/plugins",
        "/metrics",
        "/dashboard",
        "/dashboard/data",
        "/v1/activities/test-campaign/reconciliation",
    ] {
        let admin = request_as(
            &server.addr,
            &Auth::Header(format!("Bearer {TEST_ADMIN_TOKEN}")),
            "GET",
            path,
            "",
            "application/json",
        );
        assert_eq!(admin.0, 200, "{path}: {}", admin.1);
        let app = request_as(&server.addr, &Auth::App(1128), "GET", path, "", "application/json");
        assert_eq!(code(&app), (403, Some("forbidden")), "{path} with an app signature");
        let user =
            request_as(&server.addr, &Auth::Header(format!("Bearer {session}")), "GET", path, "", "application/json");
        assert_eq!(code(&user), (403, Some("forbidden")), "{path} with a session");
        let wrong =
            request_as(&server.addr, &Auth::Header("Bearer hbadmin_guess".into()), "GET", path, "", "application/json");
        assert_eq!(code(&wrong), (401, Some("unauthenticated")), "{path} with a wrong admin credential");
    }
    let repair = request_as(
        &server.addr,
        &Auth::App(1128),
        "POST",
        "/v1/activities/test-campaign/reconciliation:repair",
        "{}",
        "application/json",
    );
    assert_eq!(code(&repair), (403, Some("forbidden")));
    let admin_grant = request_as(
        &server.addr,
        &Auth::Header(format!("Bearer {TEST_ADMIN_TOKEN}")),
        "POST",
        "/v1/grants",
        &grant_body(6401, "rain", 1, 0).to_string(),
        "application/json",
    );
    assert_eq!(code(&admin_grant), (403, Some("forbidden")), "the admin credential does not grant");
}

// Proves bodies must be JSON objects sent as application/json: text/plain, a form and multipart
// are 415, a JSON array in field order and a truncated body 400, and none of them moves money.
#[test]
fn bodies_must_be_json_objects() {
    let server = Server::start(&[]);
    let body = grant_body(6501, "rain", 1, 0).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let answer = request_as(&server.addr, &Auth::Default, "POST", "/v1/grants", &body, content_type);
        assert_eq!(code(&answer), (415, Some("unsupported_media_type")), "{content_type}");
    }
    let array = json!([1128, 6501, "test-campaign", "rain", 1, "cash", 0]).to_string();
    let answer = request_as(&server.addr, &Auth::App(1128), "POST", "/v1/grants", &array, "application/json");
    assert_eq!(code(&answer), (400, Some("bad_request")), "{}", answer.1);
    let withdrawal = request_as(
        &server.addr,
        &Auth::App(1128),
        "POST",
        "/v1/wallets/6501/withdrawals",
        r#"["x", 1]"#,
        "application/json",
    );
    assert_eq!(code(&withdrawal), (400, Some("bad_request")));
    // A body shorter than its Content-Length: the connection ends before the body does.
    let truncated = truncated_request(&server.addr, &body);
    assert!(truncated.starts_with("HTTP/1.1 400"), "{truncated}");
    assert_eq!(server.wallet(6501)["pending_count"], 0, "nothing was granted");
}

/// Sends a signed grant whose body stops half-way through its declared length, then closes the
/// writing side; answers the response head.
fn truncated_request(addr: &str, body: &str) -> String {
    use std::io::{Read as _, Write as _};
    let header = signed_header(1128, "test-key", &test_secret(1128), "POST", "/v1/grants", body.as_bytes());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "POST /v1/grants HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: {header}\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

// Proves `hongbao apps` manages credentials on a running host without a restart: a new app can
// sign at once, a rotation keeps both keys working, a revoked key is refused, and secrets are
// printed once and never listed.
#[test]
fn app_credentials_rotate_and_revoke_without_a_restart() {
    let server = Server::start(&[]);
    let hongbao = |args: &[&str]| {
        let output =
            Command::new(env!("CARGO_BIN_EXE_hongbao")).args(args).arg("--data").arg(&server.data).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let added: Value =
        serde_json::from_str(&hongbao(&["apps", "add", "7777", "--activities", "test-campaign"])).unwrap();
    let grant_as = |key_id: &str, secret: &str, stage: u32| {
        let mut body = grant_body(6601, "rain", 1, stage);
        body["app_id"] = json!(7777);
        let body = body.to_string();
        let header = signed_header(7777, key_id, secret, "POST", "/v1/grants", body.as_bytes());
        request_as(&server.addr, &Auth::Header(header), "POST", "/v1/grants", &body, "application/json")
    };
    let (first_key, first_secret) = (added["key_id"].as_str().unwrap(), added["secret"].as_str().unwrap());
    // The scene does not list app 7777: authenticated (403 app_not_allowed), not 401.
    let answer = wait_for(std::time::Duration::from_secs(30), || {
        let answer = grant_as(first_key, first_secret, 0);
        (answer.0 != 401).then_some(answer)
    });
    assert_eq!(code(&answer), (403, Some("app_not_allowed")), "{}", answer.1);
    let rotated: Value = serde_json::from_str(&hongbao(&["apps", "rotate", "7777"])).unwrap();
    let (second_key, second_secret) = (rotated["key_id"].as_str().unwrap(), rotated["secret"].as_str().unwrap());
    wait_for(std::time::Duration::from_secs(30), || (grant_as(second_key, second_secret, 1).0 == 403).then_some(()));
    assert_eq!(grant_as(first_key, first_secret, 2).0, 403, "the old key still works during the overlap");
    let listed = hongbao(&["apps", "list"]);
    assert!(listed.contains(first_key) && listed.contains(second_key), "{listed}");
    assert!(!listed.contains(first_secret) && !listed.contains(second_secret), "list shows no secret: {listed}");
    hongbao(&["apps", "revoke", "7777", "--key", first_key]);
    wait_for(std::time::Duration::from_secs(30), || (grant_as(first_key, first_secret, 3).0 == 401).then_some(()));
    assert_eq!(grant_as(second_key, second_secret, 4).0, 403, "the other key still works");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data.join("keys/apps.json")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the credentials file is owner-only");
}

// Proves the same signed request is accepted once across a fleet: two hosts on one Redis share
// the nonces.
#[test]
fn a_signed_request_is_accepted_once_across_the_fleet() {
    let backends = Deployment::Redis.backends();
    let first = Server::start_on(&backends, &[]);
    let second =
        Server::start_with_on(&backends, &[("test-campaign.yaml", crate::support::TEST_CAMPAIGN)], Some(&first), &[]);
    let body = grant_body(6701, "rain", 1, 0).to_string();
    let header = signed_header(1128, "test-key", &test_secret(1128), "POST", "/v1/grants", body.as_bytes());
    let answer = raw_request(&first.addr, "POST", "/v1/grants", &body, "application/json", Some(&header)).unwrap();
    assert_eq!(answer.0, 200, "{}", answer.1);
    let replayed = raw_request(&second.addr, "POST", "/v1/grants", &body, "application/json", Some(&header)).unwrap();
    assert_eq!(code(&replayed), (401, Some("unauthenticated")), "the other host saw the nonce: {}", replayed.1);
    // On the embedded store the host remembers it too.
    let embedded = Server::start(&[]);
    let header = signed_header(1128, "test-key", &test_secret(1128), "POST", "/v1/grants", body.as_bytes());
    assert_eq!(
        raw_request(&embedded.addr, "POST", "/v1/grants", &body, "application/json", Some(&header)).unwrap().0,
        200
    );
    assert_eq!(
        raw_request(&embedded.addr, "POST", "/v1/grants", &body, "application/json", Some(&header)).unwrap().0,
        401
    );
}

fn security(server: &Server) -> Value {
    let (status, body) = server.get("/v1/security");
    assert_eq!(status, 200, "{body}");
    body["forgery_watch"].clone()
}

// Proves the forgery watch: failed verifications are counted, a retired key's tokens are refused
// on restore and verify invalid on a running host, the active key cannot be retired, and an
// activity with `restore: false` takes no restored tokens.
#[test]
fn the_forgery_watch_counts_and_retired_keys_are_refused() {
    let mut server = Server::start(&[]);
    let token = server.grant_rain(6801, 1, 0)["token"].as_str().unwrap().to_owned();
    assert_eq!(server.post("/v1/tokens:verify", &json!({ "token": "not-a-token" })).1["valid"], false);
    assert_eq!(security(&server)["verify_failed"], 1);
    let keys = |server: &Server| server.get("/v1/keys").1["keys"].as_array().unwrap().clone();
    let old_key = keys(&server)[0]["key_id"].as_str().unwrap().to_owned();
    let hongbao = |args: &[&str], data: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_hongbao")).args(args).arg("--data").arg(data).output().unwrap()
    };
    assert!(!hongbao(&["keys", "retire", &old_key], &server.data).status.success(), "the active key is not retired");
    assert!(hongbao(&["keys", "rotate"], &server.data).status.success());
    server.kill9();
    server.launch(&[]);
    let retired = hongbao(&["keys", "retire", &old_key], &server.data);
    assert!(retired.status.success(), "{}", String::from_utf8_lossy(&retired.stderr));
    let verified = wait_for(std::time::Duration::from_secs(30), || {
        let answer = server.post("/v1/tokens:verify", &json!({ "token": token })).1;
        (answer["valid"] == false).then_some(answer)
    });
    assert_eq!(verified["code"], "retired_key", "{verified}");
    let restored = server.post("/v1/wallets/6801/tokens:restore", &json!({ "tokens": [token] })).1;
    assert_eq!(restored["results"][0]["code"], "retired_key", "{restored}");
    let watch = security(&server);
    assert_eq!(
        (watch["verify_retired_key"].as_u64(), watch["restore_retired_key"].as_u64()),
        (Some(1), Some(1)),
        "{watch}"
    );
    assert!(keys(&server).iter().any(|key| key["key_id"] == old_key.as_str() && key["retired"] == true));

    // Restore switched off for an activity.
    let campaign = crate::support::TEST_CAMPAIGN
        .replace("  budget_cents: 100000000\n", "  budget_cents: 100000000\n  restore: false\n");
    let closed = Server::start_with(&[("test-campaign.yaml", &campaign)], &[]);
    let token = closed.grant_rain(6802, 1, 0)["token"].as_str().unwrap().to_owned();
    let refused = closed.post("/v1/wallets/6802/tokens:restore", &json!({ "tokens": [token] })).1;
    assert_eq!(refused["results"][0]["code"], "restore_disabled", "{refused}");
    assert_eq!(security(&closed)["restore_disabled"], 1);
}
