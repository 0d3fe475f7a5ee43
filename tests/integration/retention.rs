//! Retention: credited records leave the token store after `--retain-credited-s`, and nothing a
//! user or an operator sees changes: a replay answers the original token from the ledger (never a
//! second grant), also after a restart and where the store vouches for the activity; stock stays
//! counted; a restored retired token is not counted again; reconciliation still adds up.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{OwnPostgres, shared_redis_url, unique_prefix};
use crate::deployment::{Backends, Deployment, conformance};
use crate::support::{Server, grant_body, wait_for};

/// The shortest retention, so that a test sees records retired within seconds.
const RETAIN: [&str; 2] = ["--retain-credited-s", "1"];

/// A campaign whose one scene hands out three grants and reconciles.
const FEW: &str = r#"
activity:
  id: few-campaign
  name: Few
  budget_cents: 100000
  award_types:
    - id: cash
      name: Cash
      awards:
        - id: few-cash
          name: Few cash
          scenes:
            - id: few
              name: Three grants
              app_ids: [1128]
              amount:
                kind: fixed
                cents: 100
              inventory:
                count_max: 3
              reconciliation:
                tolerance_cents: 0
"#;

/// A grant body for an activity and scene of these tests.
fn body(activity_id: &str, scene_id: &str, act_id: i64, rain_id: i32, stage: u32) -> Value {
    json!({
        "app_id": 1128, "act_id": act_id, "activity_id": activity_id, "scene_id": scene_id,
        "rain_id": rain_id, "award_type": "cash", "stage": stage,
    })
}

/// The scene's books once at least `count` of its grants have left the store.
fn wait_retired(server: &Server, activity_id: &str, scene_id: &str, count: u64) -> Value {
    wait_for(Duration::from_secs(60), || {
        let (status, books) = server.get(&format!("/v1/activities/{activity_id}/reconciliation"));
        assert_eq!(status, 200, "{books}");
        let scene = books["scenes"].as_array()?.iter().find(|s| s["scene_id"] == scene_id)?.clone();
        (scene["retired_count"].as_u64()? >= count).then_some(scene)
    })
}

// Proves a grant replayed after its record was retired gets the original token back from the
// ledger (not a second grant), on a store that vouches for the activity (the first grant found
// the ledger clean), and again after a restart; a new order of the same user is still granted;
// restoring the retired token pays nothing again; the books count retired grants as issued.
conformance!(replay_after_retention_answers_the_original_token);
fn replay_after_retention_answers_the_original_token(deployment: Deployment) {
    let mut server = Server::start_on(&deployment.backends(), &RETAIN);
    let act_id = 7_101;
    let original = server.grant_rain(act_id, 7, 0);
    server.wait_credited(act_id);
    let books = wait_retired(&server, "test-campaign", "rain", 1);
    assert_eq!((books["issued_count"].as_u64(), books["credited_count"].as_u64()), (Some(1), Some(1)), "{books}");
    assert_eq!(books["findings"], json!([]), "{books}");

    let replay = server.grant_rain(act_id, 7, 0);
    assert_eq!(replay["token"], original["token"], "{replay}");
    assert_eq!((replay["replayed"].as_bool(), replay["status"].as_str()), (Some(true), Some("credited")), "{replay}");
    assert_eq!(replay["amount_cents"], original["amount_cents"], "{replay}");

    let next = server.grant_rain(act_id, 7, 1);
    assert_eq!(next["replayed"].as_bool(), Some(false), "{next}");
    assert_ne!(next["token"], original["token"]);

    let (status, restored) =
        server.post(&format!("/v1/wallets/{act_id}/tokens:restore"), &json!({ "tokens": [original["token"]] }));
    assert_eq!(status, 200, "{restored}");
    let result = restored["results"][0]["result"].as_str().unwrap().to_owned();
    assert!(result == "already_credited" || result == "already_present", "{restored}");

    let wallet = server.wait_credited(act_id);
    assert_eq!((wallet["credited_cents"].as_i64(), wallet["balance_cents"].as_i64()), (Some(176), Some(176)));
    wait_retired(&server, "test-campaign", "rain", 2);

    server.kill9();
    server.launch(&RETAIN);
    for (stage, granted) in [(0, &original), (1, &next)] {
        let again = server.grant_rain(act_id, 7, stage);
        assert_eq!(again["token"], granted["token"], "stage {stage} after a restart: {again}");
        assert_eq!(again["replayed"].as_bool(), Some(true), "{again}");
    }
    let wallet = server.wait_credited(act_id);
    assert_eq!(wallet["credited_cents"].as_i64(), Some(176), "{wallet}");
    let (_, flow) = server.get(&format!("/v1/wallets/{act_id}/flow"));
    assert_eq!(flow["items"].as_array().unwrap().len(), 2, "{flow}");
    let books = wait_retired(&server, "test-campaign", "rain", 2);
    assert_eq!((books["issued_count"].as_u64(), books["credited_count"].as_u64()), (Some(2), Some(2)), "{books}");
    assert_eq!(books["findings"], json!([]), "{books}");
}

// Proves retired grants still count against a scene's stock, before and after a restart: with
// the scene's three grants retired, a fourth user is refused and a replay still answers.
conformance!(stock_stays_counted_after_retention);
fn stock_stays_counted_after_retention(deployment: Deployment) {
    let mut server = Server::start_with_on(&deployment.backends(), &[("few.yaml", FEW)], None, &RETAIN);
    let mut tokens = Vec::new();
    for act_id in [7_201, 7_202, 7_203] {
        let (status, granted) = server.post("/v1/grants", &body("few-campaign", "few", act_id, 1, 0));
        assert_eq!(status, 200, "{granted}");
        tokens.push(granted["token"].clone());
        server.wait_credited(act_id);
    }
    let books = wait_retired(&server, "few-campaign", "few", 3);
    assert_eq!((books["stock_used"]["count"].as_u64(), books["issued_count"].as_u64()), (Some(3), Some(3)), "{books}");
    assert_eq!(books["findings"], json!([]), "{books}");
    for restarted in [false, true] {
        if restarted {
            server.kill9();
            server.launch(&RETAIN);
        }
        let (status, refused) = server.post("/v1/grants", &body("few-campaign", "few", 7_204, 1, 0));
        assert_eq!((status, refused["code"].as_str()), (409, Some("out_of_stock")), "restarted {restarted}: {refused}");
        let (status, replay) = server.post("/v1/grants", &body("few-campaign", "few", 7_202, 1, 0));
        assert_eq!(status, 200, "{replay}");
        assert_eq!((&replay["token"], replay["replayed"].as_bool()), (&tokens[1], Some(true)), "{replay}");
    }
    let (status, restored) = server.post("/v1/wallets/7201/tokens:restore", &json!({ "tokens": [tokens[0]] }));
    assert_eq!(status, 200, "{restored}");
    let books = wait_retired(&server, "few-campaign", "few", 3);
    assert_eq!(books["stock_used"]["count"].as_u64(), Some(3), "a restored retired token counted again: {books}");
}

// Proves a user whose records were retired is not granted while the ledger cannot be asked
// (503 `unavailable`, for a replay and a new order alike: the store's replay check no longer
// covers them), while a user without retired records is; and that once PostgreSQL is back the
// replay gets its original token.
#[test]
fn a_retired_users_grant_waits_for_the_ledger() {
    let mut postgres = OwnPostgres::start();
    let backends = Backends {
        store_url: Some(shared_redis_url()),
        prefix: unique_prefix(),
        ledger_url: Some(postgres.url()),
        reclaim_after_ms: 300,
    };
    let server = Server::start_on(&backends, &RETAIN);
    let (retired, fresh) = (7_301, 7_302);
    let original = server.grant_rain(retired, 8, 0);
    server.wait_credited(retired);
    wait_retired(&server, "test-campaign", "rain", 1);

    postgres.stop();
    for stage in [0, 1] {
        let (status, refused) = server.post("/v1/grants", &grant_body(retired, "rain", 8, stage));
        assert_eq!((status, refused["code"].as_str()), (503, Some("unavailable")), "stage {stage}: {refused}");
    }
    let (status, granted) = server.post("/v1/grants", &grant_body(fresh, "rain", 8, 0));
    assert_eq!((status, granted["replayed"].as_bool()), (200, Some(false)), "{granted}");

    postgres.start_again();
    let replay = wait_for(Duration::from_secs(60), || {
        let (status, body) = server.post("/v1/grants", &grant_body(retired, "rain", 8, 0));
        (status == 200).then_some(body)
    });
    assert_eq!((&replay["token"], replay["replayed"].as_bool()), (&original["token"], Some(true)), "{replay}");
}
