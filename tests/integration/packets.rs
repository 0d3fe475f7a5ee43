//! Group red packets between people: send, grab, refund, with exact books, on every deployment.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::deployment::{Deployment, conformance};
use crate::support::{Auth, Server, TEST_ADMIN_TOKEN, request_as, wait_for};

/// Gives `act_id` `grants × 88` cents of campaign money (pending until the writer credits it).
fn fund(server: &Server, act_id: i64, grants: u32) {
    for stage in 0..grants {
        server.grant_rain(act_id, 7, stage);
    }
}

fn send(server: &Server, body: &Value) -> (u16, Value) {
    server.post("/v1/packets", body)
}

fn grab(server: &Server, packet_id: &str, act_id: i64) -> (u16, Value) {
    server.post(&format!("/v1/packets/{packet_id}/grabs"), &json!({ "act_id": act_id }))
}

fn packet(server: &Server, packet_id: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/packets/{packet_id}"));
    assert_eq!(status, 200, "{body}");
    body
}

fn flow_kinds(server: &Server, act_id: i64) -> Vec<(String, i64)> {
    let (status, flow) = server.get(&format!("/v1/wallets/{act_id}/flow?limit=100"));
    assert_eq!(status, 200, "{flow}");
    flow["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["kind"].as_str().unwrap().to_owned(), item["amount_cents"].as_i64().unwrap()))
        .collect()
}

// Proves the whole life of a packet keeps the books exact: the send debits the sender once
// (pending tokens credited first; a retry answers the same packet; another total under the same
// request id is a conflict; more than the balance is refused), each grab is told its amount at
// once, a retried grab answers the same share, the refund returns exactly what nobody claimed,
// and every cent ends with a grabber or back with the sender, shown in the wallets' flows.
conformance!(send_grab_refund_keeps_every_cent);
fn send_grab_refund_keeps_every_cent(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    let sender = 6001;
    fund(&server, sender, 5);
    let body = json!({
        "request_id": "p-1", "sender_act_id": sender, "total_cents": 400, "shares": 4,
        "split": "random", "greeting": "新年快乐",
    });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    assert_eq!((sent["balance_cents"].as_i64(), sent["replayed"].as_bool()), (Some(40), Some(false)), "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();

    let (status, again) = send(&server, &body);
    assert_eq!(
        (status, again["packet_id"].as_str(), again["replayed"].as_bool()),
        (200, Some(&*packet_id), Some(true))
    );
    let mut other = body.clone();
    other["total_cents"] = json!(300);
    let (status, conflict) = send(&server, &other);
    assert_eq!((status, conflict["code"].as_str()), (409, Some("request_id_conflict")), "{conflict}");
    let too_much =
        json!({ "request_id": "p-2", "sender_act_id": sender, "total_cents": 41, "shares": 1, "split": "equal" });
    let (status, refused) = send(&server, &too_much);
    assert_eq!((status, refused["code"].as_str()), (409, Some("insufficient_balance")), "{refused}");
    assert_eq!(server.wallet(sender)["balance_cents"], 40);

    let mut grabbed = Vec::new();
    for grabber in [6101, 6102, 6103] {
        let (status, answer) = grab(&server, &packet_id, grabber);
        assert_eq!(status, 200, "{answer}");
        let amount = answer["amount_cents"].as_i64().unwrap();
        assert!(amount >= 1 && !answer["token"].as_str().unwrap().is_empty(), "{answer}");
        assert_eq!(answer["replayed"], false);
        grabbed.push((grabber, amount));
    }
    let (status, retried) = grab(&server, &packet_id, 6101);
    assert_eq!(
        (status, retried["amount_cents"].as_i64(), retried["replayed"].as_bool()),
        (200, Some(grabbed[0].1), Some(true))
    );
    let view = packet(&server, &packet_id);
    assert_eq!((view["shares_left"].as_i64(), view["status"].as_str()), (Some(1), Some("open")), "{view}");
    // While it is open the books balance too: what is not credited is still in the account.
    let (_, open_books) = server.get(&format!("/v1/packets/{packet_id}/reconciliation"));
    assert_eq!(open_books["balanced"], true, "{open_books}");
    let claimed: i64 = grabbed.iter().map(|(_, amount)| amount).sum();
    assert_eq!(view["cents_left"].as_i64(), Some(400 - claimed));

    let (status, refunded) = server.post(&format!("/v1/packets/{packet_id}/refund"), &json!({}));
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(
        (refunded["status"].as_str(), refunded["refunded_cents"].as_i64()),
        (Some("refunded"), Some(400 - claimed))
    );
    let (status, late) = grab(&server, &packet_id, 6104);
    assert_eq!((status, late["code"].as_str()), (409, Some("packet_expired")), "{late}");

    for (grabber, amount) in &grabbed {
        let wallet = server.wait_credited(*grabber);
        assert_eq!(wallet["balance_cents"].as_i64(), Some(*amount), "{wallet}");
        assert_eq!(flow_kinds(&server, *grabber), [("packet_grabbed".to_owned(), *amount)]);
    }
    let wallet = server.wait_credited(sender);
    assert_eq!(wallet["balance_cents"].as_i64(), Some(40 + 400 - claimed), "{wallet}");
    let kinds = flow_kinds(&server, sender);
    assert!(kinds.contains(&("packet_sent".to_owned(), -400)), "{kinds:?}");
    assert!(kinds.contains(&("packet_refund".to_owned(), 400 - claimed)), "{kinds:?}");
    let (status, books) = server.get(&format!("/v1/packets/{packet_id}/reconciliation"));
    assert_eq!(status, 200, "{books}");
    assert_eq!((books["balanced"].as_bool(), books["account_cents"].as_i64()), (Some(true), Some(0)), "{books}");
    assert_eq!(
        (books["credited_cents"].as_i64(), books["refunded_cents"].as_i64()),
        (Some(claimed), Some(400 - claimed))
    );
    // Every cent: with a grabber or back with the sender.
    let total: i64 =
        grabbed.iter().map(|(grabber, _)| server.wallet(*grabber)["balance_cents"].as_i64().unwrap()).sum();
    assert_eq!(total + server.wallet(sender)["balance_cents"].as_i64().unwrap(), 440);
}

// Proves an equal split differs by at most a cent and sums exactly, the grab list is enforced
// (403 for a user outside the group), and a packet whose shares are all taken answers
// `packet_empty`.
conformance!(equal_split_grab_list_and_empty);
fn equal_split_grab_list_and_empty(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    let sender = 6201;
    fund(&server, sender, 2);
    let body = json!({
        "request_id": "eq", "sender_act_id": sender, "total_cents": 100, "shares": 3, "split": "equal",
        "grabbers": [6301, 6302, 6303, 6304],
    });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    let (status, outsider) = grab(&server, &packet_id, 6305);
    assert_eq!((status, outsider["code"].as_str()), (403, Some("grab_not_allowed")), "{outsider}");
    let mut amounts: Vec<i64> =
        (6301..=6303).map(|grabber| grab(&server, &packet_id, grabber).1["amount_cents"].as_i64().unwrap()).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, [33, 33, 34]);
    let (status, empty) = grab(&server, &packet_id, 6304);
    assert_eq!((status, empty["code"].as_str()), (409, Some("packet_empty")), "{empty}");
    assert_eq!(packet(&server, &packet_id)["status"], "empty");
    for (bad, why) in [
        (
            json!({ "request_id": "b", "sender_act_id": sender, "total_cents": 2, "shares": 3, "split": "equal" }),
            "a cent per share",
        ),
        (
            json!({ "request_id": "b", "sender_act_id": sender, "total_cents": 9, "shares": 0, "split": "equal" }),
            "no shares",
        ),
        (
            json!({ "request_id": "b", "sender_act_id": sender, "total_cents": 9, "shares": 1, "split": "fair" }),
            "unknown split",
        ),
        (
            json!({ "request_id": "b", "sender_act_id": sender, "total_cents": 9, "shares": 1, "split": "equal", "expires_in_s": 0 }),
            "expiry",
        ),
    ] {
        let (status, answer) = send(&server, &bad);
        assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")), "{why}: {answer}");
    }
    for unknown_id in ["00000000000000000000", "not-a-packet"] {
        let (status, unknown) = grab(&server, unknown_id, 6301);
        assert_eq!((status, unknown["code"].as_str()), (404, Some("packet_not_found")), "{unknown}");
    }
    let (status, wrong_method) = server.get(&format!("/v1/packets/{packet_id}/grabs"));
    assert_eq!(status, 405, "{wrong_method}");
}

// Proves a packet nobody grabs goes back to its sender on its own at expiry, exactly once.
conformance!(expiry_refunds_the_sender);
fn expiry_refunds_the_sender(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    let sender = 6401;
    fund(&server, sender, 1);
    let body = json!({ "request_id": "x", "sender_act_id": sender, "total_cents": 80, "shares": 8, "split": "random", "expires_in_s": 1 });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["balance_cents"], 8);
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    let view = wait_for(Duration::from_secs(60), || {
        let view = packet(&server, &packet_id);
        (view["status"] == "refunded").then_some(view)
    });
    assert_eq!(view["refunded_cents"], 80);
    assert_eq!(server.wait_credited(sender)["balance_cents"], 88);
    let (status, late) = grab(&server, &packet_id, 6402);
    assert_eq!((status, late["code"].as_str()), (409, Some("packet_expired")));
}

// Proves a host killed between claiming a share and granting it loses and doubles nothing: the
// retried grab after the restart answers the same share, credited once, and the refund counts
// it as claimed.
conformance!(kill9_mid_grab_pays_the_share_once);
fn kill9_mid_grab_pays_the_share_once(deployment: Deployment) {
    let mut server = Server::start_on(&deployment.backends(), &[]);
    let sender = 6501;
    fund(&server, sender, 1);
    let body = json!({ "request_id": "k", "sender_act_id": sender, "total_cents": 60, "shares": 3, "split": "random" });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    server.kill9();
    server.launch_with_env(&[], &[("HONGBAO_FAILPOINTS", "packet.grab.after_claim")]);
    let path = format!("/v1/packets/{packet_id}/grabs");
    assert!(crate::support::try_request(&server.addr, "POST", &path, Some(&json!({ "act_id": 6601 }))).is_err());
    server.wait_exited();
    server.launch(&[]);
    let view = packet(&server, &packet_id);
    assert_eq!(view["grabs"].as_array().unwrap().len(), 1, "the claim survived the crash: {view}");
    let claimed = view["grabs"][0]["amount_cents"].as_i64().unwrap();
    let (status, retried) = grab(&server, &packet_id, 6601);
    assert_eq!((status, retried["amount_cents"].as_i64()), (200, Some(claimed)), "{retried}");
    let (status, refunded) = server.post(&format!("/v1/packets/{packet_id}/refund"), &json!({}));
    assert_eq!((status, refunded["refunded_cents"].as_i64()), (200, Some(60 - claimed)), "{refunded}");
    assert_eq!(server.wait_credited(6601)["balance_cents"].as_i64(), Some(claimed));
    assert_eq!(server.wait_credited(sender)["balance_cents"].as_i64(), Some(88 - claimed));
}

// Proves a host killed after the ledger wrote a refund but before the store knew refunds
// nothing twice: after the restart the sweep finishes it and the sender has the money once.
conformance!(kill9_mid_refund_refunds_once);
fn kill9_mid_refund_refunds_once(deployment: Deployment) {
    let mut server = Server::start_on(&deployment.backends(), &[]);
    let sender = 6701;
    fund(&server, sender, 1);
    server.kill9();
    server.launch_with_env(&[], &[("HONGBAO_FAILPOINTS", "packet.refund.after_ledger")]);
    let body = json!({ "request_id": "r", "sender_act_id": sender, "total_cents": 50, "shares": 2, "split": "equal", "expires_in_s": 1 });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    // The sweep reaches the failpoint at expiry and the process aborts.
    server.wait_exited();
    server.launch(&[]);
    let view = wait_for(Duration::from_secs(60), || {
        let view = packet(&server, &packet_id);
        (view["status"] == "refunded").then_some(view)
    });
    assert_eq!(view["refunded_cents"], 50);
    assert_eq!(server.wait_credited(sender)["balance_cents"], 88);
    let kinds = flow_kinds(&server, sender);
    assert_eq!(kinds.iter().filter(|(kind, _)| kind == "packet_refund").count(), 1, "{kinds:?}");
}

// Proves 2,000 users grabbing one 100-share packet at once on a Redis Cluster give exactly 100
// distinct winners whose shares sum to the total, and everyone else `packet_empty`.
#[test]
fn two_thousand_grabbers_on_a_cluster_give_exactly_the_shares() {
    let server = Server::start_on(&Deployment::Cluster.backends(), &[]);
    let sender = 6801;
    fund(&server, sender, 12);
    let body =
        json!({ "request_id": "hot", "sender_act_id": sender, "total_cents": 1000, "shares": 100, "split": "random" });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    let addr = server.addr.clone();
    let threads: Vec<_> = (0..50)
        .map(|thread| {
            let (addr, packet_id) = (addr.clone(), packet_id.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for n in 0..40 {
                    let act_id = 70_000 + thread * 40 + n;
                    let path = format!("/v1/packets/{packet_id}/grabs");
                    let (status, answer) =
                        crate::support::request(&addr, "POST", &path, Some(&json!({ "act_id": act_id })));
                    outcomes.push((act_id, status, answer));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<(i64, u16, Value)> = threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    let winners: Vec<&(i64, u16, Value)> = outcomes.iter().filter(|(_, status, _)| *status == 200).collect();
    assert_eq!(winners.len(), 100);
    assert_eq!(winners.iter().map(|(act_id, _, _)| act_id).collect::<HashSet<_>>().len(), 100);
    assert_eq!(winners.iter().map(|(_, _, answer)| answer["amount_cents"].as_i64().unwrap()).sum::<i64>(), 1000);
    assert!(
        outcomes
            .iter()
            .filter(|(_, status, _)| *status != 200)
            .all(|(_, status, answer)| *status == 409 && answer["code"] == "packet_empty")
    );
    let view = packet(&server, &packet_id);
    assert_eq!((view["shares_left"].as_i64(), view["cents_left"].as_i64()), (Some(0), Some(0)));
    for (act_id, _, answer) in &winners {
        let wallet = server.wait_credited(*act_id);
        assert_eq!(wallet["balance_cents"], answer["amount_cents"], "{act_id}");
    }
    let (_, books) = server.get(&format!("/v1/packets/{packet_id}/reconciliation"));
    assert_eq!((books["balanced"].as_bool(), books["credited_cents"].as_i64()), (Some(true), Some(1000)), "{books}");
}

fn session(server: &Server, act_id: i64, scopes: &[&str]) -> Auth {
    let (status, answer) = server.post("/v1/sessions", &json!({ "act_id": act_id, "scopes": scopes, "ttl_s": 600 }));
    assert_eq!(status, 200, "{answer}");
    Auth::Header(format!("Bearer {}", answer["session"].as_str().unwrap()))
}

// Proves users' sessions act only for themselves and only with the right scope: a
// `wallet:withdraw` session sends for its own user (403 for another sender or without the scope),
// a `packets:grab` session grabs for its own user (403 for another), and an unsigned request is
// 401.
#[test]
fn sessions_send_and_grab_only_for_their_user() {
    let server = Server::start(&[]);
    let sender = 6901;
    fund(&server, sender, 2);
    let body = json!({ "request_id": "s", "sender_act_id": sender, "total_cents": 100, "shares": 2, "split": "equal" });
    let payload = body.to_string();
    let send_as = |auth: &Auth| request_as(&server.addr, auth, "POST", "/v1/packets", &payload, "application/json");
    assert_eq!(send_as(&Auth::None).0, 401);
    assert_eq!(send_as(&session(&server, sender, &["wallet:read"])).0, 403);
    assert_eq!(send_as(&session(&server, sender + 1, &["wallet:withdraw"])).0, 403);
    let (status, sent) = send_as(&session(&server, sender, &["wallet:withdraw"]));
    assert_eq!(status, 200, "{sent}");
    let path = format!("/v1/packets/{}/grabs", sent["packet_id"].as_str().unwrap());
    let grab = json!({ "act_id": 6902 }).to_string();
    let grab_as = |auth: &Auth| request_as(&server.addr, auth, "POST", &path, &grab, "application/json");
    assert_eq!(grab_as(&session(&server, 6903, &["packets:grab"])).0, 403);
    assert_eq!(grab_as(&session(&server, 6902, &["wallet:read"])).0, 403);
    let (status, grabbed) = grab_as(&session(&server, 6902, &["packets:grab"]));
    assert_eq!((status, grabbed["amount_cents"].as_i64()), (200, Some(50)), "{grabbed}");
    // The admin credential does not act for users; the operator's refund is not an app's.
    let admin = Auth::Header(format!("Bearer {TEST_ADMIN_TOKEN}"));
    assert_eq!(grab_as(&admin).0, 403);
    // A session names its user by act_id only (resolving a name would bind it).
    let named = json!({ "app_user_id": "someone" }).to_string();
    let by_name =
        request_as(&server.addr, &session(&server, 6902, &["packets:grab"]), "POST", &path, &named, "application/json");
    assert_eq!(by_name.0, 403, "{}", by_name.1);
    // A restricted packet shows to its sender and its group, not to another user's session.
    let group = json!({ "request_id": "g", "sender_act_id": sender, "total_cents": 10, "shares": 1, "split": "equal", "grabbers": [6910] });
    let (status, restricted) = send(&server, &group);
    assert_eq!(status, 200, "{restricted}");
    let view_path = format!("/v1/packets/{}", restricted["packet_id"].as_str().unwrap());
    let read_as = |act_id: i64| {
        request_as(&server.addr, &session(&server, act_id, &["wallet:read"]), "GET", &view_path, "", "application/json")
            .0
    };
    assert_eq!((read_as(sender), read_as(6910), read_as(6911)), (200, 200, 403));
    let refund = format!("/v1/packets/{}/refund", sent["packet_id"].as_str().unwrap());
    let by_app = request_as(&server.addr, &Auth::App(1128), "POST", &refund, "{}", "application/json");
    assert_eq!(by_app.0, 403, "{}", by_app.1);
}

// Proves packets name users by the app's own user ids: the sender and a grabber bound through
// `POST /v1/identities` send and grab by `app_user_id`, and the money lands in their act_ids.
conformance!(packets_name_users_by_app_user_id);
fn packets_name_users_by_app_user_id(deployment: Deployment) {
    let server = Server::start_on(&deployment.backends(), &[]);
    let bind = |user: &str| {
        let (status, answer) = server.post("/v1/identities", &json!({ "app_user_id": user }));
        assert_eq!(status, 200, "{answer}");
        answer["act_id"].as_i64().unwrap()
    };
    let (sender, grabber) = (bind("alice"), bind("bob"));
    fund(&server, sender, 1);
    let body =
        json!({ "request_id": "n", "sender_app_user_id": "alice", "total_cents": 30, "shares": 1, "split": "equal" });
    let (status, sent) = send(&server, &body);
    assert_eq!((status, sent["sender_act_id"].as_i64()), (200, Some(sender)), "{sent}");
    let path = format!("/v1/packets/{}/grabs", sent["packet_id"].as_str().unwrap());
    let (status, grabbed) = server.post(&path, &json!({ "app_user_id": "bob" }));
    assert_eq!((status, grabbed["act_id"].as_i64(), grabbed["amount_cents"].as_i64()), (200, Some(grabber), Some(30)));
    assert_eq!(server.wait_credited(grabber)["balance_cents"], 30);
    let (status, both) = server.post(&path, &json!({ "act_id": grabber, "app_user_id": "bob" }));
    assert_eq!((status, both["code"].as_str()), (400, Some("bad_request")), "{both}");
}

// Proves a grab's token can be restored after the token log is lost (the packet's claims are in
// their own journal): the grabber's share comes back once and is credited once, and a token
// whose share nobody claimed is refused.
#[test]
fn grab_tokens_restore_after_the_token_log_is_lost() {
    let mut server = Server::start_on(&Deployment::Embedded.backends(), &[]);
    let sender = 7001;
    fund(&server, sender, 1);
    server.wait_credited(sender);
    server.kill9();
    server.launch(&["--no-writer"]);
    let body =
        json!({ "request_id": "lost", "sender_act_id": sender, "total_cents": 40, "shares": 2, "split": "equal" });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    let (status, grabbed) = grab(&server, &packet_id, 7101);
    assert_eq!(status, 200, "{grabbed}");
    server.kill9();
    // Only the token log: the packets' own journal keeps the claims.
    std::fs::remove_file(server.data.join("tokens.log")).unwrap();
    server.launch(&[]);
    assert_eq!(server.wallet(7101)["balance_cents"], 0, "the pending grab is lost with the token log");
    let restore = |act_id: i64| {
        let (status, answer) = server.post(
            &format!("/v1/wallets/{act_id}/tokens:restore"),
            &json!({ "tokens": [grabbed["token"].as_str().unwrap()] }),
        );
        assert_eq!(status, 200, "{answer}");
        answer["results"][0].clone()
    };
    assert_eq!(restore(7101)["result"], "restored");
    assert_eq!(restore(7101)["result"], "already_present");
    assert_eq!(server.wait_credited(7101)["balance_cents"], 20);
    let (status, refunded) = server.post(&format!("/v1/packets/{packet_id}/refund"), &json!({}));
    assert_eq!((status, refunded["refunded_cents"].as_i64()), (200, Some(20)), "{refunded}");
    let (_, books) = server.get(&format!("/v1/packets/{packet_id}/reconciliation"));
    assert_eq!((books["balanced"].as_bool(), books["account_cents"].as_i64()), (Some(true), Some(0)), "{books}");
}

// Proves a packet whose token store lost its data is rebuilt from the ledger: the send's entry
// gives the shares, the grabs the ledger credited stay claimed (a retry answers the same share
// and is paid once), the lost pending claim's share goes back to the pool, and the refund and
// the books come out exact.
conformance!(a_packet_the_store_lost_is_rebuilt_from_the_ledger);
fn a_packet_the_store_lost_is_rebuilt_from_the_ledger(deployment: Deployment) {
    let backends = deployment.backends();
    let mut server = Server::start_on(&backends, &[]);
    let sender = 7201;
    fund(&server, sender, 2);
    let body =
        json!({ "request_id": "lost", "sender_act_id": sender, "total_cents": 90, "shares": 3, "split": "random" });
    let (status, sent) = send(&server, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    let first = grab(&server, &packet_id, 7301).1["amount_cents"].as_i64().unwrap();
    server.wait_credited(7301);
    server.kill9();
    server.launch(&["--no-writer"]);
    assert_eq!(grab(&server, &packet_id, 7302).0, 200);
    server.kill9();
    backends.lose_token_store(&server.data);
    server.launch(&[]);

    let view = packet(&server, &packet_id);
    let grabs: Vec<(i64, i64)> = view["grabs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["act_id"].as_i64().unwrap(), g["amount_cents"].as_i64().unwrap()))
        .collect();
    // The credited grab is claimed again with its own amount (a random split: the rebuild matched
    // it among the shares); the pending one was lost with the store.
    assert_eq!((grabs, view["shares_left"].as_i64()), (vec![(7301, first)], Some(2)), "{view}");
    let (status, again) = grab(&server, &packet_id, 7301);
    assert_eq!(
        (status, again["amount_cents"].as_i64(), again["replayed"].as_bool()),
        (200, Some(first), Some(true)),
        "{again}"
    );
    let (status, regrab) = grab(&server, &packet_id, 7302);
    assert_eq!(status, 200, "{regrab}");
    let second = regrab["amount_cents"].as_i64().unwrap();
    let (status, refunded) = server.post(&format!("/v1/packets/{packet_id}/refund"), &json!({}));
    assert_eq!((status, refunded["refunded_cents"].as_i64()), (200, Some(90 - first - second)), "{refunded}");
    assert_eq!(server.wait_credited(7301)["balance_cents"], first);
    assert_eq!(server.wait_credited(7302)["balance_cents"], second);
    assert_eq!(server.wait_credited(sender)["balance_cents"], 176 - first - second);
    let (_, books) = server.get(&format!("/v1/packets/{packet_id}/reconciliation"));
    assert_eq!((books["balanced"].as_bool(), books["account_cents"].as_i64()), (Some(true), Some(0)), "{books}");
}

// Proves a host killed between the send's debit and storing the packet loses nothing: the
// packet is rebuilt from the ledger's send entry (on a read, and by the refund sweep at expiry)
// and the sender gets the whole amount back once.
conformance!(kill9_after_the_send_debit_rebuilds_the_packet);
fn kill9_after_the_send_debit_rebuilds_the_packet(deployment: Deployment) {
    let mut server = Server::start_on(&deployment.backends(), &[]);
    let sender = 7601;
    fund(&server, sender, 1);
    server.kill9();
    server.launch_with_env(&[], &[("HONGBAO_FAILPOINTS", "packet.send.after_debit")]);
    let body = json!({ "request_id": "d", "sender_act_id": sender, "total_cents": 70, "shares": 7, "split": "random", "expires_in_s": 1 });
    assert!(crate::support::try_request(&server.addr, "POST", "/v1/packets", Some(&body)).is_err());
    server.wait_exited();
    server.launch(&[]);
    // The sweep finds the expected packet at expiry, rebuilds it from the ledger and refunds it.
    assert_eq!(
        wait_for(Duration::from_secs(60), || {
            let wallet = server.wallet(sender);
            (wallet["balance_cents"] == 88).then_some(wallet)
        })["credited_cents"],
        88
    );
    // The retried send answers the same packet, refunded.
    let (status, again) = send(&server, &body);
    assert_eq!((status, again["replayed"].as_bool()), (200, Some(true)), "{again}");
    let view = packet(&server, again["packet_id"].as_str().unwrap());
    assert_eq!((view["status"].as_str(), view["refunded_cents"].as_i64()), (Some("refunded"), Some(70)), "{view}");
    let kinds = flow_kinds(&server, sender);
    assert_eq!(kinds.iter().filter(|(kind, _)| kind == "packet_refund").count(), 1, "{kinds:?}");
}

// Proves a sweep is not held up by how many packets are due: 80 packets (more than one sweep
// takes) expiring together are all refunded.
#[test]
fn more_packets_due_than_one_sweep_takes_all_refund() {
    let server = Server::start(&[]);
    let sender = 7701;
    fund(&server, sender, 1);
    let mut ids = Vec::new();
    for n in 0..80 {
        let body = json!({ "request_id": format!("many-{n}"), "sender_act_id": sender, "total_cents": 1, "shares": 1, "split": "equal", "expires_in_s": 1 });
        let (status, sent) = send(&server, &body);
        assert_eq!(status, 200, "{sent}");
        ids.push(sent["packet_id"].as_str().unwrap().to_owned());
    }
    wait_for(Duration::from_secs(120), || {
        ids.iter().all(|id| packet(&server, id)["status"] == "refunded").then_some(())
    });
    assert_eq!(server.wait_credited(sender)["balance_cents"], 88);
}

// Proves a fleet refunds a packet once: two hosts on one Redis and PostgreSQL both sweep, one
// takes the packet (or both try and the ledger's entry id makes the second a replay), and the
// sender gets the unclaimed money back exactly once, seen the same from either host.
#[test]
fn a_fleet_refunds_once() {
    let backends = Deployment::Redis.backends();
    let files = [("test-campaign.yaml", crate::support::TEST_CAMPAIGN)];
    let first = Server::start_with_on(&backends, &files, None, &[]);
    let second = Server::start_with_on(&backends, &files, Some(&first), &[]);
    let sender = 7401;
    fund(&first, sender, 1);
    let body = json!({ "request_id": "fleet", "sender_act_id": sender, "total_cents": 60, "shares": 2, "split": "equal", "expires_in_s": 1 });
    let (status, sent) = send(&first, &body);
    assert_eq!(status, 200, "{sent}");
    let packet_id = sent["packet_id"].as_str().unwrap().to_owned();
    assert_eq!(grab(&second, &packet_id, 7501).1["amount_cents"], 30);
    let view = wait_for(Duration::from_secs(60), || {
        let view = packet(&second, &packet_id);
        (view["status"] == "refunded").then_some(view)
    });
    assert_eq!(view["refunded_cents"], 30);
    assert_eq!(packet(&first, &packet_id)["refunded_cents"], 30);
    assert_eq!(first.wait_credited(sender)["balance_cents"], 88 - 60 + 30);
    let kinds = flow_kinds(&second, sender);
    assert_eq!(kinds.iter().filter(|(kind, _)| kind == "packet_refund").count(), 1, "{kinds:?}");
}
