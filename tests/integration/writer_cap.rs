//! The ledger writer's cap, driven by a hand-moved clock over the real embedded stores.

use std::sync::Arc;

use hongbao::clock::{Clock as _, ManualClock};
use hongbao::ledger::EmbeddedLedger;
use hongbao::store::{EmbeddedStore, GrantCommit, GrantRecord, StockLimits};
use hongbao::writer::{LedgerWriter, WriterConfig};

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

/// Runs `test` on a multi-threaded runtime over a fresh embedded token store and ledger.
fn with_stores<F: std::future::Future<Output = ()>>(test: impl FnOnce(EmbeddedStore, EmbeddedLedger) -> F) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let ledger = EmbeddedLedger::open(dir.path()).unwrap();
    runtime.block_on(test(store, ledger));
}

// Proves that with the writer capped at N credits/s, no one-second window of the controllable
// clock ever holds more than N credits, that the writer still works at the cap, and that every
// token is credited in the end.
#[test]
fn writer_never_exceeds_its_cap() {
    with_stores(|store, ledger| async move {
        ledger.fund_activity("cap".into(), 1_000_000, 0).await.unwrap();
        let total = 1_000;
        for n in 1..=total {
            let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
            assert!(matches!(store.commit_grant(record(n), limits).await.unwrap(), GrantCommit::Granted(_)));
        }
        let cap = 120;
        let clock = ManualClock::new(1_000_000);
        let config = WriterConfig { credits_per_second_max: Some(cap), batch_entries_max: 25 };
        let writer = LedgerWriter::new(store.clone(), ledger.clone(), Arc::new(clock.clone()), config);
        let mut credits: Vec<(u64, u64)> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(42);
        let mut steps = 0;
        while store.queue_len().unwrap() > 0 {
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
        let wallet_sum: i64 = (1..=total).map(|n| ledger.balance(&format!("wallet/{n}")).unwrap()).sum();
        assert_eq!(wallet_sum, total * 10);
    });
}

// Regression: tokens the ledger refused (budget not funded) stayed at the front of the queue and
// blocked all crediting. They must be parked, let the rest through, and be credited once the
// activity is funded.
#[test]
fn refused_tokens_are_parked_and_credited_after_funding() {
    with_stores(|store, ledger| async move {
        // The "cap" activity has no funding yet; "other" is funded.
        ledger.fund_activity("other".into(), 1_000, 0).await.unwrap();
        let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
        for n in 1..=5 {
            store.commit_grant(record(n), limits).await.unwrap();
        }
        let mut other = record(6);
        other.activity_id = "other".into();
        store.commit_grant(other, limits).await.unwrap();
        let writer = LedgerWriter::new(
            store.clone(),
            ledger.clone(),
            Arc::new(ManualClock::new(0)),
            WriterConfig { credits_per_second_max: None, batch_entries_max: 2 },
        );
        for _ in 0..10 {
            writer.step().await.unwrap();
        }
        assert_eq!(store.queue_len().unwrap(), 0, "refused tokens still block the queue");
        assert_eq!(store.parked_len().unwrap(), 5);
        assert_eq!(ledger.balance("wallet/6").unwrap(), 10, "the funded activity was not credited");
        ledger.fund_activity("cap".into(), 1_000, 0).await.unwrap();
        assert_eq!(store.requeue_parked().await.unwrap(), 5);
        for _ in 0..10 {
            writer.step().await.unwrap();
        }
        assert_eq!((store.queue_len().unwrap(), store.parked_len().unwrap()), (0, 0));
        let credited: i64 = (1..=5).map(|n| ledger.balance(&format!("wallet/{n}")).unwrap()).sum();
        assert_eq!(credited, 50);
    });
}

// Proves the per-user read bound: past 4096 unsettled tokens a read fails loudly instead of
// showing a partial balance, and forced crediting works through them in passes.
#[test]
fn unsettled_reads_fail_past_the_bound_and_credit_in_passes() {
    use hongbao::store::{StoreError, USER_UNSETTLED_READ_MAX};
    with_stores(|store, ledger| async move {
        ledger.fund_activity("cap".into(), 1_000_000, 0).await.unwrap();
        let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
        let grants: Vec<_> = (0..USER_UNSETTLED_READ_MAX as i64)
            .map(|n| {
                let store = store.clone();
                let mut one = record(n + 1);
                one.act_id = 42;
                tokio::spawn(async move { store.commit_grant(one, limits).await.unwrap() })
            })
            .collect();
        for grant in grants {
            grant.await.unwrap();
        }
        assert_eq!(store.unsettled_for_user(42).unwrap().len(), USER_UNSETTLED_READ_MAX);
        let mut extra = record(999_999);
        extra.act_id = 42;
        store.commit_grant(extra, limits).await.unwrap();
        assert!(matches!(store.unsettled_for_user(42), Err(StoreError::TooManyUnsettled { .. })));

        let writer =
            LedgerWriter::new(store.clone(), ledger.clone(), Arc::new(ManualClock::new(0)), WriterConfig::default());
        assert!(writer.credit_user_now(42).await.is_err());
        assert_eq!(writer.credit_user_prefix_now(42).await.unwrap(), USER_UNSETTLED_READ_MAX);
        assert_eq!(writer.credit_user_now(42).await.unwrap(), 1);
        assert_eq!(ledger.balance("wallet/42").unwrap(), 10 * (USER_UNSETTLED_READ_MAX as i64 + 1));
    });
}
