//! Stock bounds in the token store itself, over every deployment: on Redis a scene's stock is
//! split into buckets on different slots, and these bounds must still hold exactly.

use hongbao::store::{GrantCommit, GrantRecord, RestoreOutcome, StockLimits, StockOut, StockUsed};

use crate::deployment::{Deployment, conformance};

fn record(act_id: i64, scene: &str, amount_cents: i64) -> GrantRecord {
    GrantRecord {
        activity_id: "stock".into(),
        order_no: format!("{act_id}_{scene}_1_cash_0"),
        scene_id: scene.into(),
        act_id,
        amount_cents,
        open_time_ms: 1,
        token: format!("token-{act_id}-{scene}"),
        app_id: 1,
        ..GrantRecord::default()
    }
}

// Proves a scene's count is met exactly under concurrent grants from users of every shard
// (never more, none left over), and that grants one at a time against a scene budget are
// refused exactly when the amount is more than what is left, with the reason the bound gives:
// stock is neither oversold nor stranded.
conformance!(stock_is_never_oversold_or_stranded);
fn stock_is_never_oversold_or_stranded(deployment: Deployment) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backends = deployment.backends();
    runtime.block_on(async {
        let (store, _ledger) = backends.open(dir.path()).await;
        let counted =
            StockLimits { activity_budget_cents: 1_000_000_000, scene_count_max: Some(37), scene_budget_cents: None };
        let grants: Vec<_> = (1..=200)
            .map(|act_id| {
                let store = store.clone();
                tokio::spawn(async move { store.commit_grant(record(act_id, "count", 5), counted, None).await })
            })
            .collect();
        let mut granted = 0;
        for grant in grants {
            match grant.await.unwrap().unwrap() {
                GrantCommit::Granted(_) => granted += 1,
                GrantCommit::OutOfStock(StockOut::SceneCount) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(granted, 37);
        assert_eq!(store.stock_used("stock", Some("count")).await.unwrap(), StockUsed { count: 37, cents: 185 });

        let budget = 1_000;
        let limits = StockLimits {
            activity_budget_cents: 1_000_000_000,
            scene_count_max: None,
            scene_budget_cents: Some(budget),
        };
        let mut rng = fastrand::Rng::with_seed(9);
        let mut used = 0;
        for act_id in 1..=120 {
            let amount = rng.i64(1..=90);
            let outcome = store.commit_grant(record(act_id, "budget", amount), limits, None).await.unwrap();
            if amount <= budget - used {
                assert!(matches!(outcome, GrantCommit::Granted(_)), "{amount} of {} left: {outcome:?}", budget - used);
                used += amount;
            } else {
                assert_eq!(
                    outcome,
                    GrantCommit::OutOfStock(StockOut::SceneBudget),
                    "{amount} of {} left",
                    budget - used
                );
            }
        }
        assert!(budget - used < 90, "the loop never reached the end of the budget");
        let scene = store.stock_used("stock", Some("budget")).await.unwrap();
        assert_eq!(scene.cents, used);

        // The activity's budget, shared by its scenes, is the last bound and says so. Each
        // bucket holds a sixteenth of 100 cents, so on Redis a grant of 7 takes part of its
        // amount from several buckets; 14 grants fit, the 15th does not.
        let activity = StockLimits { activity_budget_cents: 100, scene_count_max: None, scene_budget_cents: None };
        for act_id in 1..=14 {
            let mut one = record(act_id * 7, "a", 7);
            one.activity_id = "tight".into();
            let outcome = store.commit_grant(one, activity, None).await.unwrap();
            assert!(matches!(outcome, GrantCommit::Granted(_)), "grant {act_id}: {outcome:?}");
        }
        let mut last = record(1_000, "a", 7);
        last.activity_id = "tight".into();
        let outcome = store.commit_grant(last.clone(), activity, None).await.unwrap();
        assert_eq!(outcome, GrantCommit::OutOfStock(StockOut::ActivityBudget));
        assert_eq!(store.stock_used("tight", None).await.unwrap(), StockUsed { count: 14, cents: 98 });
        // A restored token is never refused, and what it adds counts for every later grant.
        last.seq = 0;
        assert_eq!(store.restore(last, false, activity).await.unwrap(), RestoreOutcome::Restored);
        assert_eq!(store.stock_used("tight", None).await.unwrap(), StockUsed { count: 15, cents: 105 });
        let mut more = record(2_000, "a", 1);
        more.activity_id = "tight".into();
        let outcome = store.commit_grant(more, activity, None).await.unwrap();
        assert_eq!(outcome, GrantCommit::OutOfStock(StockOut::ActivityBudget));
    });
}
