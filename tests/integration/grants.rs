//! Grants over HTTP: the token, idempotency, refusals that consume nothing.

use serde_json::json;

use crate::deployment::{Deployment, conformance};
use crate::support::{Server, grant_body, wait_for};

// Proves the whole slice: a grant's token verifies; the wallet shows it pending, then credited by
// the writer, and the balance is the same at every observation in between.
conformance!(grant_verifies_then_pending_then_credited_with_a_steady_balance);
fn grant_verifies_then_pending_then_credited_with_a_steady_balance(deployment: Deployment) {
    let backends = deployment.backends();
    // One credit a second, so the later grants are seen pending before the writer gets to them.
    let server = Server::start_on(&backends, &["--credits-per-second", "1"]);
    let act_id = 1001;
    let grants: Vec<_> = (0..3).map(|stage| server.grant_rain(act_id, 1, stage)).collect();
    for grant in &grants {
        assert_eq!(grant["amount_cents"], 88);
        assert_eq!(grant["replayed"], false);
        assert!(grant["bill_copy"].as_str().unwrap().contains("0.88"), "{grant}");
        let (status, verified) = server.post("/v1/tokens:verify", &json!({ "token": grant["token"] }));
        assert_eq!(status, 200);
        assert_eq!(verified["valid"], true, "{verified}");
        assert_eq!(verified["token"]["order_no"], grant["order_no"]);
        assert_eq!(verified["token"]["act_id"], act_id);
    }
    assert_eq!(grants[0]["order_no"], format!("{act_id}_rain_1_cash_0"));

    let mut saw_pending = false;
    let final_wallet = wait_for(std::time::Duration::from_secs(30), || {
        let wallet = server.wallet(act_id);
        assert_eq!(wallet["balance_cents"], 264, "balance moved while crediting: {wallet}");
        assert_eq!(wallet["total_income_cents"], 264, "{wallet}");
        assert_eq!(wallet["credited_cents"].as_i64().unwrap() + wallet["pending_cents"].as_i64().unwrap(), 264);
        saw_pending |= wallet["pending_cents"].as_i64().unwrap() > 0;
        (wallet["pending_cents"] == 0).then_some(wallet)
    });
    assert!(saw_pending, "the wallet never showed a pending token");
    assert_eq!(final_wallet["credited_cents"], 264);

    let (_, flow) = server.get(&format!("/v1/wallets/{act_id}/flow"));
    let items = flow["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|item| item["status"] == "credited" && item["amount_cents"] == 88));
}

// Proves a replayed grant returns the same token, says it is a replay, and is paid once.
conformance!(replayed_grant_returns_the_same_token_and_is_paid_once);
fn replayed_grant_returns_the_same_token_and_is_paid_once(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let first = server.grant_rain(2002, 7, 1);
    let second = server.grant_rain(2002, 7, 1);
    assert_eq!(second["token"], first["token"]);
    assert_eq!(second["order_no"], first["order_no"]);
    assert_eq!(second["replayed"], true);
    assert_eq!(first["replayed"], false);
    let wallet = server.wait_credited(2002);
    assert_eq!(wallet["credited_cents"], 88);
    // The ledger has it before the store marks it 2 → 8, so the replay may say processing briefly.
    let third = wait_for(std::time::Duration::from_secs(30), || {
        let replay = server.grant_rain(2002, 7, 1);
        (replay["status"] == "credited").then_some(replay)
    });
    assert_eq!(third["token"], first["token"]);
    let (_, flow) = server.get("/v1/wallets/2002/flow");
    assert_eq!(flow["items"].as_array().unwrap().len(), 1, "{flow}");
    let (_, books) = server.get("/v1/activities/test-campaign/reconciliation");
    let rain = books["scenes"].as_array().unwrap().iter().find(|s| s["scene_id"] == "rain").unwrap();
    assert_eq!(rain["credited_count"], 1, "{books}");
    assert_eq!(rain["issued_count"], 1);
}

// Proves a batch answers each grant as `POST /v1/grants` would, in order: new grants, a
// duplicate order in the same batch (granted once, the other a replay of the same token), a
// refusal that does not affect the rest; and a malformed or oversized batch changes nothing.
conformance!(batch_answers_each_grant_in_order);
fn batch_answers_each_grant_in_order(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let batch = json!({ "grants": [
        grant_body(3101, "rain", 1, 0),
        grant_body(3102, "rain", 1, 0),
        grant_body(3101, "rain", 1, 0),
        grant_body(3103, "nope", 1, 0),
    ]});
    let (status, answer) = server.post("/v1/grants:batch", &batch);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{answer}");
    assert_eq!(results[0]["status"], 200);
    assert_eq!(results[1]["status"], 200);
    assert_eq!(results[1]["grant"]["replayed"], false);
    assert_eq!(results[2]["status"], 200);
    assert_eq!(results[0]["grant"]["token"], results[2]["grant"]["token"], "one order, one token");
    // At most one says `replayed`. On Redis two copies of one order in the same millisecond
    // mint the same token (fixed amount, deterministic signature), and the store cannot tell
    // the second from a retried script of the first, so both may say `replayed: false`; they
    // are still one grant with one token, credited once (checked below).
    let replays = [&results[0], &results[2]].iter().filter(|r| r["grant"]["replayed"] == true).count();
    assert!(replays <= 1, "{answer}");
    assert_eq!((results[3]["status"].as_u64(), results[3]["code"].as_str()), (Some(404), Some("unknown_scene")));
    assert!(results[3]["message"].as_str().is_some_and(|m| !m.is_empty()));
    // Whole-batch errors: nothing granted.
    let too_many: Vec<_> = (0..101).map(|n| grant_body(3200 + n, "rain", 1, 0)).collect();
    for bad in [json!({ "grants": [] }), json!({ "grants": too_many }), json!({ "grants": [{"act_id": 1}] })] {
        let (status, answer) = server.post("/v1/grants:batch", &bad);
        assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")), "{answer}");
    }
    assert_eq!(server.wallet(3200)["total_income_cents"], 0);
    let wallet = server.wait_credited(3101);
    assert_eq!(wallet["credited_cents"], 88);
    assert_eq!(server.wait_credited(3102)["credited_cents"], 88);
}

// Proves each refusal has its stable code and consumes nothing: stock and rate allowance stay.
conformance!(refusals_have_stable_codes_and_consume_nothing);
fn refusals_have_stable_codes_and_consume_nothing(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &[]);
    let cases = [
        (
            json!({"app_id": 1128, "act_id": 1, "activity_id": "nope", "scene_id": "rain", "rain_id": 1, "award_type": "cash", "stage": 0}),
            404,
            "unknown_activity",
        ),
        (grant_body(1, "nope", 1, 0), 404, "unknown_scene"),
        (
            json!({"app_id": 9, "act_id": 1, "activity_id": "test-campaign", "scene_id": "rain", "rain_id": 1, "award_type": "cash", "stage": 0}),
            403,
            "app_not_allowed",
        ),
        (
            json!({"app_id": 1128, "act_id": 1, "activity_id": "test-campaign", "scene_id": "rain", "rain_id": 1, "award_type": "cards", "stage": 0}),
            400,
            "award_type_mismatch",
        ),
        (
            json!({"app_id": 1128, "act_id": -1, "activity_id": "test-campaign", "scene_id": "rain", "rain_id": 1, "award_type": "cash", "stage": 0}),
            400,
            "bad_request",
        ),
        (
            json!({"app_id": 1128, "act_id": 1, "activity_id": "test_campaign", "scene_id": "rain", "rain_id": 1, "award_type": "cash", "stage": 0}),
            400,
            "bad_request",
        ),
        (
            json!({"app_id": 1128, "act_id": 1, "activity_id": "test-campaign", "scene_id": "rain", "rain_id": 1, "award_type": "cash", "stage": 0, "amount_cents": 5}),
            400,
            "amount_not_allowed",
        ),
        (
            json!({"app_id": 1128, "act_id": 1, "activity_id": "test-campaign", "scene_id": "partner", "rain_id": 1, "award_type": "cash", "stage": 0, "amount_cents": 5001}),
            400,
            "amount_out_of_range",
        ),
        (
            json!({"app_id": 1128, "act_id": 1, "activity_id": "test-campaign", "scene_id": "partner", "rain_id": 1, "award_type": "cash", "stage": 0}),
            400,
            "amount_required",
        ),
        (json!({"app_id": 1128, "act_id": 1, "extra": true}), 400, "bad_request"),
        (
            json!({"app_id": 1128, "act_id": i64::MAX, "activity_id": "test-campaign", "scene_id": "rain", "rain_id": 1, "award_type": "cash", "stage": 0}),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got_status, answer) = server.post("/v1/grants", &body);
        assert_eq!((got_status, answer["code"].as_str()), (status, Some(code)), "{body} → {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, answer) = server.post("/v1/grants", &json!("not an object"));
    assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")));
    let (status, answer) = server.get("/v1/nothing-here");
    assert_eq!((status, answer["code"].as_str()), (404, Some("not_found")));

    // Stock: three grants, then out of stock; the refused grant left the count where it was.
    for act_id in 1..=3 {
        let (status, body) = server.post("/v1/grants", &grant_body(act_id, "limited", 1, 0));
        assert_eq!(status, 200, "{body}");
    }
    let (status, answer) = server.post("/v1/grants", &grant_body(4, "limited", 1, 0));
    assert_eq!((status, answer["code"].as_str()), (409, Some("out_of_stock")));
    // A replay of a granted order still answers, stock or not.
    let (status, replay) = server.post("/v1/grants", &grant_body(1, "limited", 1, 0));
    assert_eq!((status, replay["replayed"].as_bool()), (200, Some(true)));

    // Per-user rate: one grant per hour; the second is refused, the first's replay is not.
    let (status, _) = server.post("/v1/grants", &grant_body(77, "throttled", 1, 0));
    assert_eq!(status, 200);
    let (status, answer) = server.post("/v1/grants", &grant_body(77, "throttled", 1, 1));
    assert_eq!((status, answer["code"].as_str()), (429, Some("user_rate_limited")));
    let (status, _) = server.post("/v1/grants", &grant_body(77, "throttled", 1, 0));
    assert_eq!(status, 200);
    // Another user is not affected.
    let (status, _) = server.post("/v1/grants", &grant_body(78, "throttled", 1, 1));
    assert_eq!(status, 200);
    // Refused grants created no tokens.
    assert_eq!(server.wallet(4)["total_income_cents"], 0);
    assert_eq!(server.wallet(77)["total_income_cents"], 5);

    // A caller-set amount within range is granted as asked.
    let (status, body) = server.post("/v1/grants", &json!({"app_id": 1128, "act_id": 5, "activity_id": "test-campaign", "scene_id": "partner", "rain_id": 1, "award_type": "cash", "stage": 0, "amount_cents": 1234}));
    assert_eq!((status, body["amount_cents"].as_i64()), (200, Some(1234)));
}

// Proves the public keys are published and the listing shows the scene tree and capabilities.
#[test]
fn keys_and_scenes_are_listed() {
    let server = Server::start(&[]);
    let (status, keys) = server.get("/v1/keys");
    assert_eq!(status, 200);
    let key = &keys["keys"][0];
    assert_eq!(key["algorithm"], "ed25519");
    assert_eq!(key["active"], true);
    let token = server.grant_rain(9, 1, 0)["token"].clone();
    let (_, verified) = server.post("/v1/tokens:verify", &json!({ "token": token }));
    assert_eq!(verified["token"]["key_id"], key["key_id"]);
    let (_, verified) = server.post("/v1/tokens:verify", &json!({ "token": "AAAA" }));
    assert_eq!((verified["valid"].as_bool(), verified["code"].as_str()), (Some(false), Some("invalid_token")));

    let (status, scenes) = server.get("/v1/scenes");
    assert_eq!(status, 200);
    let activity = &scenes["activities"][0];
    assert_eq!(activity["activity_id"], "test-campaign");
    let rain = activity["scenes"].as_array().unwrap().iter().find(|s| s["scene_id"] == "rain").unwrap();
    assert_eq!(rain["award_type"], "cash");
    assert_eq!(rain["award_id"], "rain-cash");
    assert_eq!(rain["app_ids"], json!([1128, 2329]));
    assert_eq!(rain["capabilities"]["bill_copy"], true);
    assert_eq!(rain["capabilities"]["rate_limit"], false);
    assert!(rain["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(scenes["files"][0]["errors"], json!([]));
}

// Proves the synchronous design the benchmark compares against: with `--sync-credit` a grant is
// in the ledger before it is answered, so the answer says credited and nothing is ever pending.
#[test]
fn sync_credit_answers_after_the_ledger_has_the_grant() {
    let server = Server::start(&["--sync-credit", "--no-writer"]);
    let grant = server.grant_rain(4242, 1, 0);
    assert_eq!(grant["status"], "credited", "{grant}");
    let wallet = server.wallet(4242);
    assert_eq!((wallet["credited_cents"].as_i64(), wallet["pending_cents"].as_i64()), (Some(88), Some(0)), "{wallet}");
    let replay = server.grant_rain(4242, 1, 0);
    assert_eq!((replay["replayed"].as_bool(), replay["token"].clone()), (Some(true), grant["token"].clone()));
}
