//! The embedded token store: one redb file, `DATA/tokens.redb`.
//!
//! redb is a pure-Rust, ACID, copy-on-write B-tree store with a stable file format: nothing to
//! install, no C to build, and a commit is durable when it returns. It allows one write
//! transaction at a time, so every write goes through one committer thread that gathers all
//! operations waiting for it into a single transaction and a single fsync (group commit): under
//! load, durability costs one fsync per group, not one per grant. Reads run on the caller's
//! thread from MVCC snapshots and never wait for the committer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{
    FlowPosition, GrantCommit, GrantKey, GrantRecord, RestoreOutcome, StockLimits, StockOut, StockUsed, StoreError,
    TokenStatus, flow_index_range,
};

/// (activity, order number) → encoded [`GrantRecord`].
const GRANTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("grants");
/// (act id, open time, flow id) → (): each user's tokens in wallet-flow order.
const USER_TOKENS: TableDefinition<(i64, u64, &str), ()> = TableDefinition::new("user_tokens");
/// (act id, seq) → (activity, order number): each user's tokens not yet credited.
const USER_UNSETTLED: TableDefinition<(i64, u64), (&str, &str)> = TableDefinition::new("user_unsettled");
/// seq → (activity, order number): the crediting queue, oldest first.
const QUEUE: TableDefinition<u64, (&str, &str)> = TableDefinition::new("queue");
/// (activity, scene) → (count, cents) used; the scene `""` holds the activity's total.
const STOCK: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("stock");
/// seq → (activity, order number): tokens taken off the queue because the ledger would not take
/// them (the activity's budget cannot pay, or the ledger holds a different amount for the order).
/// They are still owed and still shown pending; funding the activity puts them back in the queue.
const PARKED: TableDefinition<u64, (&str, &str)> = TableDefinition::new("parked");
/// Counters: `next_seq`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The scene name under which an activity's own total is kept in [`STOCK`]; scene ids are never
/// empty, so it cannot clash.
const ACTIVITY_TOTAL: &str = "";

/// The most operations one group commit takes. Large enough that a burst of grants shares an
/// fsync, small enough that the first waiter in a group is not held long behind the others.
pub const GROUP_COMMIT_OPS_MAX: usize = 1024;

/// Operations waiting for the committer. When full, callers wait: this is the host's
/// backpressure against a disk that cannot keep up.
const COMMIT_QUEUE_OPS_MAX: usize = 16 * 1024;

/// The most unsettled tokens read for one user at once; a user is granted far fewer in a
/// campaign, and the bound keeps one request's work finite.
pub const USER_UNSETTLED_READ_MAX: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteOp {
    Grant { record: GrantRecord, limits: StockLimits, reply: Reply<GrantCommit> },
    ClaimQueue { max: usize, reply: Reply<Vec<GrantRecord>> },
    ClaimKeys { keys: Vec<GrantKey>, reply: Reply<Vec<GrantRecord>> },
    Complete { keys: Vec<GrantKey>, reply: Reply<()> },
    Restore { record: GrantRecord, credited: bool, reply: Reply<RestoreOutcome> },
    Park { keys: Vec<GrantKey>, reply: Reply<()> },
    Requeue { reply: Reply<u64> },
    RequeueKeys { keys: Vec<GrantKey>, reply: Reply<u64> },
}

/// A handle on the embedded token store; clones share one database and one committer.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    committer: Arc<Committer>,
    commits: Arc<AtomicU64>,
}

/// The committer thread and the way to it. Dropping the last handle closes the channel and waits
/// for the thread to finish its group, so the database is closed when the store is gone and can
/// be opened again at once (a restart in the same process).
struct Committer {
    ops: Option<mpsc::Sender<WriteOp>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.ops.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `DATA/tokens.redb` and starts the committer thread, which stops when
    /// the last handle is dropped.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(unavailable)?;
        let db = Arc::new(Database::create(data_dir.join("tokens.redb")).map_err(unavailable)?);
        let setup = db.begin_write().map_err(unavailable)?;
        {
            setup.open_table(GRANTS).map_err(unavailable)?;
            setup.open_table(USER_TOKENS).map_err(unavailable)?;
            setup.open_table(USER_UNSETTLED).map_err(unavailable)?;
            setup.open_table(QUEUE).map_err(unavailable)?;
            setup.open_table(STOCK).map_err(unavailable)?;
            setup.open_table(META).map_err(unavailable)?;
            setup.open_table(PARKED).map_err(unavailable)?;
        }
        setup.commit().map_err(unavailable)?;
        let (sender, receiver) = mpsc::channel(COMMIT_QUEUE_OPS_MAX);
        let committer_db = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let committer_commits = commits.clone();
        let thread = std::thread::Builder::new()
            .name("hongbao-store-commit".into())
            .spawn(move || run_committer(&committer_db, receiver, &committer_commits))
            .map_err(unavailable)?;
        let committer = Arc::new(Committer { ops: Some(sender), thread: Some(thread) });
        Ok(EmbeddedStore { db, committer, commits })
    }

    /// Transactions committed since open: under concurrent load far fewer than operations,
    /// because each commit carries a whole group.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let ops = self.committer.ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a new grant, unless its order number is stored already (then the original comes
    /// back) or the stock cannot cover it (then nothing is stored).
    pub async fn commit_grant(&self, record: GrantRecord, limits: StockLimits) -> Result<GrantCommit, StoreError> {
        self.submit(|reply| WriteOp::Grant { record, limits, reply }).await
    }

    /// Takes up to `max` tokens from the front of the crediting queue and marks them processing.
    /// Tokens already processing (claimed before a crash) are taken again.
    pub async fn claim_queue(&self, max: usize) -> Result<Vec<GrantRecord>, StoreError> {
        self.submit(|reply| WriteOp::ClaimQueue { max, reply }).await
    }

    /// Marks the named tokens processing, returning those not yet credited.
    pub async fn claim_keys(&self, keys: Vec<GrantKey>) -> Result<Vec<GrantRecord>, StoreError> {
        self.submit(|reply| WriteOp::ClaimKeys { keys, reply }).await
    }

    /// Marks the named tokens credited and takes them off the queue. Call only after the ledger
    /// has them.
    pub async fn complete(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.submit(|reply| WriteOp::Complete { keys, reply }).await
    }

    /// Stores a token a client kept, if the server no longer has it. Its amount is counted
    /// against stock but never refused for it: the money was promised when it was granted.
    /// `credited` says the ledger already has it: it is stored as credited and not queued.
    pub async fn restore(&self, record: GrantRecord, credited: bool) -> Result<RestoreOutcome, StoreError> {
        self.submit(|reply| WriteOp::Restore { record, credited, reply }).await
    }

    /// Takes tokens the ledger refused off the crediting queue so they stop blocking its front.
    pub async fn park(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.submit(|reply| WriteOp::Park { keys, reply }).await
    }

    /// Puts every parked token back in the crediting queue; returns how many.
    pub async fn requeue_parked(&self) -> Result<u64, StoreError> {
        self.submit(|reply| WriteOp::Requeue { reply }).await
    }

    /// Puts the given parked tokens back in the crediting queue (a compensation retry); keys
    /// that are not parked are skipped. Returns how many moved.
    pub async fn requeue_parked_keys(&self, keys: Vec<GrantKey>) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.submit(|reply| WriteOp::RequeueKeys { keys, reply }).await
    }

    /// How many tokens are parked.
    pub fn parked_len(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        read.open_table(PARKED).map_err(unavailable)?.len().map_err(unavailable)
    }

    /// The stored grant with this order number.
    pub fn lookup(&self, activity_id: &str, order_no: &str) -> Result<Option<GrantRecord>, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let grants = read.open_table(GRANTS).map_err(unavailable)?;
        let found = grants.get((activity_id, order_no)).map_err(unavailable)?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// The user's tokens that are not yet credited, oldest first.
    pub fn unsettled_for_user(&self, act_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let unsettled = read.open_table(USER_UNSETTLED).map_err(unavailable)?;
        let grants = read.open_table(GRANTS).map_err(unavailable)?;
        let mut records = Vec::new();
        for (index, row) in unsettled.range((act_id, 0)..=(act_id, u64::MAX)).map_err(unavailable)?.enumerate() {
            // Answering with part of the list would show a wrong balance: fail loudly instead.
            if index == USER_UNSETTLED_READ_MAX {
                return Err(StoreError::TooManyUnsettled { act_id, max: USER_UNSETTLED_READ_MAX });
            }
            let (_, value) = row.map_err(unavailable)?;
            let (activity_id, order_no) = value.value();
            if let Some(bytes) = grants.get((activity_id, order_no)).map_err(unavailable)? {
                records.push(decode(bytes.value())?);
            }
        }
        Ok(records)
    }

    /// The keys of the user's oldest `USER_UNSETTLED_READ_MAX` unsettled tokens.
    pub fn unsettled_keys_prefix(&self, act_id: i64) -> Result<Vec<GrantKey>, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let unsettled = read.open_table(USER_UNSETTLED).map_err(unavailable)?;
        let mut keys = Vec::new();
        for row in unsettled.range((act_id, 0)..=(act_id, u64::MAX)).map_err(unavailable)?.take(USER_UNSETTLED_READ_MAX)
        {
            let (key, value) = row.map_err(unavailable)?;
            let (activity_id, order_no) = value.value();
            keys.push(GrantKey {
                activity_id: activity_id.into(),
                order_no: order_no.into(),
                seq: key.value().1,
                queue_id: String::new(),
            });
        }
        Ok(keys)
    }

    /// Up to `limit` of the user's tokens strictly older than `before`, newest first.
    pub fn user_tokens(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let index = read.open_table(USER_TOKENS).map_err(unavailable)?;
        let grants = read.open_table(GRANTS).map_err(unavailable)?;
        let rows = index.range(flow_index_range(act_id, before)).map_err(unavailable)?;
        let mut records = Vec::with_capacity(limit);
        for row in rows.rev().take(limit) {
            let (key, _) = row.map_err(unavailable)?;
            let (_, _, flow_id) = key.value();
            let Some((activity_id, order_no)) = split_flow_id(flow_id) else { continue };
            if let Some(bytes) = grants.get((activity_id, order_no)).map_err(unavailable)? {
                records.push(decode(bytes.value())?);
            }
        }
        Ok(records)
    }

    /// How many tokens wait in the crediting queue.
    pub fn queue_len(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        read.open_table(QUEUE).map_err(unavailable)?.len().map_err(unavailable)
    }

    /// Stock used by a scene, or by the whole activity when `scene_id` is `None`.
    pub fn stock_used(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let stock = read.open_table(STOCK).map_err(unavailable)?;
        let used = stock.get((activity_id, scene_id.unwrap_or(ACTIVITY_TOTAL))).map_err(unavailable)?;
        Ok(used
            .map(|value| {
                let (count, cents) = value.value();
                StockUsed { count, cents }
            })
            .unwrap_or_default())
    }

    /// Every stored grant of one activity, and whether each is parked; for reconciliation and
    /// tests, never on the grant path.
    pub fn grants_of(&self, activity_id: &str) -> Result<Vec<(GrantRecord, bool)>, StoreError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let grants = read.open_table(GRANTS).map_err(unavailable)?;
        let parked_table = read.open_table(PARKED).map_err(unavailable)?;
        let mut parked = std::collections::HashSet::new();
        for row in parked_table.iter().map_err(unavailable)? {
            parked.insert(row.map_err(unavailable)?.0.value());
        }
        let mut records = Vec::new();
        for row in grants.range((activity_id, "")..).map_err(unavailable)? {
            let (key, bytes) = row.map_err(unavailable)?;
            if key.value().0 != activity_id {
                break;
            }
            let record = decode(bytes.value())?;
            let is_parked = record.status() != TokenStatus::Credited && parked.contains(&record.seq);
            records.push((record, is_parked));
        }
        Ok(records)
    }
}

/// Splits `rp/{activity}/{order_no}`.
fn split_flow_id(flow_id: &str) -> Option<(&str, &str)> {
    flow_id.strip_prefix("rp/")?.split_once('/')
}

fn decode(bytes: &[u8]) -> Result<GrantRecord, StoreError> {
    GrantRecord::decode(bytes).map_err(|error| StoreError::Unavailable(format!("corrupt grant record: {error}")))
}

fn run_committer(db: &Arc<Database>, mut receiver: mpsc::Receiver<WriteOp>, commits: &AtomicU64) {
    let mut group = Vec::with_capacity(GROUP_COMMIT_OPS_MAX);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < GROUP_COMMIT_OPS_MAX {
            match receiver.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        commit_group(db, &mut group);
        commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// A reply computed inside the transaction, sent only once the transaction is durable.
enum Outcome {
    Grant(Reply<GrantCommit>, Result<GrantCommit, StoreError>),
    Records(Reply<Vec<GrantRecord>>, Result<Vec<GrantRecord>, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
    Restore(Reply<RestoreOutcome>, Result<RestoreOutcome, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
}

impl Outcome {
    fn error(&self) -> Option<String> {
        let error = match self {
            Outcome::Grant(_, Err(error)) => error,
            Outcome::Records(_, Err(error)) => error,
            Outcome::Unit(_, Err(error)) => error,
            Outcome::Restore(_, Err(error)) => error,
            Outcome::Count(_, Err(error)) => error,
            _ => return None,
        };
        Some(error.to_string())
    }

    fn send(self, failure: Option<&str>) {
        let fail = |message: &str| StoreError::Unavailable(message.to_owned());
        match self {
            Outcome::Grant(reply, result) => drop(reply.send(failure.map_or(result, |m| Err(fail(m))))),
            Outcome::Records(reply, result) => drop(reply.send(failure.map_or(result, |m| Err(fail(m))))),
            Outcome::Unit(reply, result) => drop(reply.send(failure.map_or(result, |m| Err(fail(m))))),
            Outcome::Restore(reply, result) => drop(reply.send(failure.map_or(result, |m| Err(fail(m))))),
            Outcome::Count(reply, result) => drop(reply.send(failure.map_or(result, |m| Err(fail(m))))),
        }
    }
}

fn commit_group(db: &Database, group: &mut Vec<WriteOp>) {
    let mut outcomes = Vec::with_capacity(group.len());
    let failure = match apply_group(db, group.drain(..), &mut outcomes) {
        Ok(()) => None,
        Err(error) => {
            tracing::error!(%error, "token store commit failed; the group is rolled back");
            Some(error.to_string())
        }
    };
    for outcome in outcomes {
        outcome.send(failure.as_deref());
    }
}

struct Tables<'txn> {
    grants: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    user_tokens: redb::Table<'txn, (i64, u64, &'static str), ()>,
    user_unsettled: redb::Table<'txn, (i64, u64), (&'static str, &'static str)>,
    queue: redb::Table<'txn, u64, (&'static str, &'static str)>,
    stock: redb::Table<'txn, (&'static str, &'static str), (u64, i64)>,
    meta: redb::Table<'txn, &'static str, u64>,
    parked: redb::Table<'txn, u64, (&'static str, &'static str)>,
}

fn apply_group(
    db: &Database,
    ops: impl Iterator<Item = WriteOp>,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut tables = Tables {
            grants: txn.open_table(GRANTS).map_err(unavailable)?,
            user_tokens: txn.open_table(USER_TOKENS).map_err(unavailable)?,
            user_unsettled: txn.open_table(USER_UNSETTLED).map_err(unavailable)?,
            queue: txn.open_table(QUEUE).map_err(unavailable)?,
            stock: txn.open_table(STOCK).map_err(unavailable)?,
            meta: txn.open_table(META).map_err(unavailable)?,
            parked: txn.open_table(PARKED).map_err(unavailable)?,
        };
        let first_seq = tables.meta.get("next_seq").map_err(unavailable)?.map(|v| v.value()).unwrap_or(1);
        let mut next_seq = first_seq;
        for op in ops {
            outcomes.push(match op {
                WriteOp::Grant { record, limits, reply } => {
                    Outcome::Grant(reply, grant(&mut tables, record, limits, &mut next_seq))
                }
                WriteOp::ClaimQueue { max, reply } => Outcome::Records(reply, claim_queue(&mut tables, max)),
                WriteOp::ClaimKeys { keys, reply } => Outcome::Records(reply, claim_keys(&mut tables, &keys)),
                WriteOp::Complete { keys, reply } => Outcome::Unit(reply, complete(&mut tables, &keys)),
                WriteOp::Restore { record, credited, reply } => {
                    Outcome::Restore(reply, restore(&mut tables, record, credited, &mut next_seq))
                }
                WriteOp::Park { keys, reply } => Outcome::Unit(reply, park(&mut tables, &keys)),
                WriteOp::Requeue { reply } => Outcome::Count(reply, requeue(&mut tables)),
                WriteOp::RequeueKeys { keys, reply } => Outcome::Count(reply, requeue_keys(&mut tables, &keys)),
            });
            // An operation that failed may have written part of its work: the whole group is
            // rolled back rather than committing half an operation.
            if let Some(error) = outcomes.last().and_then(Outcome::error) {
                return Err(StoreError::Unavailable(error));
            }
        }
        if next_seq != first_seq {
            tables.meta.insert("next_seq", next_seq).map_err(unavailable)?;
        }
    }
    txn.commit().map_err(unavailable)
}

fn grant(
    tables: &mut Tables<'_>,
    mut record: GrantRecord,
    limits: StockLimits,
    next_seq: &mut u64,
) -> Result<GrantCommit, StoreError> {
    if let Some(existing) = read_grant(tables, &record.activity_id, &record.order_no)? {
        return Ok(GrantCommit::Replayed(existing));
    }
    let scene_used = read_stock(tables, &record.activity_id, &record.scene_id)?;
    let activity_used = read_stock(tables, &record.activity_id, ACTIVITY_TOTAL)?;
    let amount = record.amount_cents;
    if limits.scene_count_max.is_some_and(|max| scene_used.count >= max) {
        return Ok(GrantCommit::OutOfStock(StockOut::SceneCount));
    }
    if limits.scene_budget_cents.is_some_and(|max| scene_used.cents.checked_add(amount).is_none_or(|total| total > max))
    {
        return Ok(GrantCommit::OutOfStock(StockOut::SceneBudget));
    }
    if activity_used.cents.checked_add(amount).is_none_or(|total| total > limits.activity_budget_cents) {
        return Ok(GrantCommit::OutOfStock(StockOut::ActivityBudget));
    }
    record.seq = *next_seq;
    *next_seq += 1;
    record.status = TokenStatus::Pending.code();
    insert_new(tables, &record)?;
    Ok(GrantCommit::Granted(record))
}

fn restore(
    tables: &mut Tables<'_>,
    mut record: GrantRecord,
    credited: bool,
    next_seq: &mut u64,
) -> Result<RestoreOutcome, StoreError> {
    if read_grant(tables, &record.activity_id, &record.order_no)?.is_some() {
        return Ok(RestoreOutcome::AlreadyPresent);
    }
    record.seq = *next_seq;
    *next_seq += 1;
    if credited {
        record.status = TokenStatus::Credited.code();
        insert_record(tables, &record)?;
    } else {
        record.status = TokenStatus::Pending.code();
        insert_new(tables, &record)?;
    }
    Ok(RestoreOutcome::Restored)
}

fn park(tables: &mut Tables<'_>, keys: &[GrantKey]) -> Result<(), StoreError> {
    for key in keys {
        if tables.queue.remove(key.seq).map_err(unavailable)?.is_some() {
            tables.parked.insert(key.seq, (key.activity_id.as_str(), key.order_no.as_str())).map_err(unavailable)?;
        }
    }
    Ok(())
}

fn requeue(tables: &mut Tables<'_>) -> Result<u64, StoreError> {
    let mut moved = 0;
    while let Some((seq, value)) = tables.parked.pop_first().map_err(unavailable)? {
        let (activity_id, order_no) = value.value();
        tables.queue.insert(seq.value(), (activity_id, order_no)).map_err(unavailable)?;
        moved += 1;
    }
    Ok(moved)
}

fn requeue_keys(tables: &mut Tables<'_>, keys: &[GrantKey]) -> Result<u64, StoreError> {
    let mut moved = 0;
    for key in keys {
        if tables.parked.remove(key.seq).map_err(unavailable)?.is_some() {
            tables.queue.insert(key.seq, (key.activity_id.as_str(), key.order_no.as_str())).map_err(unavailable)?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Writes a new grant into every table: record, user indexes, queue and stock.
fn insert_new(tables: &mut Tables<'_>, record: &GrantRecord) -> Result<(), StoreError> {
    insert_record(tables, record)?;
    let key = (record.activity_id.as_str(), record.order_no.as_str());
    tables.user_unsettled.insert((record.act_id, record.seq), key).map_err(unavailable)?;
    tables.queue.insert(record.seq, key).map_err(unavailable)?;
    Ok(())
}

/// Writes the record, the user's token list and the stock counters.
fn insert_record(tables: &mut Tables<'_>, record: &GrantRecord) -> Result<(), StoreError> {
    let key = (record.activity_id.as_str(), record.order_no.as_str());
    tables.grants.insert(key, record.encode_to_vec().as_slice()).map_err(unavailable)?;
    let flow_id = record.flow_id();
    tables.user_tokens.insert((record.act_id, record.open_time_ms, flow_id.as_str()), ()).map_err(unavailable)?;
    for scene in [record.scene_id.as_str(), ACTIVITY_TOTAL] {
        let used = read_stock(tables, &record.activity_id, scene)?;
        let cents = used.cents.saturating_add(record.amount_cents);
        tables.stock.insert((record.activity_id.as_str(), scene), (used.count + 1, cents)).map_err(unavailable)?;
    }
    Ok(())
}

fn read_grant(tables: &Tables<'_>, activity_id: &str, order_no: &str) -> Result<Option<GrantRecord>, StoreError> {
    let found = tables.grants.get((activity_id, order_no)).map_err(unavailable)?;
    found.map(|bytes| decode(bytes.value())).transpose()
}

fn read_stock(tables: &Tables<'_>, activity_id: &str, scene_id: &str) -> Result<StockUsed, StoreError> {
    let used = tables.stock.get((activity_id, scene_id)).map_err(unavailable)?;
    Ok(used
        .map(|value| {
            let (count, cents) = value.value();
            StockUsed { count, cents }
        })
        .unwrap_or_default())
}

fn claim_queue(tables: &mut Tables<'_>, max: usize) -> Result<Vec<GrantRecord>, StoreError> {
    let mut keys = Vec::with_capacity(max);
    for row in tables.queue.iter().map_err(unavailable)?.take(max) {
        let (seq, value) = row.map_err(unavailable)?;
        let (activity_id, order_no) = value.value();
        keys.push(GrantKey {
            activity_id: activity_id.to_owned(),
            order_no: order_no.to_owned(),
            seq: seq.value(),
            queue_id: String::new(),
        });
    }
    claim_keys(tables, &keys)
}

fn claim_keys(tables: &mut Tables<'_>, keys: &[GrantKey]) -> Result<Vec<GrantRecord>, StoreError> {
    let mut claimed = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(mut record) = read_grant(tables, &key.activity_id, &key.order_no)? else { continue };
        match record.status() {
            TokenStatus::Credited => continue,
            TokenStatus::Processing => {}
            TokenStatus::Pending => {
                record.status = TokenStatus::Processing.code();
                let encoded = record.encode_to_vec();
                tables
                    .grants
                    .insert((key.activity_id.as_str(), key.order_no.as_str()), encoded.as_slice())
                    .map_err(unavailable)?;
            }
        }
        claimed.push(record);
    }
    Ok(claimed)
}

fn complete(tables: &mut Tables<'_>, keys: &[GrantKey]) -> Result<(), StoreError> {
    for key in keys {
        let Some(mut record) = read_grant(tables, &key.activity_id, &key.order_no)? else { continue };
        if record.status() == TokenStatus::Credited {
            continue;
        }
        record.status = TokenStatus::Credited.code();
        let encoded = record.encode_to_vec();
        tables
            .grants
            .insert((key.activity_id.as_str(), key.order_no.as_str()), encoded.as_slice())
            .map_err(unavailable)?;
        tables.queue.remove(record.seq).map_err(unavailable)?;
        tables.parked.remove(record.seq).map_err(unavailable)?;
        tables.user_unsettled.remove((record.act_id, record.seq)).map_err(unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> GrantRecord {
        GrantRecord {
            activity_id: "a".into(),
            order_no: format!("{n}_s_1_cash_0"),
            scene_id: "s".into(),
            act_id: n,
            amount_cents: 10,
            ..GrantRecord::default()
        }
    }

    // Proves concurrent grants share commits (group commit): 400 grants in flight at once take
    // far fewer than 400 fsynced transactions, and every one of them is stored.
    #[test]
    fn concurrent_grants_share_commits() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let before = store.commit_count();
            let limits = StockLimits { activity_budget_cents: 1_000_000, ..StockLimits::default() };
            let grants: Vec<_> = (0..400)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move { store.commit_grant(record(n), limits).await })
                })
                .collect();
            for grant in grants {
                assert!(matches!(grant.await.unwrap().unwrap(), GrantCommit::Granted(_)));
            }
            let commits = store.commit_count() - before;
            assert!(commits < 200, "{commits} commits for 400 concurrent grants");
            assert_eq!(store.queue_len().unwrap(), 400);
        });
    }

    // Proves stock is checked in the same transaction as the grant: with a count of 5, exactly
    // five of twenty concurrent grants are stored, and the activity budget bounds the cents.
    #[test]
    fn stock_is_never_oversold() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let limits =
                StockLimits { activity_budget_cents: 1_000, scene_count_max: Some(5), scene_budget_cents: None };
            let grants: Vec<_> = (0..20)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move { store.commit_grant(record(n), limits).await.unwrap() })
                })
                .collect();
            let mut granted = 0;
            for grant in grants {
                match grant.await.unwrap() {
                    GrantCommit::Granted(_) => granted += 1,
                    GrantCommit::OutOfStock(StockOut::SceneCount) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(granted, 5);
            assert_eq!(store.stock_used("a", Some("s")).unwrap(), StockUsed { count: 5, cents: 50 });
            let budget = StockLimits { activity_budget_cents: 55, scene_count_max: None, scene_budget_cents: None };
            assert!(matches!(
                store.commit_grant(record(100), budget).await.unwrap(),
                GrantCommit::OutOfStock(StockOut::ActivityBudget)
            ));
        });
    }
}
