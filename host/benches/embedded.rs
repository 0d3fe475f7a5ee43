//! `just bench`: figures for the embedded deployment's hot paths, printed, never asserted.
//!
//! - token encode + sign, and verify (the floor of the grant path: one signature per grant);
//! - order-number building;
//! - grants through the token store's group commit, with many in flight at once, and how many
//!   grants share each fsync;
//! - the ledger writer crediting that backlog, uncapped and capped.

use std::sync::Arc;
use std::time::Instant;

use hongbao::clock::SystemClock;
use hongbao::grant::order_no;
use hongbao::issuer::Issuer;
use hongbao::issuer::pb::RedPacketToken;
use hongbao::ledger::{EmbeddedLedger, Ledger};
use hongbao::store::{EmbeddedStore, GrantCommit, GrantRecord, LedgerCheck, StockLimits, Store};
use hongbao::writer::{LedgerWriter, WriterConfig};

fn token(n: i64) -> RedPacketToken {
    RedPacketToken {
        app_id: 1128,
        act_id: 10_000 + n,
        activity_id: "spring-festival-2027".into(),
        scene_id: "eve-rain".into(),
        amount_cents: 888,
        order_no: order_no(10_000 + n, "eve-rain", 1, "cash", 0),
        open_time_ms: 1_795_000_000_000,
        rain_id: 1,
        status: 1,
        key_id: String::new(),
        award_type: "cash".into(),
        stage: 0,
    }
}

fn per_op(label: &str, count: u64, started: Instant) {
    let elapsed = started.elapsed();
    println!(
        "{label:<44} {:>10.2} µs/op {:>12.0} ops/s",
        elapsed.as_secs_f64() * 1e6 / count as f64,
        count as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let issuer = Issuer::ephemeral();
    let count = 20_000;
    let tokens: Vec<RedPacketToken> = (0..count).map(token).collect();

    let started = Instant::now();
    let texts: Vec<String> = tokens.iter().map(|t| issuer.mint(&mut t.clone())).collect();
    per_op("token encode + sign", count as u64, started);

    let started = Instant::now();
    for text in &texts {
        issuer.verify(text).unwrap();
    }
    per_op("token decode + verify", count as u64, started);

    let started = Instant::now();
    let mut length = 0;
    for n in 0..count {
        length += order_no(n, "eve-rain", 1, "cash", 0).len();
    }
    per_op("order number", count as u64, started);
    assert!(length > 0);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        ledger.fund_activity("bench".into(), hongbao::ledger::ENTRY_CENTS_MAX, 0).await.unwrap();
        for in_flight in [1usize, 16, 256] {
            let grants = if in_flight == 1 { 500 } else { count as usize };
            let commits_before = store.commit_count();
            let started = Instant::now();
            let workers: Vec<_> = (0..in_flight)
                .map(|worker| {
                    let store = store.clone();
                    let text = texts[0].clone();
                    tokio::spawn(async move {
                        for n in (worker..grants).step_by(in_flight) {
                            let record = GrantRecord {
                                activity_id: "bench".into(),
                                order_no: format!("{in_flight}-{n}"),
                                scene_id: "eve-rain".into(),
                                act_id: n as i64,
                                amount_cents: 888,
                                open_time_ms: 1,
                                token: text.clone(),
                                ..GrantRecord::default()
                            };
                            let limits = StockLimits {
                                activity_budget_cents: hongbao::ledger::ENTRY_CENTS_MAX,
                                ..StockLimits::default()
                            };
                            assert!(matches!(
                                store
                                    .commit_grant(record, limits, LedgerCheck::Done { activity_clean: false })
                                    .await
                                    .unwrap(),
                                GrantCommit::Granted(_)
                            ));
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
            let commits = store.commit_count() - commits_before;
            per_op(&format!("store grant, {in_flight} in flight (durable)"), grants as u64, started);
            println!("{:<44} {:>10.1} grants per fsync", "", grants as f64 / commits.max(1) as f64);
        }

        let backlog = store.queue_len().unwrap();
        let writer = LedgerWriter::new(
            Store::Embedded(store.clone()),
            Ledger::Embedded(ledger.clone()),
            Arc::new(SystemClock),
            WriterConfig::default(),
        );
        let started = Instant::now();
        while store.queue_len().unwrap() > backlog / 2 {
            writer.step().await.unwrap();
        }
        per_op("writer credit, uncapped (batch 512)", backlog / 2, started);

        let cap = 5_000;
        let capped = Arc::new(LedgerWriter::new(
            Store::Embedded(store.clone()),
            Ledger::Embedded(ledger.clone()),
            Arc::new(SystemClock),
            WriterConfig { credits_per_second_max: Some(cap), ..WriterConfig::default() },
        ));
        let before = store.queue_len().unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(capped.clone().run(shutdown));
        let started = Instant::now();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let _ = stop.send(true);
        running.await.unwrap();
        let credited = before - store.queue_len().unwrap();
        let rate = credited as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:<44} {rate:>10.0} credits/s against a cap of {cap} ({:.1} %)",
            "writer credit, capped",
            rate / cap as f64 * 100.0
        );
    });
}
