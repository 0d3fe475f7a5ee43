//! The ledger over several PostgreSQL databases (`--ledger URL,URL`): what the conformance suite
//! cannot show from outside, the legs of a credit that borrows budget from another shard.

use crate::backends::{fresh_sharded_ledger_url, pg_query, shared_redis_url, unique_prefix};
use crate::deployment::Backends;
use crate::support::{Server, grant_body};

/// A campaign of 100 cents whose red packets are 80: over two shards each holds 50, so every
/// credit borrows from the other shard.
const BORROWING_CAMPAIGN: &str = r#"
activity:
  id: test-campaign
  name: Shard boundary campaign
  budget_cents: 100
  award_types:
    - id: cash
      name: Cash
      awards:
        - id: rain-cash
          name: Rain cash
          scenes:
            - id: rain
              name: Rain
              app_ids: [1128]
              amount:
                kind: fixed
                cents: 80
              reconciliation:
                tolerance_cents: 0
"#;

/// One number from a query answering one row of one column.
fn number(url: &str, sql: &str) -> i64 {
    let rows = pg_query(url, sql).unwrap();
    rows[0][0].as_deref().unwrap_or("0").parse().unwrap()
}

// Proves a host killed between the two legs of a borrowing (the loan written on the lending
// shard, its arrival not yet on the user's) loses nothing and pays nothing twice: after a
// restart the loan arrives once (the start's funding settles loans left on their way, or the
// retried credit finds its loan), the credit completes once, the lender is debited once, and
// both shards' books balance with nothing left on its way.
#[test]
fn a_host_killed_between_the_legs_of_a_borrowing_credits_once_after_a_restart() {
    let backends = Backends {
        store_url: Some(shared_redis_url()),
        prefix: unique_prefix(),
        ledger_url: Some(fresh_sharded_ledger_url(2)),
        reclaim_after_ms: 300,
    };
    let mut server = Server::start_with_on(&backends, &[("campaign.yaml", BORROWING_CAMPAIGN)], None, &[]);
    server.kill9();
    server.launch_with_env(&[], &[("HONGBAO_FAILPOINTS", "ledger.borrow.after_lend")]);
    // User 2 lives on shard 0, whose share is 50 of the 80 granted.
    let act_id = 2;
    let (status, body) = server.post("/v1/grants", &grant_body(act_id, "rain", 1, 0));
    assert_eq!(status, 200, "{body}");
    server.wait_exited();
    let databases = backends.ledger_databases();
    let lent = "SELECT count(*), COALESCE(sum(amount_cents), 0) FROM entries WHERE id LIKE 'fund/%/lent/%'";
    assert_eq!(number(&databases[1], lent), 1, "the host died before its loan was written");
    assert_eq!(number(&databases[0], "SELECT count(*) FROM entries WHERE kind = 1"), 0);

    server.launch(&[]);
    let wallet = server.wait_credited(act_id);
    assert_eq!(wallet["credited_cents"].as_i64(), Some(80), "{wallet}");
    assert_eq!(number(&databases[1], lent), 1, "the loan was made again");
    let came = "SELECT count(*) FROM entries WHERE id LIKE 'fund/%/came/%'";
    assert_eq!(number(&databases[0], came), 1);
    let mut transit = 0;
    for url in &databases {
        assert_eq!(number(url, "SELECT COALESCE(sum(balance), 0) FROM accounts"), 0, "{url} does not balance");
        transit += number(url, "SELECT COALESCE(sum(balance), 0) FROM accounts WHERE name LIKE 'transit/%'");
        let budget = number(url, "SELECT COALESCE(sum(balance), 0) FROM accounts WHERE name LIKE 'budget/%'");
        assert!(budget >= 0, "{url}: budget at {budget}");
    }
    assert_eq!(transit, 0, "cents left between the shards");
    let budget_left: i64 = databases
        .iter()
        .map(|url| number(url, "SELECT COALESCE(sum(balance), 0) FROM accounts WHERE name = 'budget/test-campaign'"))
        .sum();
    assert_eq!(budget_left, 20);
    let (status, books) = server.get("/v1/activities/test-campaign/reconciliation");
    assert_eq!(status, 200, "{books}");
    let rain = books["scenes"].as_array().unwrap().iter().find(|s| s["scene_id"] == "rain").unwrap().clone();
    assert_eq!(rain["credited_count"], 1, "{rain}");
    assert_eq!(rain["findings"], serde_json::json!([]), "{rain}");
}

// Proves a host refuses to start on the shards of a deployment listed in another order, and
// says which database and why, before serving anything.
#[test]
fn a_host_refuses_a_reordered_shard_list() {
    let ledger_url = fresh_sharded_ledger_url(2);
    let backends = Backends {
        store_url: None,
        prefix: unique_prefix(),
        ledger_url: Some(ledger_url.clone()),
        reclaim_after_ms: 300,
    };
    let mut server = Server::start_on(&backends, &[]);
    server.kill9();
    let (first, second) = ledger_url.split_once(',').unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hongbao"))
        .args(["serve", "--listen", "127.0.0.1:0", "--scenes"])
        .arg(&server.scenes)
        .arg("--data")
        .arg(&server.data)
        .args(["--ledger", &format!("{second},{first}")])
        .env("HONGBAO_LOG", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success(), "started on a reordered shard list");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let database = second.rsplit('/').next().unwrap();
    assert!(stderr.contains("shard 1 of 2") && stderr.contains(database), "{stderr}");
}
