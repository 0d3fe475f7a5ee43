//! Degraded wallet reads (seed 001 §4.2.2): with one backend down, the wallet and its flow
//! answer from the other, marked `degraded`; withdrawals refuse; once the backend is back, the
//! answers are whole again. Each test owns the servers it stops.
//!
//! The embedded deployment has no such test: its ledger lives in the host's process and fails
//! only when a journal write fails (a full disk, an I/O error), after which it refuses every
//! operation until the host restarts, which also forgets the figures; nothing short of root
//! (a tiny tmpfs) makes that happen from outside, and a file-size limit would fail the token
//! log as well. The degraded code is the same for both ledgers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{OwnPostgres, OwnRedis, shared_redis_url, unique_prefix};
use crate::deployment::Backends;
use crate::support::{Auth, Server, request_as, wait_for};

/// How long a backend's loss or return may take to show (generous: a loaded machine).
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// A ledger request's limit in the host (`OPERATION_TIMEOUT` in `host/src/ledger/postgres.rs`).
const LEDGER_REQUEST_LIMIT: Duration = Duration::from_secs(5);

fn withdraw(server: &Server, act_id: i64, request_id: &str, amount_cents: i64) -> (u16, Value) {
    let body = json!({ "request_id": request_id, "amount_cents": amount_cents });
    server.post(&format!("/v1/wallets/{act_id}/withdrawals"), &body)
}

fn red_packets_with_status(flow: &Value, status: &str) -> usize {
    let items = flow["items"].as_array().unwrap();
    items.iter().filter(|item| item["kind"] == "red_packet" && item["status"] == status).count()
}

// Proves that with PostgreSQL stopped the wallet answers 200 from the token store plus the
// figures this host last read (marked `degraded: ["ledger"]`, with their age), counts a grant
// made during the outage as pending on top, says `null` for a user whose figures it never read,
// shows the store's tokens as the flow, refuses withdrawals; and that once PostgreSQL is back
// every answer is whole again.
#[test]
fn ledger_down_the_wallet_answers_from_the_tokens_and_the_last_figures() {
    let mut postgres = OwnPostgres::start();
    let backends = Backends {
        store_url: Some(shared_redis_url()),
        prefix: unique_prefix(),
        ledger_url: Some(postgres.url()),
        reclaim_after_ms: 300,
    };
    // The writer is off: only a withdrawal's forced crediting credits, so pending stays pending.
    let server = Server::start_on(&backends, &["--no-writer"]);
    let (act_id, stranger) = (7101, 7102);
    for stage in 0..3 {
        server.grant_rain(act_id, 5, stage);
    }
    assert_eq!(withdraw(&server, act_id, "d-1", 10).0, 200, "credits the three, takes 10");
    for stage in 3..5 {
        server.grant_rain(act_id, 5, stage);
    }
    server.grant_rain(stranger, 5, 0);
    let whole = json!({
        "act_id": act_id, "balance_cents": 430, "credited_cents": 254, "pending_cents": 176,
        "pending_count": 2, "total_income_cents": 440,
    });
    assert_eq!(server.wallet(act_id), whole, "a whole answer has no `degraded` field");

    postgres.stop();
    let wallet_path = format!("/v1/wallets/{act_id}");
    let degraded = wait_for(WAIT_LIMIT, || {
        let (status, body) = server.get(&wallet_path);
        assert_eq!(status, 200, "{body}");
        body.get("degraded").is_some().then_some(body)
    });
    assert_eq!(degraded["degraded"], json!(["ledger"]), "{degraded}");
    for (field, value) in [
        ("balance_cents", 430),
        ("credited_cents", 254),
        ("pending_cents", 176),
        ("pending_count", 2),
        ("total_income_cents", 440),
        ("unconfirmed_cents", 0),
    ] {
        assert_eq!(degraded[field], value, "{field}: {degraded}");
    }
    assert!(degraded["ledger_figures_age_ms"].is_u64(), "{degraded}");

    // Grants go on without the ledger, and the wallet counts them on top of the figures.
    server.grant_rain(act_id, 5, 5);
    let (status, grown) = server.get(&wallet_path);
    assert_eq!(status, 200, "{grown}");
    assert_eq!((grown["balance_cents"].as_i64(), grown["pending_count"].as_u64()), (Some(518), Some(3)), "{grown}");

    let (status, unknown) = server.get(&format!("/v1/wallets/{stranger}"));
    assert_eq!(status, 200, "{unknown}");
    assert_eq!((&unknown["credited_cents"], &unknown["balance_cents"]), (&Value::Null, &Value::Null), "{unknown}");
    assert_eq!((unknown["pending_cents"].as_i64(), &unknown["ledger_figures_age_ms"]), (Some(88), &Value::Null));

    let (status, flow) = server.get(&format!("/v1/wallets/{act_id}/flow"));
    assert_eq!((status, &flow["degraded"]), (200, &json!(["ledger"])), "{flow}");
    assert_eq!(flow["items"].as_array().unwrap().len(), 6, "the store's six tokens, no withdrawal: {flow}");
    assert_eq!((red_packets_with_status(&flow, "credited"), red_packets_with_status(&flow, "pending")), (3, 3));

    let (status, refused) = withdraw(&server, act_id, "d-2", 1);
    assert_eq!((status, refused["code"].as_str()), (503, Some("unavailable")), "{refused}");
    // A group red packet's send never guesses either.
    let packet =
        json!({ "request_id": "d-p", "sender_act_id": act_id, "total_cents": 10, "shares": 1, "split": "equal" });
    let (status, send) = server.post("/v1/packets", &packet);
    assert_eq!((status, send["code"].as_str()), (503, Some("unavailable")), "{send}");

    postgres.start_again();
    let back = wait_for(WAIT_LIMIT, || {
        let (status, body) = server.get(&wallet_path);
        (status == 200 && body.get("degraded").is_none()).then_some(body)
    });
    assert_eq!((back["balance_cents"].as_i64(), back["credited_cents"].as_i64()), (Some(518), Some(254)), "{back}");
    let (status, flow) = server.get(&format!("/v1/wallets/{act_id}/flow"));
    assert_eq!(status, 200, "{flow}");
    assert!(flow.get("degraded").is_none(), "{flow}");
    assert_eq!(flow["items"].as_array().unwrap().len(), 7, "six red packets and the withdrawal: {flow}");
    assert_eq!(withdraw(&server, act_id, "d-2", 1).0, 200, "withdrawals work again");
}

// Proves that with Redis stopped the wallet answers 200 from the ledger alone (marked
// `degraded: ["tokens"]`, pending and the balance `null`) to a user's session, the flow shows
// the ledger's entries, withdrawals refuse; that with PostgreSQL stopped too both answer 503;
// and that once both are back every answer is whole again.
#[test]
fn tokens_down_the_wallet_answers_from_the_ledger() {
    let mut redis = OwnRedis::start();
    let mut postgres = OwnPostgres::start();
    let backends = Backends {
        store_url: Some(redis.url()),
        prefix: unique_prefix(),
        ledger_url: Some(postgres.url()),
        reclaim_after_ms: 300,
    };
    let server = Server::start_on(&backends, &[]);
    let act_id = 7201;
    for stage in 0..3 {
        server.grant_rain(act_id, 6, stage);
    }
    server.wait_credited(act_id);
    // A signed request's nonce is checked in Redis, so a mobile client's session is what reads
    // a wallet with Redis down.
    let body = json!({ "act_id": act_id, "scopes": ["wallet:read", "wallet:withdraw"], "ttl_s": 600 });
    let (status, minted) = server.post("/v1/sessions", &body);
    assert_eq!(status, 200, "{minted}");
    let session = Auth::Header(format!("Bearer {}", minted["session"].as_str().unwrap()));
    let as_user = |method: &str, path: &str, body: &str| {
        request_as(&server.addr, &session, method, path, body, "application/json")
    };
    let wallet_path = format!("/v1/wallets/{act_id}");
    let flow_path = format!("/v1/wallets/{act_id}/flow");
    let withdrawal_path = format!("/v1/wallets/{act_id}/withdrawals");
    let (status, whole) = as_user("GET", &wallet_path, "");
    assert_eq!((status, whole["balance_cents"].as_i64()), (200, Some(264)), "{whole}");
    assert!(whole.get("degraded").is_none(), "{whole}");

    redis.stop();
    let degraded = wait_for(WAIT_LIMIT, || {
        let (status, body) = as_user("GET", &wallet_path, "");
        assert_eq!(status, 200, "{body}");
        body.get("degraded").is_some().then_some(body)
    });
    assert_eq!(degraded["degraded"], json!(["tokens"]), "{degraded}");
    assert_eq!(degraded["credited_cents"], 264, "{degraded}");
    for unknown in ["pending_cents", "pending_count", "balance_cents", "total_income_cents"] {
        assert_eq!(degraded[unknown], Value::Null, "{unknown}: {degraded}");
    }
    let (status, flow) = as_user("GET", &flow_path, "");
    assert_eq!((status, &flow["degraded"]), (200, &json!(["tokens"])), "{flow}");
    assert_eq!(red_packets_with_status(&flow, "credited"), 3, "{flow}");
    let (status, refused) = as_user("POST", &withdrawal_path, r#"{"request_id":"t-1","amount_cents":1}"#);
    assert_eq!((status, refused["code"].as_str()), (503, Some("unavailable")), "{refused}");
    // An app's signed read goes through without its nonce check (a read moves nothing); a
    // signed write does not.
    let (status, signed) = server.get(&wallet_path);
    assert_eq!((status, &signed["degraded"]), (200, &json!(["tokens"])), "{signed}");
    let packet =
        json!({ "request_id": "t-p", "sender_act_id": act_id, "total_cents": 10, "shares": 1, "split": "equal" });
    let (status, send) = server.post("/v1/packets", &packet);
    assert_eq!((status, send["code"].as_str()), (503, Some("unavailable")), "{send}");
    let (status, send) = as_user("POST", "/v1/packets", &packet.to_string());
    assert_eq!((status, send["code"].as_str()), (503, Some("unavailable")), "a session's send: {send}");

    postgres.stop();
    let down = wait_for(WAIT_LIMIT, || {
        let (status, body) = as_user("GET", &wallet_path, "");
        (status == 503).then_some(body)
    });
    assert_eq!(down["code"], "unavailable", "{down}");
    let (status, flow) = as_user("GET", &flow_path, "");
    assert_eq!((status, flow["code"].as_str()), (503, Some("unavailable")), "{flow}");

    postgres.start_again();
    redis.restart();
    let back = wait_for(WAIT_LIMIT, || {
        let (status, body) = as_user("GET", &wallet_path, "");
        (status == 200 && body.get("degraded").is_none()).then_some(body)
    });
    assert_eq!((back["balance_cents"].as_i64(), back["pending_cents"].as_i64()), (Some(264), Some(0)), "{back}");
    let (status, flow) = as_user("GET", &flow_path, "");
    assert_eq!((status, flow.get("degraded")), (200, None), "{flow}");
    assert_eq!(flow["items"].as_array().unwrap().len(), 3, "{flow}");
    let (status, moved) = as_user("POST", &withdrawal_path, r#"{"request_id":"t-1","amount_cents":1}"#);
    assert_eq!((status, moved["balance_cents"].as_i64()), (200, Some(263)), "{moved}");
}

// Proves a host that starts while PostgreSQL keeps its activity's budget row locked past a
// request's limit waits it out instead of exiting: the start's funding times out at least once
// (the row stays locked for longer than the limit after the host is seen waiting on it), then
// funds once the row is free, and the host serves.
#[test]
fn a_start_waits_out_a_ledger_that_does_not_answer() {
    let postgres = OwnPostgres::start();
    let backends =
        Backends { store_url: None, prefix: unique_prefix(), ledger_url: Some(postgres.url()), reclaim_after_ms: 300 };
    let mut server = Server::start_on(&backends, &["--no-writer"]);
    server.kill9();
    let url = postgres.url();
    let holder = std::thread::spawn(move || hold_budget_row_past_the_limit(&url));
    server.launch(&["--no-writer"]);
    holder.join().expect("the row holder");
    server.grant_rain(7201, 1, 0);
}

/// Locks `test-campaign`'s funded row in a transaction of its own, waits until another session
/// waits for it, holds it for longer than [`LEDGER_REQUEST_LIMIT`] after that, and lets
/// it go.
fn hold_budget_row_past_the_limit(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        client.batch_execute("BEGIN").await.unwrap();
        let locked = client.query("SELECT cents FROM funded WHERE activity_id = 'test-campaign' FOR UPDATE", &[]).await;
        assert_eq!(locked.unwrap().len(), 1, "the first start funded the activity");
        let waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted";
        let started = std::time::Instant::now();
        while client.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
            assert!(started.elapsed() < WAIT_LIMIT, "no session waited for the budget row");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(LEDGER_REQUEST_LIMIT + Duration::from_secs(2)).await;
        client.batch_execute("ROLLBACK").await.unwrap();
        drop(client);
        let _ = connection.await;
    });
}

// Regression: CI saw a host's start fail when a loaded PostgreSQL took longer than the
// connection limit to finish a connection's start-up. A starting host tries the connection
// again: the ledger's first connection here is accepted and never answered (a server too busy to
// start the session), the next ones reach the server. Without the retry the start fails.
#[test]
fn a_start_waits_out_a_ledger_that_does_not_accept_in_time() {
    let postgres = OwnPostgres::start();
    let (proxy_port, stalled) = stall_first_connection_then_forward(postgres.port());
    let url = format!("postgres://postgres@127.0.0.1:{proxy_port}/hongbao");
    let backends = Backends { store_url: None, prefix: unique_prefix(), ledger_url: Some(url), reclaim_after_ms: 300 };
    let server = Server::start_on(&backends, &["--no-writer"]);
    assert!(stalled.load(std::sync::atomic::Ordering::SeqCst), "the first connection was held");
    server.grant_rain(7301, 1, 0);
}

/// A loopback proxy in front of `target_port`: it holds the first connection open without a
/// byte, and forwards every later one. Answers its port and whether it held one.
fn stall_first_connection_then_forward(target_port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = stalled.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut kept = Vec::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !held.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    kept.push(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    });
    (port, stalled)
}
