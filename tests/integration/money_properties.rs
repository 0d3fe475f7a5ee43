//! Money invariants over random histories of grants, replays, writer steps, crashes and
//! withdrawals, run in-process against the real stores of every deployment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hongbao::app::App;
use hongbao::clock::SystemClock;
use hongbao::grant::{GrantRequest, grant};
use hongbao::ledger::{Credit, EntryKind};
use hongbao::wallet::{self, WithdrawalBody};
use hongbao::writer::WriterConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::deployment::{Backends, Deployment, conformance};

#[derive(Debug, Clone)]
enum Step {
    /// A grant for `user` in stage `stage`.
    Grant { user: u8, stage: u8 },
    /// A writer step.
    Write,
    /// Claim a batch and credit it to the ledger, then crash before marking it credited.
    CrashAfterLedger,
    /// Claim a batch, then crash before the ledger sees it.
    CrashAfterClaim,
    /// A plain crash and restart.
    Crash,
    /// A withdrawal of `percent` of the user's balance (over 100: an overdraw attempt).
    Withdraw { user: u8, percent: u8, request: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 0u8..6).prop_map(|(user, stage)| Step::Grant { user, stage }),
        3 => Just(Step::Write),
        1 => Just(Step::CrashAfterLedger),
        1 => Just(Step::CrashAfterClaim),
        1 => Just(Step::Crash),
        2 => (0u8..4, 0u8..130, 0u8..4).prop_map(|(user, percent, request)| Step::Withdraw { user, percent, request }),
    ]
}

async fn open(backends: &Backends, dir: &Path) -> Arc<App> {
    let writer = WriterConfig { credits_per_second_max: None, batch_entries_max: 3, adaptive: false };
    backends.open_app(&dir.join("scenes"), &dir.join("data"), writer, Arc::new(SystemClock)).await
}

fn act_id(user: u8) -> i64 {
    i64::from(user) + 1
}

async fn check_invariants(app: &App, granted: &HashMap<i64, i64>, withdrawn: &HashMap<i64, i64>) {
    for user in 0..4 {
        let act_id = act_id(user);
        let summary = wallet::summary(app, act_id).await.unwrap();
        let expected = granted.get(&act_id).copied().unwrap_or(0) - withdrawn.get(&act_id).copied().unwrap_or(0);
        assert_eq!(summary.balance_cents, expected, "user {act_id}: {summary:?}");
        assert!(summary.credited_cents >= 0 && summary.pending_cents >= 0, "{summary:?}");
    }
    let balances = app.ledger.all_balances().await.unwrap();
    assert_eq!(balances.iter().map(|(_, b)| b).sum::<i64>(), 0, "double entry does not balance: {balances:?}");
    for (account, balance) in &balances {
        assert!(*balance >= 0 || account.starts_with("funding/"), "{account} is at {balance}");
    }
    let entries = app.ledger.all_entries().await.unwrap();
    let mut orders = std::collections::HashSet::new();
    for entry in entries.iter().filter(|e| e.kind() == EntryKind::RedPacket) {
        assert!(orders.insert(entry.reference.clone()), "order {} credited twice", entry.reference);
    }
}

const SCENES: &str = r#"
activity:
  id: prop
  name: Property campaign
  budget_cents: 100000000
  award_types:
    - id: cash
      name: Cash
      awards:
        - id: rain-cash
          name: Rain cash
          scenes:
            - id: rain
              name: Rain
              app_ids: [1]
              amount:
                kind: random
                min_cents: 1
                max_cents: 500
"#;

// Proves, for any history: each balance = sum granted − withdrawn at every step; no order
// number is credited twice; no guarded account goes below zero; the books balance; and once
// the queue drains, everything granted is credited.
conformance!(money_is_never_lost_or_doubled);
fn money_is_never_lost_or_doubled(deployment: Deployment) {
    // Fewer cases on the production backends: each case makes a database.
    let cases = if deployment == Deployment::Embedded { 24 } else { 8 };
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    runner
        .run(&proptest::collection::vec(step(), 1..40), |steps| {
            run_history(deployment, steps);
            Ok(())
        })
        .unwrap();
}

fn run_history(deployment: Deployment, steps: Vec<Step>) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let backends = deployment.backends();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scenes")).unwrap();
        std::fs::write(dir.path().join("scenes/prop.yaml"), SCENES).unwrap();
        let mut app = open(&backends, dir.path()).await;
        let mut granted: HashMap<i64, i64> = HashMap::new();
        let mut withdrawn: HashMap<i64, i64> = HashMap::new();
        let mut amounts: HashMap<(u8, u8), i64> = HashMap::new();
        let mut done_requests: HashMap<(i64, String), i64> = HashMap::new();
        for step in steps {
            match step {
                Step::Grant { user, stage } => {
                    let request = GrantRequest {
                        app_id: 1,
                        act_id: act_id(user),
                        activity_id: "prop".into(),
                        scene_id: "rain".into(),
                        rain_id: 1,
                        award_type: "cash".into(),
                        stage: u32::from(stage),
                        amount_cents: None,
                        locale: None,
                    };
                    let answer = grant(&app, request).await.unwrap();
                    match amounts.get(&(user, stage)) {
                        Some(amount) => {
                            assert!(answer.replayed);
                            assert_eq!(answer.amount_cents, *amount);
                        }
                        None => {
                            assert!(!answer.replayed);
                            amounts.insert((user, stage), answer.amount_cents);
                            *granted.entry(act_id(user)).or_default() += answer.amount_cents;
                        }
                    }
                }
                Step::Write => {
                    app.writer.step().await.unwrap();
                }
                Step::CrashAfterLedger | Step::CrashAfterClaim => {
                    let claimed = app.store.claim_queue(3).await.unwrap();
                    if matches!(step, Step::CrashAfterLedger) {
                        app.ledger.credit_batch(claimed.iter().map(Credit::of).collect()).await.unwrap();
                    }
                    drop(app);
                    app = open(&backends, dir.path()).await;
                }
                Step::Crash => {
                    drop(app);
                    app = open(&backends, dir.path()).await;
                }
                Step::Withdraw { user, percent, request } => {
                    let act_id = act_id(user);
                    let balance = wallet::summary(&app, act_id).await.unwrap().balance_cents;
                    let amount = (balance * i64::from(percent) / 100).max(1);
                    let request_id = format!("r{request}");
                    let body = WithdrawalBody { request_id: request_id.clone(), amount_cents: amount };
                    let outcome = wallet::withdraw(&app, act_id, body).await;
                    match (done_requests.get(&(act_id, request_id.clone())), outcome) {
                        (Some(previous), Ok(answer)) => {
                            assert!(answer.replayed);
                            assert_eq!(answer.amount_cents, *previous);
                        }
                        (Some(previous), Err(wallet::WalletError::RequestConflict(_))) => assert_ne!(*previous, amount),
                        (None, Ok(answer)) => {
                            assert!(!answer.replayed);
                            assert!(amount <= balance, "withdrew {amount} from {balance}");
                            done_requests.insert((act_id, request_id), amount);
                            *withdrawn.entry(act_id).or_default() += amount;
                        }
                        (None, Err(wallet::WalletError::InsufficientBalance { .. })) => assert!(amount > balance),
                        (_, other) => panic!("unexpected withdrawal outcome {other:?}"),
                    }
                }
            }
            check_invariants(&app, &granted, &withdrawn).await;
        }
        while app.store.queue_len().await.unwrap() > 0 {
            app.writer.step().await.unwrap();
        }
        check_invariants(&app, &granted, &withdrawn).await;
        for user in 0..4 {
            let summary = wallet::summary(&app, act_id(user)).await.unwrap();
            assert_eq!(summary.pending_cents, 0);
            assert_eq!(summary.total_income_cents, granted.get(&act_id(user)).copied().unwrap_or(0));
        }
    });
}
