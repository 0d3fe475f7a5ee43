//! `hongbao bench footprint` (in `just bench`): the embedded deployment's memory per token, by
//! part. The suite's figure is one process's resident growth over a rain; this one opens the
//! embedded token store and ledger in this process, with no HTTP around them, feeds them tokens
//! shaped like the suite's (minted by a real issuer, the suite's activity, scene, order numbers
//! and bill copy), and reads the allocator's bytes in use after each step:
//!
//! 1. the grants stored, pending (the store's record and indexes);
//! 2. credited into the ledger, the store not told yet (the ledger's entry and indexes);
//! 3. the store told (credited records leave the queue and the user's unsettled index);
//! 4. one signed request's nonce each (remembered for the signature window).
//!
//! Allocator bytes do not depend on the machine's speed or load, so a layout change's effect
//! shows as exactly as it is. Resident growth is printed beside them: large tables are mapped
//! pages, resident only where written.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::future::join_all;

use crate::issuer::kept::KeptToken;
use crate::issuer::{Issuer, pb::RedPacketToken};
use crate::ledger::{Credit, CreditResult, EmbeddedLedger};
use crate::stock::StockLimits;
use crate::store::{EmbeddedStore, GrantCommit, GrantRecord, LedgerCheck, TokenStatus};

/// The suite's activity, scene and award type (`bench::suite`), so that strings have its lengths.
const ACTIVITY: &str = "bench-embedded";
const SCENE: &str = "rain";
const AWARD_TYPE: &str = "cash";
const APP_ID: i64 = 1128;
/// The first user: the suite's users are eight-digit numbers or more.
const FIRST_USER: i64 = 10_000_000;

/// Grants written concurrently, so that the store's group commit gathers them as under load.
const CONCURRENT_GRANTS: usize = 512;

/// Credits per ledger batch and per store claim, as the writer takes them.
const CREDIT_BATCH: usize = 512;

/// Each part's bytes per token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Footprint {
    /// Tokens fed.
    pub tokens: u64,
    /// The steps, in order: (what, allocator bytes per token, resident bytes per token).
    pub steps: Vec<Step>,
    /// What keeping a token by its signature costs: microseconds to keep one (done when the
    /// store and the ledger take it) and to give its text back (done when it is read).
    pub keep_us: f64,
    /// See `keep_us`.
    pub text_us: f64,
}

/// One step's growth.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// What the step added.
    pub what: &'static str,
    /// Allocator bytes in use it added, per token.
    pub heap_per_token: f64,
    /// Resident memory it added, per token.
    pub resident_per_token: f64,
}

impl Footprint {
    /// All steps together, allocator bytes per token.
    pub fn heap_total(&self) -> f64 {
        self.steps.iter().map(|step| step.heap_per_token).sum()
    }
}

/// This process's resident memory (`VmRSS`).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Where the allocator and `/proc` stand.
#[derive(Clone, Copy)]
struct Reading {
    heap: u64,
    resident: u64,
}

fn read() -> anyhow::Result<Reading> {
    crate::memory::give_back();
    let heap =
        crate::memory::heap_in_use().context("the allocator does not tell its bytes in use (a fuzzing build)")?;
    Ok(Reading { heap, resident: resident_bytes() })
}

/// A grant shaped like the suite's: a new user, the example bill copy, a minted token.
fn record(issuer: &Issuer, act_id: i64, now_ms: u64) -> GrantRecord {
    let amount_cents = 1 + act_id % 888;
    let order_no = crate::grant::order_no(act_id, SCENE, 1, AWARD_TYPE, 0);
    let mut token = RedPacketToken {
        app_id: APP_ID,
        act_id,
        activity_id: ACTIVITY.into(),
        scene_id: SCENE.into(),
        amount_cents,
        order_no: order_no.clone(),
        open_time_ms: now_ms as i64,
        rain_id: 1,
        status: i64::from(TokenStatus::Pending.code()),
        key_id: String::new(),
        award_type: AWARD_TYPE.into(),
        stage: 0,
    };
    GrantRecord {
        activity_id: ACTIVITY.into(),
        order_no,
        scene_id: SCENE.into(),
        act_id,
        amount_cents,
        open_time_ms: now_ms,
        status: TokenStatus::Pending.code(),
        seq: 0,
        token: issuer.mint(&mut token),
        bill_copy: format!("红包雨第1场 获得{}.{:02}元", amount_cents / 100, amount_cents % 100),
        app_id: APP_ID,
        queue_id: String::new(),
    }
}

/// The open time of a user's grant: the run's start, spread over a second.
fn open_time(start_ms: u64, act_id: i64) -> u64 {
    start_ms + act_id as u64 % 1000
}

/// Feeds `tokens` tokens through a store and a ledger in a temporary directory.
pub async fn run(tokens: u64) -> anyhow::Result<Footprint> {
    let dir = std::env::temp_dir().join(format!("hongbao-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let footprint = feed(&dir, tokens).await;
    let _ = std::fs::remove_dir_all(&dir);
    footprint
}

async fn feed(dir: &std::path::Path, tokens: u64) -> anyhow::Result<Footprint> {
    let store = EmbeddedStore::open(dir)?;
    let ledger = EmbeddedLedger::open(dir)?;
    let issuer = Issuer::ephemeral();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    ledger.fund_activity(ACTIVITY.into(), 900_000_000_000_000, now_ms).await?;
    let limits =
        StockLimits { activity_budget_cents: 900_000_000_000_000, scene_count_max: None, scene_budget_cents: None };
    let users = FIRST_USER..FIRST_USER + tokens as i64;
    // The store vouches for the activity once the ledger said it is clean, as the grant path does.
    let first = record(&issuer, users.start, open_time(now_ms, users.start));
    let check = LedgerCheck::Done { activity_clean: true };
    let mut readings = vec![read()?];
    match store.commit_grant(first, limits, check).await? {
        GrantCommit::Granted(_) => {}
        other => bail!("the first grant was not stored: {other:?}"),
    }
    let users: Vec<i64> = users.skip(1).collect();
    for chunk in users.chunks(CONCURRENT_GRANTS) {
        let commits = chunk.iter().map(|&act_id| {
            let record = record(&issuer, act_id, open_time(now_ms, act_id));
            store.commit_grant(record, limits, LedgerCheck::Skipped)
        });
        for committed in join_all(commits).await {
            match committed? {
                GrantCommit::Granted(_) => {}
                other => bail!("a grant was not stored: {other:?}"),
            }
        }
    }
    readings.push(read()?);
    // The ledger gets the same credits the writer would make of the records (minting is
    // deterministic), while the store still holds them pending.
    let all: Vec<i64> = (FIRST_USER..FIRST_USER + tokens as i64).collect();
    for chunk in all.chunks(CREDIT_BATCH) {
        let credits =
            chunk.iter().map(|&act_id| Credit::of(&record(&issuer, act_id, open_time(now_ms, act_id)))).collect();
        let results = ledger.credit_batch(credits).await?;
        if let Some(result) = results.iter().find(|result| **result != CreditResult::Applied) {
            bail!("the ledger did not take a credit: {result:?}");
        }
    }
    readings.push(read()?);
    let mut completed = 0;
    loop {
        let claimed = store.claim_queue(CREDIT_BATCH).await?;
        if claimed.is_empty() {
            break;
        }
        completed += claimed.len() as u64;
        store.complete(claimed.iter().map(GrantRecord::key).collect()).await?;
    }
    if completed != tokens {
        bail!("{completed} of {tokens} tokens were claimed");
    }
    readings.push(read()?);
    let window_ms = 300_000;
    for act_id in FIRST_USER..FIRST_USER + tokens as i64 {
        let nonce: String = (0..24).map(|_| fastrand::alphanumeric()).collect();
        if !store.first_use_of_nonce(APP_ID, &nonce, now_ms / 1000, now_ms, window_ms)? {
            bail!("nonce of user {act_id} seen twice");
        }
    }
    readings.push(read()?);
    let whats = [
        "store: the grant's record and indexes (pending)",
        "ledger: the credit's entry and indexes",
        "store: marked credited (off the queue, into the retirement order)",
        "nonce: the grant request's, for the signature window",
    ];
    let per_token = |after: u64, before: u64| (after as f64 - before as f64) / tokens as f64;
    let steps = readings
        .windows(2)
        .zip(whats)
        .map(|(pair, what)| Step {
            what,
            heap_per_token: per_token(pair[1].heap, pair[0].heap),
            resident_per_token: per_token(pair[1].resident, pair[0].resident),
        })
        .collect();
    drop((store, ledger));
    let (keep_us, text_us) = token_costs(&issuer, now_ms);
    Ok(Footprint { tokens, steps, keep_us, text_us })
}

/// Tokens timed for [`token_costs`].
const TIMED_TOKENS: i64 = 20_000;

/// Microseconds to keep a token and to give its text back, on average.
fn token_costs(issuer: &Issuer, now_ms: u64) -> (f64, f64) {
    let records: Vec<GrantRecord> = (FIRST_USER..FIRST_USER + TIMED_TOKENS)
        .map(|act_id| record(issuer, act_id, open_time(now_ms, act_id)))
        .collect();
    let started = Instant::now();
    let kept: Vec<KeptToken> =
        records.iter().map(|record| KeptToken::keep(&record.token, &record.token_fields())).collect();
    let keep_us = started.elapsed().as_secs_f64() * 1e6 / TIMED_TOKENS as f64;
    let started = Instant::now();
    let same =
        records.iter().zip(&kept).filter(|(record, kept)| kept.text(&record.token_fields()) == record.token).count();
    let text_us = started.elapsed().as_secs_f64() * 1e6 / TIMED_TOKENS as f64;
    assert_eq!(same as i64, TIMED_TOKENS, "a kept token came back different");
    (keep_us, text_us)
}

/// The figures as a Markdown table.
pub fn table(footprint: &Footprint) -> String {
    let mut out = format!(
        "Embedded memory per token, by part ({} tokens, each a new user; allocator bytes in use, jemalloc `stats.allocated`, and resident growth):\n\n| step | allocator bytes a token | resident bytes a token |\n|---|---|---|\n",
        footprint.tokens
    );
    for step in &footprint.steps {
        out.push_str(&format!("| {} | {:.0} | {:.0} |\n", step.what, step.heap_per_token, step.resident_per_token));
    }
    let resident: f64 = footprint.steps.iter().map(|step| step.resident_per_token).sum();
    out.push_str(&format!("| all | **{:.0}** | {resident:.0} |\n", footprint.heap_total()));
    out.push_str(&format!(
        "\nA token kept by its signature (`issuer::kept`): {:.2} µs to keep, {:.2} µs to give its text back.\n",
        footprint.keep_us, footprint.text_us
    ));
    out
}
