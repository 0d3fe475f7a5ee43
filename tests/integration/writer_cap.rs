//! The ledger writer in-process: its cap, driven by a hand-moved clock over the embedded stores
//! (the fleet-wide cap on Redis runs on the server's clock and is checked by the fleet test),
//! and parking and forced crediting over every deployment.

use std::sync::Arc;

use hongbao::clock::{Clock as _, ManualClock};
use hongbao::ledger::Ledger;
use hongbao::store::{GrantCommit, GrantRecord, StockLimits, Store};
use hongbao::writer::{LedgerWriter, WriterConfig};

use crate::deployment::{Deployment, conformance};

fn record(n: i64) -> GrantRecord {
    GrantRecord {
        activity_id: "cap".into(),
        order_no: format!("{n}_rain_1_cash_0"),
        scene_id: "rain".into(),
        act_id: n,
        amount_cents: 10,
        open_time_ms: 1,
        token: "t".into(),
        app_id: 1,
        ..GrantRecord::default()
    }
}

/// Runs `test` on a multi-threaded runtime over a fresh token store and ledger of `deployment`.
fn with_stores<F: std::future::Future<Output = ()>>(deployment: Deployment, test: impl FnOnce(Store, Ledger) -> F) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backends = deployment.backends();
    runtime.block_on(async {
        let (store, ledger) = backends.open(dir.path()).await;
        test(store, ledger).await;
    });
}

async fn wallet_sum(ledger: &Ledger, users: impl Iterator<Item = i64>) -> i64 {
    let mut sum = 0;
    for n in users {
        sum += ledger.balance(&format!("wallet/{n}")).await.unwrap();
    }
    sum
}

// Proves that with the writer capped at N credits/s, no one-second window of the controllable
// clock ever holds more than N credits, that the writer still works at the cap, and that every
// token is credited in the end.
#[test]
fn writer_never_exceeds_its_cap() {
    with_stores(Deployment::Embedded, |store, ledger| async move {
        ledger.fund_activity("cap".into(), 1_000_000, 0).await.unwrap();
        let total = 1_000;
        for n in 1..=total {
            let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
            assert!(matches!(store.commit_grant(record(n), limits, None).await.unwrap(), GrantCommit::Granted(_)));
        }
        let cap = 120;
        let clock = ManualClock::new(1_000_000);
        // The fixed-rate writer: this test is about the cap; the steward only ever lowers it, and
        // real batch times on a loaded machine have no place beside a hand-moved clock.
        let config = WriterConfig { credits_per_second_max: Some(cap), batch_entries_max: 25, adaptive: false };
        let writer = LedgerWriter::new(store.clone(), ledger.clone(), Arc::new(clock.clone()), config);
        let mut credits: Vec<(u64, u64)> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(42);
        let mut steps = 0;
        while store.queue_len().await.unwrap() > 0 {
            let report = writer.step().await.unwrap();
            if report.claimed > 0 {
                credits.push((clock.now_ms(), report.claimed as u64));
            }
            clock.advance_ms(rng.u64(0..60));
            steps += 1;
            assert!(steps < 100_000, "the writer stopped making progress");
        }
        for &(start, _) in &credits {
            let in_window: u64 =
                credits.iter().filter(|(t, _)| *t >= start && *t < start + 1_000).map(|(_, n)| n).sum();
            assert!(in_window <= cap, "{in_window} credits in the second from {start}");
        }
        let elapsed_s = (credits.last().unwrap().0 - credits[0].0) as f64 / 1000.0;
        let rate = total as f64 / elapsed_s.max(1.0);
        assert!(rate > cap as f64 * 0.9, "writer ran at {rate:.0}/s, far below the cap of {cap}");
        assert_eq!(wallet_sum(&ledger, 1..=total).await, total * 10);
    });
}

// Regression: tokens the ledger refused (budget not funded) stayed at the front of the queue and
// blocked all crediting. They must be parked, let the rest through, and be credited once the
// activity is funded.
conformance!(refused_tokens_are_parked_and_credited_after_funding);
fn refused_tokens_are_parked_and_credited_after_funding(deployment: Deployment) {
    with_stores(deployment, |store, ledger| async move {
        // The "cap" activity has no funding yet; "other" is funded.
        ledger.fund_activity("other".into(), 1_000, 0).await.unwrap();
        let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
        for n in 1..=5 {
            store.commit_grant(record(n), limits, None).await.unwrap();
        }
        let mut other = record(6);
        other.activity_id = "other".into();
        store.commit_grant(other, limits, None).await.unwrap();
        let writer = LedgerWriter::new(
            store.clone(),
            ledger.clone(),
            Arc::new(ManualClock::new(0)),
            WriterConfig { credits_per_second_max: None, batch_entries_max: 2, adaptive: false },
        );
        for _ in 0..10 {
            writer.step().await.unwrap();
        }
        assert_eq!(store.queue_len().await.unwrap(), 0, "refused tokens still block the queue");
        assert_eq!(store.parked_len().await.unwrap(), 5);
        assert_eq!(ledger.balance("wallet/6").await.unwrap(), 10, "the funded activity was not credited");
        ledger.fund_activity("cap".into(), 1_000, 0).await.unwrap();
        assert_eq!(store.requeue_parked().await.unwrap(), 5);
        for _ in 0..10 {
            writer.step().await.unwrap();
        }
        assert_eq!((store.queue_len().await.unwrap(), store.parked_len().await.unwrap()), (0, 0));
        assert_eq!(wallet_sum(&ledger, 1..=5).await, 50);
    });
}

// Proves the per-user read bound: past 4096 unsettled tokens a read fails loudly instead of
// showing a partial balance, and forced crediting works through them in passes.
conformance!(unsettled_reads_fail_past_the_bound_and_credit_in_passes);
fn unsettled_reads_fail_past_the_bound_and_credit_in_passes(deployment: Deployment) {
    use hongbao::store::{StoreError, USER_UNSETTLED_READ_MAX};
    with_stores(deployment, |store, ledger| async move {
        ledger.fund_activity("cap".into(), 1_000_000, 0).await.unwrap();
        let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
        let grants: Vec<_> = (0..USER_UNSETTLED_READ_MAX as i64)
            .map(|n| {
                let store = store.clone();
                let mut one = record(n + 1);
                one.act_id = 42;
                tokio::spawn(async move { store.commit_grant(one, limits, None).await.unwrap() })
            })
            .collect();
        for grant in grants {
            grant.await.unwrap();
        }
        assert_eq!(store.unsettled_for_user(42).await.unwrap().len(), USER_UNSETTLED_READ_MAX);
        let mut extra = record(999_999);
        extra.act_id = 42;
        store.commit_grant(extra, limits, None).await.unwrap();
        assert!(matches!(store.unsettled_for_user(42).await, Err(StoreError::TooManyUnsettled { .. })));

        let writer =
            LedgerWriter::new(store.clone(), ledger.clone(), Arc::new(ManualClock::new(0)), WriterConfig::default());
        assert!(writer.credit_user_now(42).await.is_err());
        assert_eq!(writer.credit_user_prefix_now(42).await.unwrap(), USER_UNSETTLED_READ_MAX);
        assert_eq!(writer.credit_user_now(42).await.unwrap(), 1);
        assert_eq!(ledger.balance("wallet/42").await.unwrap(), 10 * (USER_UNSETTLED_READ_MAX as i64 + 1));
    });
}
