//! The wallet: withdrawals, flow pages, and restoring tokens a client kept.

use serde_json::json;

use crate::deployment::{Deployment, conformance};
use crate::support::Server;

// Proves a withdrawal right after grants sees the whole balance (pending tokens are credited
// first), is idempotent per request id, and cannot overdraw.
conformance!(withdrawal_right_after_grants_sees_the_full_balance);
fn withdrawal_right_after_grants_sees_the_full_balance(deployment: Deployment) {
    let backends = deployment.backends();
    // The writer is off: only the withdrawal's forced crediting can credit anything.
    let server = Server::start_on(&backends, &["--no-writer"]);
    let act_id = 3003;
    for stage in 0..4 {
        server.grant_rain(act_id, 2, stage);
    }
    let before = server.wallet(act_id);
    assert_eq!((before["balance_cents"].as_i64(), before["credited_cents"].as_i64()), (Some(352), Some(0)));

    let body = json!({ "request_id": "w-1", "amount_cents": 352 });
    let (status, answer) = server.post(&format!("/v1/wallets/{act_id}/withdrawals"), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["balance_cents"].as_i64(), answer["replayed"].as_bool()), (Some(0), Some(false)));

    let (status, again) = server.post(&format!("/v1/wallets/{act_id}/withdrawals"), &body);
    assert_eq!((status, again["replayed"].as_bool(), again["balance_cents"].as_i64()), (200, Some(true), Some(0)));

    let (status, conflict) =
        server.post(&format!("/v1/wallets/{act_id}/withdrawals"), &json!({ "request_id": "w-1", "amount_cents": 1 }));
    assert_eq!((status, conflict["code"].as_str()), (409, Some("request_id_conflict")));

    let (status, overdraw) =
        server.post(&format!("/v1/wallets/{act_id}/withdrawals"), &json!({ "request_id": "w-2", "amount_cents": 1 }));
    assert_eq!((status, overdraw["code"].as_str()), (409, Some("insufficient_balance")), "{overdraw}");

    let (status, bad) =
        server.post(&format!("/v1/wallets/{act_id}/withdrawals"), &json!({ "request_id": "w/3", "amount_cents": 1 }));
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")));

    let after = server.wallet(act_id);
    assert_eq!(after["balance_cents"], 0);
    assert_eq!(after["total_income_cents"], 352);
    let (_, flow) = server.get(&format!("/v1/wallets/{act_id}/flow"));
    let items = flow["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{flow}");
    assert_eq!(items.iter().map(|i| i["amount_cents"].as_i64().unwrap()).sum::<i64>(), 0);
    assert_eq!(items.iter().filter(|i| i["kind"] == "withdrawal").count(), 1);
}

// Proves the flow pages newest first with a cursor that neither skips nor repeats items, even
// when new grants arrive between pages.
conformance!(flow_pages_are_stable);
fn flow_pages_are_stable(deployment: Deployment) {
    let backends = deployment.backends();
    let server = Server::start_on(&backends, &["--no-writer"]);
    let act_id = 4004;
    for stage in 0..7 {
        server.grant_rain(act_id, 3, stage);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = server.get(&format!("/v1/wallets/{act_id}/flow?limit=3&cursor={cursor}"));
        assert_eq!(status, 200, "{page}");
        if seen.is_empty() {
            server.grant_rain(act_id, 3, 99); // newer than everything: must not appear on later pages
        }
        for item in page["items"].as_array().unwrap() {
            seen.push((item["time_ms"].as_u64().unwrap(), item["reference"].as_str().unwrap().to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.windows(2).all(|pair| pair[0] >= pair[1]), "not newest first: {seen:?}");
    let (status, bad) = server.get(&format!("/v1/wallets/{act_id}/flow?limit=1000"));
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")));
    let (status, bad) = server.get(&format!("/v1/wallets/{act_id}/flow?cursor=%%%"));
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")));
}

// Proves that after the server loses its token store, restoring the client's tokens brings the
// money back exactly once: a token the ledger already has is not paid again, a lost pending
// token is paid once, restoring twice changes nothing, and forged tokens are refused.
conformance!(restore_after_losing_the_token_store_pays_exactly_once);
fn restore_after_losing_the_token_store_pays_exactly_once(deployment: Deployment) {
    let backends = deployment.backends();
    let act_id = 5005;
    let mut server = Server::start_on(&backends, &[]);
    let credited = server.grant_rain(act_id, 4, 0);
    server.wait_credited(act_id);
    server.kill9();
    server.launch(&["--no-writer"]);
    let pending = server.grant_rain(act_id, 4, 1);
    server.kill9();
    backends.lose_token_store(&server.data);
    server.launch(&[]);

    let lost = server.wallet(act_id);
    assert_eq!((lost["balance_cents"].as_i64(), lost["pending_cents"].as_i64()), (Some(88), Some(0)), "{lost}");

    // Regression: a retried grant whose token the store lost was granted again with a new
    // token; the ledger's copy must answer it instead.
    let retried = server.grant_rain(act_id, 4, 0);
    assert_eq!(retried["token"], credited["token"], "{retried}");
    assert_eq!((retried["replayed"].as_bool(), retried["status"].as_str()), (Some(true), Some("credited")));

    let mut forged_text = pending["token"].as_str().unwrap().to_owned();
    let flip = forged_text.len() / 2;
    let replacement = if &forged_text[flip..=flip] == "A" { "B" } else { "A" };
    forged_text.replace_range(flip..=flip, replacement);
    let tokens = json!({ "tokens": [credited["token"], pending["token"], forged_text] });
    let (status, restored) = server.post(&format!("/v1/wallets/{act_id}/tokens:restore"), &tokens);
    assert_eq!(status, 200, "{restored}");
    let results: Vec<_> =
        restored["results"].as_array().unwrap().iter().map(|r| r["result"].as_str().unwrap().to_owned()).collect();
    assert_eq!(results, ["already_credited", "restored", "rejected"], "{restored}");
    assert_eq!(restored["results"][2]["code"], "invalid_token");

    let (_, again) = server.post(&format!("/v1/wallets/{act_id}/tokens:restore"), &tokens);
    let results: Vec<_> =
        again["results"].as_array().unwrap().iter().map(|r| r["result"].as_str().unwrap().to_owned()).collect();
    assert_eq!(results[0], "already_credited");
    assert!(results[1] == "already_present" || results[1] == "already_credited", "{again}");

    let other = server.post("/v1/wallets/6006/tokens:restore", &json!({ "tokens": [pending["token"]] })).1;
    assert_eq!(other["results"][0]["code"], "wrong_user");

    let wallet = server.wait_credited(act_id);
    assert_eq!(
        (wallet["credited_cents"].as_i64(), wallet["balance_cents"].as_i64()),
        (Some(176), Some(176)),
        "{wallet}"
    );
    let (_, flow) = server.get(&format!("/v1/wallets/{act_id}/flow"));
    assert_eq!(flow["items"].as_array().unwrap().len(), 2, "{flow}");
}

// Proves the request bounds hold exactly at their limits: 256 tokens per restore, 100 items per
// flow page, 64 KiB per ordinary body.
#[test]
fn request_bounds_hold_at_the_limit() {
    let server = Server::start(&["--no-writer"]);
    let tokens = |n: usize| json!({ "tokens": vec!["x"; n] });
    let (status, answer) = server.post("/v1/wallets/1/tokens:restore", &tokens(256));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 256);
    let (status, answer) = server.post("/v1/wallets/1/tokens:restore", &tokens(257));
    assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")));

    assert_eq!(server.get("/v1/wallets/1/flow?limit=100").0, 200);
    let (status, answer) = server.get("/v1/wallets/1/flow?limit=101");
    assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")));

    let mut body = crate::support::grant_body(1, "rain", 1, 0);
    body["locale"] = "x".repeat(64 * 1024).into();
    let (status, answer) = server.post("/v1/grants", &body);
    assert_eq!((status, answer["code"].as_str()), (413, Some("body_too_large")));
}
