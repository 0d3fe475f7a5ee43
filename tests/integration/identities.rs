//! One user across apps: `POST /v1/identities` maps (app, app_user_id) to an act_id, the phone
//! number winning across apps; grants may name their user by `app_user_id`.

use std::path::Path;

use serde_json::{Value, json};

use crate::backends;
use crate::deployment::{Deployment, conformance};
use crate::support::{Auth, Server, grant_body, raw_request, request_as};

/// hongbao's own act_id range starts here (`hongbao::identity::IDENTITY_ACT_ID_BASE`).
const BASE: i64 = hongbao::identity::IDENTITY_ACT_ID_BASE;

/// A phone number as apps send it, and its digits, which must never be stored.
const PHONE: &str = "+86 139-1234-5678";
const PHONE_DIGITS: &str = "8613912345678";

/// `POST /v1/identities` signed by `app_id`.
fn bind(server: &Server, app_id: i64, app_user_id: &str, phone: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "app_user_id": app_user_id });
    if let Some(phone) = phone {
        body["phone"] = json!(phone);
    }
    request_as(&server.addr, &Auth::App(app_id), "POST", "/v1/identities", &body.to_string(), "application/json")
}

/// [`bind`] that must succeed; returns the answer.
fn bound(server: &Server, app_id: i64, app_user_id: &str, phone: Option<&str>) -> Value {
    let (status, answer) = bind(server, app_id, app_user_id, phone);
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["app_id"].as_i64(), answer["app_user_id"].as_str()), (Some(app_id), Some(app_user_id)));
    answer
}

/// A grant in the `rain` scene signed by `app_id`, for a user named by `app_user_id`.
fn grant_to_user(server: &Server, app_id: i64, app_user_id: &str, stage: u32) -> (u16, Value) {
    let mut body = grant_body(1, "rain", 7, stage);
    let object = body.as_object_mut().unwrap();
    object.remove("act_id");
    object.insert("app_id".into(), json!(app_id));
    object.insert("app_user_id".into(), json!(app_user_id));
    request_as(&server.addr, &Auth::App(app_id), "POST", "/v1/grants", &body.to_string(), "application/json")
}

// Proves the phone wins across apps (another app's user with the same number, written
// differently, gets the same act_id), that users without a known phone get fresh act_ids from
// hongbao's range, and that the same (app, app_user_id) keeps its act_id, also after a restart,
// whose counter then hands out no act_id twice.
conformance!(the_phone_wins_across_apps_and_bindings_survive_a_restart);
fn the_phone_wins_across_apps_and_bindings_survive_a_restart(deployment: Deployment) {
    let backends = deployment.backends();
    let mut server = Server::start_on(&backends, &[]);
    let first = bound(&server, 1128, "wx-1", Some(PHONE));
    let act_id = first["act_id"].as_i64().unwrap();
    assert!(act_id >= BASE, "{first}");
    assert_eq!((first["created"].as_bool(), first["phone_bound"].as_bool()), (Some(true), Some(true)));

    let other_app = bound(&server, 2329, "ali:9", Some(PHONE_DIGITS));
    assert_eq!(other_app["act_id"].as_i64(), Some(act_id), "the phone wins: {other_app}");
    assert_eq!(other_app["created"].as_bool(), Some(true));

    let unknown = bound(&server, 2329, "ali:10", None);
    let fresh = unknown["act_id"].as_i64().unwrap();
    assert!(fresh >= BASE && fresh != act_id, "{unknown}");
    assert_eq!((unknown["created"].as_bool(), unknown["phone_bound"].as_bool()), (Some(true), Some(false)));
    let again = bound(&server, 1128, "wx-1", None);
    assert_eq!((again["act_id"].as_i64(), again["created"].as_bool()), (Some(act_id), Some(false)));
    assert_eq!(again["phone_bound"].as_bool(), Some(true));
    // The same app_user_id in another app is another user.
    let namesake = bound(&server, 2329, "wx-1", None);
    assert!(![act_id, fresh].contains(&namesake["act_id"].as_i64().unwrap()), "{namesake}");

    server.kill9();
    server.launch(&[]);
    for (app_id, user, expected) in [(1128, "wx-1", act_id), (2329, "ali:9", act_id), (2329, "ali:10", fresh)] {
        let after = bound(&server, app_id, user, None);
        assert_eq!((after["act_id"].as_i64(), after["created"].as_bool()), (Some(expected), Some(false)), "{after}");
    }
    let phone_after = bound(&server, 8663, "new-app-user", Some(PHONE));
    assert_eq!(phone_after["act_id"].as_i64(), Some(act_id));
    let newest = bound(&server, 1128, "after-restart", None)["act_id"].as_i64().unwrap();
    assert!(newest >= BASE && ![act_id, fresh, namesake["act_id"].as_i64().unwrap()].contains(&newest));
}

// Proves the merge rule's first half: a known user whose act_id holds nothing, binding a phone
// already bound to another act_id, is re-pointed to that act_id (the phone wins), for good.
conformance!(an_empty_act_id_is_re_pointed_to_the_phones);
fn an_empty_act_id_is_re_pointed_to_the_phones(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let phone_act_id = bound(&server, 1128, "p-a", Some(PHONE))["act_id"].as_i64().unwrap();
    let empty = bound(&server, 2329, "p-b", None)["act_id"].as_i64().unwrap();
    assert_ne!(empty, phone_act_id);
    let merged = bound(&server, 2329, "p-b", Some(PHONE));
    assert_eq!(merged["act_id"].as_i64(), Some(phone_act_id), "{merged}");
    assert_eq!((merged["created"].as_bool(), merged["phone_bound"].as_bool()), (Some(false), Some(true)));
    assert_eq!(bound(&server, 2329, "p-b", None)["act_id"].as_i64(), Some(phone_act_id));
    // A grant by app_user_id now lands in the phone's act_id.
    let (status, grant) = grant_to_user(&server, 2329, "p-b", 0);
    assert_eq!(status, 200, "{grant}");
    assert!(grant["order_no"].as_str().unwrap().starts_with(&format!("{phone_act_id}_")), "{grant}");
}

// Proves the merge rule's second half: when the user's act_id holds money, binding a phone bound
// to another act_id that holds money too is refused with 409 `identity_conflict` naming both,
// and nothing changes: the binding, both wallets.
conformance!(two_act_ids_holding_money_are_never_joined);
fn two_act_ids_holding_money_are_never_joined(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let phone_act_id = bound(&server, 1128, "m-a", Some(PHONE))["act_id"].as_i64().unwrap();
    let own = bound(&server, 2329, "m-b", None)["act_id"].as_i64().unwrap();
    for (app_id, user) in [(1128, "m-a"), (2329, "m-b")] {
        let (status, grant) = grant_to_user(&server, app_id, user, 0);
        assert_eq!(status, 200, "{grant}");
    }
    assert_eq!(server.wait_credited(phone_act_id)["credited_cents"], 88);
    assert_eq!(server.wait_credited(own)["credited_cents"], 88);

    let (status, refused) = bind(&server, 2329, "m-b", Some(PHONE));
    assert_eq!((status, refused["code"].as_str()), (409, Some("identity_conflict")), "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains(&own.to_string()) && message.contains(&phone_act_id.to_string()), "{message}");

    let after = bound(&server, 2329, "m-b", None);
    assert_eq!((after["act_id"].as_i64(), after["phone_bound"].as_bool()), (Some(own), Some(false)), "{after}");
    assert_eq!(bound(&server, 1128, "m-a", None)["act_id"].as_i64(), Some(phone_act_id));
    for act_id in [own, phone_act_id] {
        let wallet = server.wallet(act_id);
        assert_eq!((wallet["balance_cents"].as_i64(), wallet["pending_cents"].as_i64()), (Some(88), Some(0)));
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|window| window == needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

// Proves no phone number is stored in clear: not in any file of the data directory (the
// identity journal, the key, the stores) and, on PostgreSQL, not in the identity tables, which
// hold one 32-byte hash per number.
conformance!(phone_numbers_are_never_stored_in_clear);
fn phone_numbers_are_never_stored_in_clear(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let act_id = bound(&server, 1128, "c-1", Some(PHONE))["act_id"].as_i64().unwrap();
    bound(&server, 2329, "c-2", Some("+8613912345678"));
    bound(&server, 1319, "c-3", Some("+86 138 0000 1111"));
    let (status, grant) = grant_to_user(&server, 1128, "c-1", 0);
    assert_eq!(status, 200, "{grant}");
    server.wait_credited(act_id);
    for digits in [PHONE_DIGITS, "13912345678", "8613800001111", "13800001111"] {
        let found = files_containing(&server.data, digits.as_bytes());
        assert!(found.is_empty(), "`{digits}` in clear in {found:?}");
    }
    if deployment == Deployment::Embedded {
        assert!(server.data.join("identities.log").is_file());
        return;
    }
    // The identity tables live in the ledger's first database.
    let databases = backends.ledger_databases();
    let url = databases[0].as_str();
    let users = backends::pg_query(url, "SELECT app_id::text, app_user_id, act_id::text FROM identities").unwrap();
    let phones =
        backends::pg_query(url, "SELECT encode(phone_hash, 'hex'), act_id::text FROM identity_phones").unwrap();
    assert_eq!((users.len(), phones.len()), (3, 2), "{users:?} {phones:?}");
    for row in users.iter().chain(&phones) {
        for value in row.iter().flatten() {
            assert!(!value.contains("13912345678") && !value.contains("13800001111"), "{row:?}");
        }
    }
    assert!(phones.iter().all(|row| row[0].as_ref().is_some_and(|hex| hex.len() == 64)), "{phones:?}");
}

// Proves a grant naming its user by app_user_id lands in the wallet of the act_id the user is
// bound to, that an unknown app_user_id is bound on the way (the same act_id
// `POST /v1/identities` answers afterwards), and that batches take app_user_id items too.
conformance!(a_grant_by_app_user_id_lands_in_the_resolved_wallet);
fn a_grant_by_app_user_id_lands_in_the_resolved_wallet(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let act_id = bound(&server, 1128, "g-1", Some(PHONE))["act_id"].as_i64().unwrap();
    let (status, grant) = grant_to_user(&server, 1128, "g-1", 0);
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["order_no"].as_str(), Some(format!("{act_id}_rain_7_cash_0").as_str()));
    let (status, replay) = grant_to_user(&server, 1128, "g-1", 0);
    assert_eq!((status, replay["replayed"].as_bool()), (200, Some(true)), "{replay}");
    // The other app's user with the same phone is the same wallet.
    bound(&server, 2329, "g-2", Some(PHONE_DIGITS));
    let (status, other) = grant_to_user(&server, 2329, "g-2", 1);
    assert_eq!(status, 200, "{other}");
    assert_eq!(server.wait_credited(act_id)["credited_cents"], 176);

    let (status, unknown) = grant_to_user(&server, 1128, "g-new", 0);
    assert_eq!(status, 200, "{unknown}");
    let later = bound(&server, 1128, "g-new", None);
    assert_eq!(later["created"].as_bool(), Some(false));
    let new_act_id = later["act_id"].as_i64().unwrap();
    assert!(unknown["order_no"].as_str().unwrap().starts_with(&format!("{new_act_id}_")), "{unknown} {later}");

    let mut by_user = grant_body(1, "rain", 8, 0);
    by_user.as_object_mut().unwrap().remove("act_id");
    by_user["app_user_id"] = json!("g-1");
    let batch = json!({ "grants": [by_user, grant_body(6061, "rain", 8, 0)] });
    let (status, answer) = server.post("/v1/grants:batch", &batch);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["grant"]["order_no"].as_str(), Some(format!("{act_id}_rain_8_cash_0").as_str()), "{answer}");
    assert_eq!(results[1]["grant"]["order_no"].as_str(), Some("6061_rain_8_cash_0"), "{answer}");
    assert_eq!(server.wait_credited(act_id)["credited_cents"], 264);
}

// Proves the refusals: a grant naming its user by both or neither of act_id and app_user_id
// (alone or in a batch), an unsigned or session-less identity request, a bad phone number or
// app_user_id, an unknown field — each with its status and code, binding nobody.
conformance!(identity_refusals);
fn identity_refusals(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let code = |(status, body): (u16, Value)| (status, body["code"].as_str().unwrap_or_default().to_owned());
    let bad = (400, "bad_request".to_owned());

    let mut both = grant_body(5, "rain", 1, 0);
    both["app_user_id"] = json!("r-1");
    assert_eq!(code(server.post("/v1/grants", &both)), bad);
    let mut neither = grant_body(5, "rain", 1, 0);
    neither.as_object_mut().unwrap().remove("act_id");
    assert_eq!(code(server.post("/v1/grants", &neither)), bad);
    let mut bad_user = neither.clone();
    bad_user["app_user_id"] = json!("no spaces");
    assert_eq!(code(server.post("/v1/grants", &bad_user)), bad);
    assert_eq!(code(server.post("/v1/grants:batch", &json!({ "grants": [both] }))), bad);

    let payload = json!({ "app_user_id": "r-1" }).to_string();
    let unsigned = raw_request(&server.addr, "POST", "/v1/identities", &payload, "application/json", None).unwrap();
    assert_eq!(code(unsigned), (401, "unauthenticated".to_owned()));
    for phone in ["12345", "+86 139 1234 567x", "++8613912345678", &"1".repeat(21), ""] {
        assert_eq!(code(bind(&server, 1128, "r-1", Some(phone))), bad, "{phone}");
    }
    for user in ["", "a/b", &"a".repeat(129)] {
        assert_eq!(code(bind(&server, 1128, user, None)), bad, "{user}");
    }
    let unknown_field = json!({ "app_user_id": "r-1", "app_id": 1128 }).to_string();
    let answer =
        request_as(&server.addr, &Auth::App(1128), "POST", "/v1/identities", &unknown_field, "application/json");
    assert_eq!(code(answer), bad);
    // Nothing above bound `r-1`.
    assert_eq!(bound(&server, 1128, "r-1", None)["created"].as_bool(), Some(true));
}

// Proves a signed app reads its user's wallet and flow by name (`app_user:{app_user_id}`),
// resolved for the signing app only (another app's same name is another user), and that a
// session, which is for one act_id, cannot use the name.
conformance!(apps_read_wallets_by_app_user_id);
fn apps_read_wallets_by_app_user_id(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let act_id = bound(&server, 1128, "w-1", Some(PHONE))["act_id"].as_i64().unwrap();
    let (status, grant) = grant_to_user(&server, 1128, "w-1", 0);
    assert_eq!(status, 200, "{grant}");
    server.wait_credited(act_id);

    let (status, wallet) = server.get("/v1/wallets/app_user:w-1");
    assert_eq!(status, 200, "{wallet}");
    assert_eq!((wallet["act_id"].as_i64(), wallet["balance_cents"].as_i64()), (Some(act_id), Some(88)), "{wallet}");
    let (status, flow) = server.get("/v1/wallets/app_user:w-1/flow?limit=5");
    assert_eq!(status, 200, "{flow}");
    assert_eq!(flow["items"].as_array().map(Vec::len), Some(1), "{flow}");

    let read_as =
        |app_id: i64, path: &str| request_as(&server.addr, &Auth::App(app_id), "GET", path, "", "application/json");
    let (status, other) = read_as(2329, "/v1/wallets/app_user:w-1");
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["act_id"].as_i64(), Some(act_id), "app 2329's `w-1` is another user");
    assert_eq!(other["balance_cents"].as_i64(), Some(0));
    let (status, bad) = server.get("/v1/wallets/app_user:a%2Fb");
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")), "{bad}");

    let (status, session) =
        server.post("/v1/sessions", &json!({ "act_id": act_id, "scopes": ["wallet:read"], "ttl_s": 60 }));
    assert_eq!(status, 200, "{session}");
    let bearer = Auth::Header(format!("Bearer {}", session["session"].as_str().unwrap()));
    let (status, own) =
        request_as(&server.addr, &bearer, "GET", &format!("/v1/wallets/{act_id}"), "", "application/json");
    assert_eq!(status, 200, "{own}");
    let (status, refused) =
        request_as(&server.addr, &bearer, "GET", "/v1/wallets/app_user:w-1", "", "application/json");
    assert_eq!((status, refused["code"].as_str()), (403, Some("forbidden")), "{refused}");
}
