//! Unit tests of the store's scripts against a real Redis: `REDIS_URL` when set (each test under
//! a key prefix of its own), else a `redis-server` of the test's own on a Unix socket, stopped
//! when the test ends.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::reads::GRANTS_READ_PER_CALL;
use super::reserve::share;
use super::*;
use crate::store::{
    FlowPosition, GrantCommit, GrantKey, GrantRecord, LedgerCheck, RestoreOutcome, StockLimits, StockOut, StockUsed,
    TokenStatus, UserRate,
};

/// A store on a Redis of its own (or on `REDIS_URL` under a fresh prefix).
struct Fixture {
    store: RedisStore,
    /// The test's own server, killed on drop; `None` on `REDIS_URL`.
    server: Option<(Child, tempfile::TempDir)>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        match &mut self.server {
            Some((child, _dir)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // A shared server keeps nothing of the test.
            None => forget_prefix(&self.store.inner.config.url, &self.store.inner.config.prefix),
        }
    }
}

/// Deletes the keys under `prefix`, best effort.
fn forget_prefix(url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(url).and_then(|client| client.get_connection()) else { return };
    let mut cursor = 0_u64;
    loop {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query(&mut conn);
        let Ok((next, keys)) = scan else { return };
        let keys: Vec<String> = keys;
        for key in keys {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(key).query(&mut conn);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// How long a test waits for its own `redis-server` to answer: generous, so that a loaded
/// machine never fails a test; a server that never comes up fails it with a message.
const SERVER_START_WAIT: Duration = Duration::from_secs(30);

fn own_server() -> (String, Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
        .arg(&socket)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start redis-server ({error}): install it (apt-get install redis-server) or set REDIS_URL")
        });
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < SERVER_START_WAIT, "redis-server did not open {}", socket.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    (format!("unix://{}", socket.display()), child, dir)
}

async fn fixture(shards: u32) -> Fixture {
    let (url, server) = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let (url, child, dir) = own_server();
            (url, Some((child, dir)))
        }
    };
    let mut config = RedisStoreConfig::new(url);
    config.prefix = format!("ut{:08x}", fastrand::u32(..));
    config.shards = shards;
    // A claimed entry is taken again at once by the next claim (tests of reclaiming).
    config.reclaim_after_ms = 0;
    config.op_timeout_ms = 10_000;
    let started = Instant::now();
    loop {
        match RedisStore::connect(config.clone()).await {
            Ok(store) => return Fixture { store, server },
            Err(_) if started.elapsed() < SERVER_START_WAIT => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("cannot connect to the test Redis: {error}"),
        }
    }
}

fn record(act_id: i64, order: u32, amount_cents: i64) -> GrantRecord {
    GrantRecord {
        activity_id: "act".into(),
        order_no: format!("{act_id}_scene_{order}_cash_0"),
        scene_id: "scene".into(),
        act_id,
        amount_cents,
        open_time_ms: 1_000 + u64::from(order),
        token: format!("token-{act_id}-{order}"),
        app_id: 1,
        ..GrantRecord::default()
    }
}

const CHECKED: LedgerCheck = LedgerCheck::Done { activity_clean: false };

fn budget(cents: i64) -> StockLimits {
    StockLimits { activity_budget_cents: cents, ..StockLimits::default() }
}

async fn grant(store: &RedisStore, record: GrantRecord, limits: StockLimits) -> GrantCommit {
    store.commit_grant(record, limits, None, CHECKED).await.expect("grant script")
}

// Proves the buckets' shares add up to the limit exactly, for any limit and shard count.
#[test]
fn shares_sum_to_the_limit() {
    for shards in [1, 2, 3, 16, 17] {
        for limit in [0, 1, 5, 15, 16, 17, 1_000, 999_999_999_999] {
            let total: i64 = (0..shards).map(|shard| share(limit, shard, shards)).sum();
            assert_eq!(total, limit, "{shards} shards, limit {limit}");
        }
    }
}

// Proves grant.lua stores a grant once: the same order with another token is a replay of the
// original, the same token again (a retried script) counts as this attempt's own grant, and
// the stock counts it once.
#[tokio::test]
async fn grant_script_stores_each_order_once() {
    let fixture = fixture(4).await;
    let store = &fixture.store;
    let first = record(7, 1, 25);
    let GrantCommit::Granted(granted) = grant(store, first.clone(), budget(1_000)).await else {
        panic!("first grant refused")
    };
    assert_eq!(granted.status(), TokenStatus::Pending);
    assert_eq!(granted.seq % 4, 3, "seq names the user's shard");
    let mut other_token = first.clone();
    other_token.token = "another".into();
    other_token.amount_cents = 99;
    match grant(store, other_token, budget(1_000)).await {
        GrantCommit::Replayed(original) => {
            assert_eq!((original.token.as_str(), original.amount_cents), ("token-7-1", 25))
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(grant(store, first, budget(1_000)).await, GrantCommit::Granted(_)));
    let used = store.stock_used("act", Some("scene")).await.unwrap();
    assert_eq!((used.count, used.cents), (1, 25));
    let stored = store.lookup("act", "7_scene_1_cash_0").await.unwrap().expect("stored");
    assert_eq!(stored.token, "token-7-1");
}

// Proves grant.lua's ledger check: with the check skipped a shard that does not vouch writes
// nothing and asks for the ledger; once told the activity is clean it vouches from then on.
#[tokio::test]
async fn grant_script_asks_for_the_ledger_until_it_vouches() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    let skipped = store.commit_grant(record(2, 1, 10), budget(100), None, LedgerCheck::Skipped).await.unwrap();
    assert_eq!(skipped, GrantCommit::CheckLedger);
    assert!(store.lookup("act", "2_scene_1_cash_0").await.unwrap().is_none(), "nothing written");
    let clean = LedgerCheck::Done { activity_clean: true };
    assert!(matches!(
        store.commit_grant(record(2, 1, 10), budget(100), None, clean).await,
        Ok(GrantCommit::Granted(_))
    ));
    let vouched = store.commit_grant(record(2, 2, 10), budget(100), None, LedgerCheck::Skipped).await.unwrap();
    assert!(matches!(vouched, GrantCommit::Granted(_)), "the shard vouches now: {vouched:?}");
    // Another shard has not been told.
    let elsewhere = store.commit_grant(record(3, 1, 10), budget(100), None, LedgerCheck::Skipped).await.unwrap();
    assert_eq!(elsewhere, GrantCommit::CheckLedger);
}

// Proves grant.lua's per-user rate window: the second grant in the window is refused and
// counts nothing; the next window grants again.
#[tokio::test]
async fn grant_script_counts_the_user_rate_window() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    let rate = Some(UserRate { max: 1, window_ms: 60_000 });
    let first = store.commit_grant(record(5, 1, 10), budget(100), rate, CHECKED).await.unwrap();
    assert!(matches!(first, GrantCommit::Granted(_)));
    let second = store.commit_grant(record(5, 2, 10), budget(100), rate, CHECKED).await.unwrap();
    assert_eq!(second, GrantCommit::UserRateLimited);
    let mut next_window = record(5, 3, 10);
    next_window.open_time_ms += 60_000;
    assert!(matches!(store.commit_grant(next_window, budget(100), rate, CHECKED).await, Ok(GrantCommit::Granted(_))));
    assert_eq!(store.stock_used("act", None).await.unwrap().cents, 20, "the refused grant counted nothing");
}

// Proves grant.lua checks the bucket's share of each bound and names the one it hit.
#[tokio::test]
async fn grant_script_names_the_bound_it_hit() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    let count = StockLimits { activity_budget_cents: 1_000, scene_count_max: Some(1), scene_budget_cents: None };
    assert!(matches!(grant(store, record(1, 1, 10), count).await, GrantCommit::Granted(_)));
    assert_eq!(grant(store, record(1, 2, 10), count).await, GrantCommit::OutOfStock(StockOut::SceneCount));
    let scene = StockLimits { activity_budget_cents: 1_000, scene_count_max: None, scene_budget_cents: Some(15) };
    assert_eq!(grant(store, record(1, 3, 10), scene).await, GrantCommit::OutOfStock(StockOut::SceneBudget));
    assert_eq!(grant(store, record(1, 4, 991), budget(1_000)).await, GrantCommit::OutOfStock(StockOut::ActivityBudget));
}

// Proves reserve.lua and release.lua: grants of one user take the other buckets' room once
// their own is used, never more than the limit in all, and a grant that cannot be covered
// gives back what it reserved on the way.
#[tokio::test]
async fn reserve_and_release_spread_a_grant_over_buckets() {
    let fixture = fixture(4).await;
    let store = &fixture.store;
    // 10 cents over 4 buckets: shares 3, 3, 2, 2. User 0 lives in bucket 0.
    for order in 1..=3 {
        let granted = grant(store, record(0, order, 3), budget(10)).await;
        assert!(matches!(granted, GrantCommit::Granted(_)), "grant {order}: {granted:?}");
    }
    assert_eq!(grant(store, record(0, 4, 3), budget(10)).await, GrantCommit::OutOfStock(StockOut::ActivityBudget));
    assert_eq!(store.stock_used("act", None).await.unwrap().cents, 9, "the refused grant's reservation was released");
    assert!(matches!(grant(store, record(0, 5, 1), budget(10)).await, GrantCommit::Granted(_)));
    assert_eq!(grant(store, record(1, 1, 1), budget(10)).await, GrantCommit::OutOfStock(StockOut::ActivityBudget));
    // The names of kept reservations are dropped in the background; no bucket keeps one.
    let started = Instant::now();
    loop {
        let mut names = 0;
        for shard in 0..4 {
            let key = store.keys(shard).stock("act");
            let mut conn = store.conn();
            let fields: Vec<String> = redis::cmd("HKEYS").arg(key).query_async(&mut conn).await.unwrap();
            names += fields.iter().filter(|field| field.starts_with("rv:")).count();
        }
        if names == 0 {
            break;
        }
        assert!(started.elapsed() < SERVER_START_WAIT, "{names} reservation names left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Proves a restore of a lost token is stored once and never refused for stock: what no bucket
// has room for goes over the user's own bucket's share.
#[tokio::test]
async fn restore_is_stored_once_and_never_refused() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    assert!(matches!(grant(store, record(4, 1, 10), budget(10)).await, GrantCommit::Granted(_)));
    let lost = record(4, 2, 7);
    assert_eq!(store.restore(lost.clone(), false, budget(10)).await.unwrap(), RestoreOutcome::Restored);
    assert_eq!(store.restore(lost, false, budget(10)).await.unwrap(), RestoreOutcome::AlreadyPresent);
    assert_eq!(store.stock_used("act", None).await.unwrap().cents, 17);
    let credited = record(4, 3, 1);
    assert_eq!(store.restore(credited, true, budget(10)).await.unwrap(), RestoreOutcome::Restored);
    let stored = store.lookup("act", "4_scene_3_cash_0").await.unwrap().unwrap();
    assert_eq!(stored.status(), TokenStatus::Credited, "restored as credited");
    let unsettled: Vec<String> =
        store.unsettled_for_user(4).await.unwrap().into_iter().map(|record| record.order_no).collect();
    assert_eq!(unsettled, ["4_scene_1_cash_0", "4_scene_2_cash_0"]);
}

// Proves claim.lua, complete.lua, park.lua and requeue_all.lua move tokens 1 → 2 → 8 through the
// queue: a claim marks them processing, an unacknowledged claim is taken again, a parked token
// leaves the queue until requeued, and credited tokens leave the user's unsettled set.
#[tokio::test]
async fn queue_scripts_move_tokens_to_credited() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    for order in 1..=3 {
        assert!(matches!(grant(store, record(6, order, 1), budget(100)).await, GrantCommit::Granted(_)));
    }
    let claimed = store.claim_queue(10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|record| record.status() == TokenStatus::Processing && !record.queue_id.is_empty()));
    // Not acknowledged: with a zero reclaim timeout the next claim takes them again.
    assert_eq!(store.claim_queue(10).await.unwrap().len(), 3);
    let stored = store.lookup("act", &claimed[0].order_no).await.unwrap().unwrap();
    assert_eq!(stored.status(), TokenStatus::Processing);
    store.park(vec![claimed[0].key()]).await.unwrap();
    store.complete(vec![claimed[1].key(), claimed[2].key()]).await.unwrap();
    assert_eq!((store.queue_len().await.unwrap(), store.parked_len().await.unwrap()), (0, 1));
    assert!(store.claim_queue(10).await.unwrap().is_empty(), "a parked token is not claimed");
    let unsettled = store.unsettled_for_user(6).await.unwrap();
    assert_eq!(unsettled.len(), 1, "only the parked token is still owed");
    assert_eq!(store.requeue_parked().await.unwrap(), 1);
    let again = store.claim_queue(10).await.unwrap();
    assert_eq!(again.len(), 1);
    store.complete(vec![again[0].key()]).await.unwrap();
    assert!(store.unsettled_for_user(6).await.unwrap().is_empty());
    assert_eq!((store.queue_len().await.unwrap(), store.parked_len().await.unwrap()), (0, 0));
    let stored = store.lookup("act", &claimed[0].order_no).await.unwrap().unwrap();
    assert_eq!(stored.status(), TokenStatus::Credited);
}

// Proves the queue scripts drop acknowledged entries whatever order writers finish in
// (queue.lua): entries done while an older one is still claimed are deleted, the stream is
// trimmed up to its oldest claimed entry, and neither a claimed entry nor one not yet delivered
// is ever dropped with them.
#[tokio::test]
async fn acknowledged_entries_leave_the_queue_in_any_order() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    for order in 1..=5 {
        assert!(matches!(grant(store, record(9, order, 1), budget(100)).await, GrantCommit::Granted(_)));
    }
    let claimed = store.claim_queue(10).await.unwrap();
    assert_eq!(claimed.len(), 5);
    // The newest first, while the oldest are still claimed.
    store.complete(vec![claimed[3].key(), claimed[4].key()]).await.unwrap();
    assert_eq!(store.queue_len().await.unwrap(), 3);
    store.complete(vec![claimed[0].key()]).await.unwrap();
    assert_eq!(store.queue_len().await.unwrap(), 2);
    // The two still claimed are there to take again (a zero reclaim timeout here).
    let again = store.claim_queue(10).await.unwrap();
    let orders = |records: &[GrantRecord]| records.iter().map(|r| r.order_no.clone()).collect::<Vec<_>>();
    assert_eq!(orders(&again), orders(&claimed[1..3]));
    store.park(vec![again[1].key()]).await.unwrap();
    assert_eq!(store.queue_len().await.unwrap(), 1);
    // Entries not yet delivered stay when everything delivered is done.
    for order in 6..=7 {
        assert!(matches!(grant(store, record(9, order, 1), budget(100)).await, GrantCommit::Granted(_)));
    }
    store.complete(vec![again[0].key()]).await.unwrap();
    assert_eq!(store.queue_len().await.unwrap(), 2);
    let fresh = store.claim_queue(1).await.unwrap();
    assert_eq!(orders(&fresh), ["9_scene_6_cash_0"]);
    store.complete(vec![fresh[0].key()]).await.unwrap();
    assert_eq!(store.queue_len().await.unwrap(), 1);
    let last = store.claim_queue(10).await.unwrap();
    assert_eq!(orders(&last), ["9_scene_7_cash_0"]);
    store.complete(vec![last[0].key()]).await.unwrap();
    assert_eq!((store.queue_len().await.unwrap(), store.parked_len().await.unwrap()), (0, 1));
}

// Proves claim_keys.lua and requeue.lua: a user's tokens are claimed by name (credited ones
// skipped), and named parked tokens go back in the queue.
#[tokio::test]
async fn scripts_by_name_claim_and_requeue() {
    let fixture = fixture(3).await;
    let store = &fixture.store;
    for order in 1..=2 {
        assert!(matches!(grant(store, record(8, order, 1), budget(100)).await, GrantCommit::Granted(_)));
    }
    let keys = store.unsettled_keys_prefix(8).await.unwrap();
    assert_eq!(keys.len(), 2);
    let claimed = store.claim_keys(keys.clone()).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|record| record.status() == TokenStatus::Processing));
    store.complete(vec![keys[0].clone()]).await.unwrap();
    let claimed = store.claim_keys(keys.clone()).await.unwrap();
    assert_eq!(claimed.len(), 1, "the credited token is skipped");
    store.park(vec![keys[1].clone()]).await.unwrap();
    assert_eq!(store.parked_len().await.unwrap(), 1);
    assert_eq!(store.requeue_parked_keys(vec![keys[1].clone()]).await.unwrap(), 1);
    assert_eq!(store.requeue_parked_keys(vec![keys[1].clone()]).await.unwrap(), 0, "requeued once");
    assert_eq!(store.parked_len().await.unwrap(), 0);
}

// Proves user_tokens.lua pages a user's flow newest first, cutting ties in one millisecond by
// flow id so that pages neither repeat nor skip a token.
#[tokio::test]
async fn user_tokens_script_pages_without_gaps() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    for order in 1..=5 {
        let mut tied = record(9, order, 1);
        tied.open_time_ms = 5_000 + u64::from(order / 2);
        assert!(matches!(grant(store, tied, budget(100)).await, GrantCommit::Granted(_)));
    }
    let mut seen = Vec::new();
    let mut before: Option<FlowPosition> = None;
    loop {
        let page = store.user_tokens(9, before.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        let last = page.last().unwrap();
        before = Some(FlowPosition { time_ms: last.open_time_ms, flow_id: last.flow_id() });
        seen.extend(page.into_iter().map(|record| (record.open_time_ms, record.flow_id())));
    }
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!(seen.len(), 5, "every token once: {seen:?}");
    assert_eq!(seen, expected, "newest first, ties by flow id");
}

// Proves grants_of.lua lists an activity's grants over every shard and chunk, with parked ones
// marked.
#[tokio::test]
async fn grants_of_script_lists_every_shard() {
    let fixture = fixture(3).await;
    let store = &fixture.store;
    for act_id in 0..6 {
        assert!(matches!(grant(store, record(act_id, 1, 1), budget(100)).await, GrantCommit::Granted(_)));
    }
    let claimed = store.claim_queue(1).await.unwrap();
    store.park(vec![claimed[0].key()]).await.unwrap();
    let all = store.grants_of("act").await.unwrap();
    assert_eq!(all.len(), 6);
    let parked: Vec<&str> =
        all.iter().filter(|(_, parked)| *parked).map(|(record, _)| record.order_no.as_str()).collect();
    assert_eq!(parked, [claimed[0].order_no.as_str()]);
}

// Proves the activity's stream names each grant by its order number alone (the key names the
// activity), and that entries earlier versions wrote with the whole member still list.
#[tokio::test]
async fn the_activity_stream_names_order_numbers_and_reads_earlier_entries() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    let (earlier, later) = (record(1, 1, 1), record(2, 1, 1));
    let GrantCommit::Granted(granted) = grant(store, earlier.clone(), budget(100)).await else { panic!("granted") };
    // Rewrite its entry as an earlier version wrote it: the field `m`, the whole member.
    let stream = store.keys(0).activity_grants("act");
    let mut conn = store.conn();
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg(format!("{}-0", granted.seq))
        .arg("m")
        .arg(member("act", &earlier.order_no))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(grant(store, later.clone(), budget(100)).await, GrantCommit::Granted(_)));
    let entries: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(entries[1].1, ["o", later.order_no.as_str()], "{entries:?}");
    let mut listed: Vec<String> =
        store.grants_of("act").await.unwrap().into_iter().map(|(record, _)| record.order_no).collect();
    listed.sort_unstable();
    assert_eq!(listed, [earlier.order_no, later.order_no]);
}

// Proves grants_since.lua pages through a shard's stream past its chunk size, over a run of
// retired grants that straddles a chunk's end, listing every other grant once.
#[tokio::test]
async fn grants_since_script_pages_past_retired_grants() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    let total = GRANTS_READ_PER_CALL as i64 * 2 + 7;
    // Grants that start the activity's index (trimmed) and grants in its middle (deleted).
    let gone = |act_id: &i64| {
        *act_id < 5 || (GRANTS_READ_PER_CALL as i64 - 10..GRANTS_READ_PER_CALL as i64 + 10).contains(act_id)
    };
    for act_id in 0..total {
        assert!(matches!(grant(store, record(act_id, 1, 1), budget(1_000_000)).await, GrantCommit::Granted(_)));
    }
    let mut retiring = Vec::new();
    for act_id in (0..total).filter(gone) {
        retiring.push(store.lookup("act", &record(act_id, 1, 1).order_no).await.unwrap().unwrap().key());
    }
    store.complete(retiring).await.unwrap();
    assert_eq!(store.retire_credited(0, 100).await.unwrap(), (0..total).filter(gone).count());
    let mut listed: Vec<i64> = store.grants_of("act").await.unwrap().iter().map(|(record, _)| record.act_id).collect();
    listed.sort_unstable();
    let expected: Vec<i64> = (0..total).filter(|act_id| !gone(act_id)).collect();
    assert_eq!(listed, expected);
    let stream = store.keys(0).activity_grants("act");
    let indexed = redis::cmd("XLEN").arg(stream).query_async::<usize>(&mut store.conn()).await.unwrap();
    assert_eq!(indexed, expected.len(), "the retired grants left the index, no other did");
}

// Proves cap_take.lua hands out at most the cap per window across takers, counting in-flight
// tickets, and cap_settle.lua replaces a ticket with the credits made.
#[tokio::test]
async fn cap_scripts_share_the_window() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    let CapTake::Taken { taken, ticket } = store.cap_take(10, 7).await.unwrap() else { panic!("first take waits") };
    assert_eq!(taken, 7);
    let CapTake::Taken { taken, ticket: second } = store.cap_take(10, 7).await.unwrap() else {
        panic!("second take waits")
    };
    assert_eq!(taken, 3, "only what is left of the cap");
    assert!(matches!(store.cap_take(10, 1).await.unwrap(), CapTake::Wait { .. }));
    // Settling with fewer credits than taken gives the rest back to the window.
    store.cap_settle(&ticket, 2).await.unwrap();
    store.cap_settle(&second, 3).await.unwrap();
    let CapTake::Taken { taken, .. } = store.cap_take(10, 10).await.unwrap() else {
        panic!("room left after settling")
    };
    assert_eq!(taken, 5);
}

// Proves retire.lua: only records credited for the retention leave (record, user list,
// activity grants), the stock stays counted, the retired totals add up per scene, and the
// user's next grant the store cannot find asks the ledger (`retired`), even on a shard that
// vouches and for a caller vouching with `New`; another user is granted at once; a restored
// retired token is not counted again.
#[tokio::test]
async fn retire_script_keeps_stock_and_marks_the_user() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    let clean = LedgerCheck::Done { activity_clean: true };
    for (act_id, order) in [(4, 1), (4, 2), (6, 1)] {
        let granted = store.commit_grant(record(act_id, order, 10), budget(1_000), None, clean).await.unwrap();
        assert!(matches!(granted, GrantCommit::Granted(_)), "{granted:?}");
    }
    let keys = |act_id, order| async move {
        store.lookup("act", &record(act_id, order, 10).order_no).await.unwrap().unwrap().key()
    };
    store.complete(vec![keys(4, 1).await, keys(6, 1).await]).await.unwrap();
    assert_eq!(store.retire_credited(60_000, 10).await.unwrap(), 0, "nothing credited a minute ago");
    assert_eq!(store.retire_credited(0, 10).await.unwrap(), 2);
    assert_eq!(store.retire_credited(0, 10).await.unwrap(), 0, "the pending record stays");
    assert!(store.lookup("act", &record(4, 1, 10).order_no).await.unwrap().is_none());
    assert_eq!(store.user_tokens(4, None, 10).await.unwrap().len(), 1, "only the pending token is listed");
    assert_eq!(store.grants_of("act").await.unwrap().len(), 1);
    let mut indexed = 0;
    for shard in 0..2 {
        let stream = store.keys(shard).activity_grants("act");
        indexed += redis::cmd("XLEN").arg(stream).query_async::<u64>(&mut store.conn()).await.unwrap();
    }
    assert_eq!(indexed, 1, "retired grants leave the activity's index");
    assert_eq!(store.stock_used("act", Some("scene")).await.unwrap(), StockUsed { count: 3, cents: 30 });
    let retired = store.retired_of("act").await.unwrap();
    assert_eq!(retired, std::collections::HashMap::from([("scene".into(), StockUsed { count: 2, cents: 20 })]));

    let again = store.commit_grant(record(4, 1, 10), budget(1_000), None, LedgerCheck::Skipped).await.unwrap();
    assert_eq!(again, GrantCommit::CheckRetired, "a replay of a retired order?");
    let new = store.commit_grant(record(6, 3, 10), budget(1_000), None, LedgerCheck::New).await.unwrap();
    assert_eq!(new, GrantCommit::CheckRetired);
    let other = store.commit_grant(record(8, 1, 10), budget(1_000), None, LedgerCheck::Skipped).await.unwrap();
    assert!(matches!(other, GrantCommit::Granted(_)), "{other:?}");
    let credited = GrantRecord { status: TokenStatus::Credited.code(), ..record(4, 1, 10) };
    assert_eq!(store.restore(credited, true, budget(1_000)).await.unwrap(), RestoreOutcome::AlreadyPresent);
    assert_eq!(store.stock_used("act", None).await.unwrap().count, 4);
}

// Proves the queue and retirement scripts handle batches larger than one Redis command takes
// (batch.lua's calls of 512 items): 700 tokens of 350 users in two scenes are parked, some
// credited straight from the parked set, requeued, claimed and credited in batches of 512, then
// retired in one call, and every token, total and retired user is accounted for.
#[tokio::test]
async fn batches_larger_than_one_command_move_every_token() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    let limits = budget(1_000_000);
    for act_id in 1..=350 {
        for order in 1..=2 {
            let scene = if order == 1 { "scene" } else { "other" };
            let record = GrantRecord { scene_id: scene.into(), ..record(act_id, order, 3) };
            assert!(matches!(grant(store, record, limits).await, GrantCommit::Granted(_)));
        }
    }
    let claimed = store.claim_queue(700).await.unwrap();
    assert_eq!(claimed.len(), 700);
    let keys: Vec<GrantKey> = claimed.iter().map(GrantRecord::key).collect();
    store.park(keys[..600].to_vec()).await.unwrap();
    assert_eq!(store.parked_len().await.unwrap(), 600);
    // Credited while parked (as a withdrawal forces): they leave the parked set.
    store.complete(keys[..50].to_vec()).await.unwrap();
    assert_eq!(store.parked_len().await.unwrap(), 550);
    assert_eq!(store.requeue_parked().await.unwrap(), 550);
    // The 100 never parked are still claimed: a zero reclaim timeout takes them again.
    let again = store.claim_queue(700).await.unwrap();
    assert_eq!(again.len(), 650);
    store.complete(again.iter().map(GrantRecord::key).collect()).await.unwrap();
    assert_eq!((store.queue_len().await.unwrap(), store.parked_len().await.unwrap()), (0, 0));
    let mut conn = store.conn();
    let credited: u64 = redis::cmd("ZCARD").arg(store.keys(0).credited()).query_async(&mut conn).await.unwrap();
    assert_eq!(credited, 700);

    assert_eq!(store.retire_credited(0, 1_000).await.unwrap(), 700);
    let credited: u64 = redis::cmd("ZCARD").arg(store.keys(0).credited()).query_async(&mut conn).await.unwrap();
    assert_eq!(credited, 0);
    let retired = store.retired_of("act").await.unwrap();
    let each = StockUsed { count: 350, cents: 1_050 };
    assert_eq!(retired, std::collections::HashMap::from([("scene".into(), each), ("other".into(), each)]));
    assert!(store.grants_of("act").await.unwrap().is_empty());
    for act_id in [1, 175, 350] {
        assert!(store.user_tokens(act_id, None, 10).await.unwrap().is_empty(), "user {act_id} still lists tokens");
        let next = store.commit_grant(record(act_id, 3, 3), limits, None, LedgerCheck::New).await.unwrap();
        assert_eq!(next, GrantCommit::CheckRetired, "user {act_id} is not marked retired");
    }
}

/// Rewrites `record`'s stored form as the hash earlier versions wrote (fields r, st, sq, u, m, s,
/// a; the scene and cents left out when `with_scene` is false, as the oldest did).
async fn store_as_hash(store: &RedisStore, record: &GrantRecord, with_scene: bool) {
    use prost::Message as _;
    let keys = store.keys(store.shard_of_user(record.act_id));
    let member = member(&record.activity_id, &record.order_no);
    let key = keys.record(&member);
    let r = GrantRecord { status: TokenStatus::Pending.code(), seq: 0, ..record.clone() }.encode_to_vec();
    let mut hset = redis::cmd("HSET");
    hset.arg(&key).arg("r").arg(r).arg("st").arg(record.status).arg("sq").arg(record.seq);
    hset.arg("u").arg(record.act_id).arg("m").arg(&member);
    if with_scene {
        hset.arg("s").arg(&record.scene_id).arg("a").arg(record.amount_cents);
    }
    let mut conn = store.conn();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let _: () = hset.query_async(&mut conn).await.unwrap();
    let unsettled = format!("{}:uu:{}", keys.tag(), record.act_id);
    let _: () = redis::cmd("ZADD").arg(unsettled).arg(record.seq).arg(&member).query_async(&mut conn).await.unwrap();
    // Indexed in the activity's zset of those versions instead of its stream.
    let activity_grants = keys.activity_grants(&record.activity_id);
    let _: () =
        redis::cmd("XDEL").arg(activity_grants).arg(format!("{}-0", record.seq)).query_async(&mut conn).await.unwrap();
    let legacy = keys.legacy_activity_grants(&record.activity_id);
    let _: () = redis::cmd("ZADD").arg(legacy).arg(record.seq).arg(&member).query_async(&mut conn).await.unwrap();
}

async fn key_type(store: &RedisStore, record: &GrantRecord) -> String {
    let key = store.keys(store.shard_of_user(record.act_id)).record(&member(&record.activity_id, &record.order_no));
    redis::cmd("TYPE").arg(key).query_async(&mut store.conn()).await.unwrap()
}

// Proves records an earlier version stored as hashes are read, claimed, credited and retired
// like new ones, rewritten as strings on their first read (and taken off the unsettled set those
// versions kept), and that the oldest kind (without scene and cents) is still never retired.
#[tokio::test]
async fn records_stored_as_hashes_by_earlier_versions_still_work() {
    let fixture = fixture(2).await;
    let store = &fixture.store;
    let mut granted = Vec::new();
    for order in 1..=3 {
        let GrantCommit::Granted(record) = grant(store, record(5, order, 10), budget(1_000)).await else {
            panic!("grant {order} refused")
        };
        store_as_hash(store, &record, order != 3).await;
        assert_eq!(key_type(store, &record).await, "hash");
        granted.push(record);
    }
    let newer = grant(store, record(5, 4, 10), budget(1_000)).await;
    assert!(matches!(newer, GrantCommit::Granted(_)), "{newer:?}");
    let listed: Vec<_> = store.grants_of("act").await.unwrap().into_iter().map(|(record, _)| record.seq).collect();
    assert_eq!(listed.len(), 4, "the earlier versions' index and the new one: {listed:?}");
    let read = store.lookup("act", &granted[0].order_no).await.unwrap().unwrap();
    assert_eq!(read, granted[0], "read back whole");
    assert_eq!(key_type(store, &granted[0]).await, "string", "rewritten on its first read");

    let mut claimed = store.claim_queue(10).await.unwrap();
    claimed.sort_by_key(|record| record.seq);
    assert_eq!(claimed.len(), 4);
    claimed.pop();
    let unsettled_set = format!("{}:uu:5", store.keys(store.shard_of_user(5)).tag());
    let exists: bool = redis::cmd("EXISTS").arg(unsettled_set).query_async(&mut store.conn()).await.unwrap();
    assert!(!exists, "the earlier versions' unsettled set emptied as their records were rewritten");
    for (claimed, granted) in claimed.iter().zip(&granted) {
        assert_eq!(
            (claimed.status(), &claimed.token, claimed.seq),
            (TokenStatus::Processing, &granted.token, granted.seq)
        );
    }
    store.complete(vec![claimed[0].key(), claimed[2].key()]).await.unwrap();
    let unsettled = store.unsettled_for_user(5).await.unwrap();
    assert_eq!(unsettled.iter().map(|record| record.seq).collect::<Vec<_>>(), vec![granted[1].seq, listed[3]]);
    assert_eq!(store.retire_credited(0, 10).await.unwrap(), 1, "the one without scene and cents stays");
    assert!(store.lookup("act", &granted[0].order_no).await.unwrap().is_none());
    assert_eq!(store.grants_of("act").await.unwrap().len(), 3, "retired from the earlier versions' index");
    let retired = store.retired_of("act").await.unwrap();
    assert_eq!(retired, std::collections::HashMap::from([("scene".into(), StockUsed { count: 1, cents: 10 })]));
    let kept = store.lookup("act", &granted[2].order_no).await.unwrap().unwrap();
    assert_eq!(kept.status(), TokenStatus::Credited);
}

// Proves a signed request's nonce is accepted once per app and timestamp, and that one second's
// nonces share a few hashes, each expiring with the timestamp, instead of a key each.
#[tokio::test]
async fn a_nonce_is_accepted_once_per_app_and_timestamp() {
    let fixture = fixture(1).await;
    let store = &fixture.store;
    let second = 1_765_000_000;
    // Long enough that no hash expires while a loaded machine sends the burst.
    let ttl_ms = 600_000;
    assert!(store.first_use_of_nonce(1, "nonce-0000000001", second, ttl_ms).await.unwrap());
    assert!(!store.first_use_of_nonce(1, "nonce-0000000001", second, ttl_ms).await.unwrap(), "replayed");
    assert!(store.first_use_of_nonce(2, "nonce-0000000001", second, ttl_ms).await.unwrap(), "another app");
    assert!(store.first_use_of_nonce(1, "nonce-0000000001", second + 1, ttl_ms).await.unwrap(), "another second");
    let burst = 3_000;
    for n in 0..burst {
        let nonce = format!("burst-{n:010}");
        assert!(store.first_use_of_nonce(1, &nonce, second + 2, ttl_ms).await.unwrap(), "{nonce}");
    }
    assert!(!store.first_use_of_nonce(1, "burst-0000002999", second + 2, ttl_ms).await.unwrap(), "replayed");
    let mut conn = store.conn();
    let pattern = format!("{}:n:{{1/{}/*", store.inner.config.prefix, second + 2);
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap();
    assert!(keys.len() <= 1024 && keys.len() < burst / 2, "{burst} nonces in {} keys", keys.len());
    let mut fields = 0;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0 && ttl <= ttl_ms as i64, "{key} expires in {ttl} ms");
        fields += redis::cmd("HLEN").arg(key).query_async::<usize>(&mut conn).await.unwrap();
    }
    assert_eq!(fields, burst, "every nonce of the second is in its hashes");
}
