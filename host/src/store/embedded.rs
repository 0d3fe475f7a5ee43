//! The embedded token store: the whole state in memory, made durable by an append-only log,
//! `DATA/tokens.log`.
//!
//! This is the design Redis uses with its append-only file, and it replaced a redb B-tree file
//! after profiling (see `BENCHMARKS.md`): a grant inserts three random keys (record, the user's
//! token list, the user's unsettled set), which a copy-on-write B-tree turns into whole dirty
//! pages copied, checksummed and written per commit, and the writer's claim and completion
//! rewrite the same pages again. Here a grant appends one record to a file, and a completion
//! appends a few bytes.
//!
//! Every write goes through one committer thread that gathers all operations waiting for it
//! into a group: it applies them to the in-memory state, appends the group's log entries as one
//! checksummed frame, fsyncs once, and only then answers the group's callers (group commit:
//! under load, durability costs one fsync per group, not one per grant). Reads run on the
//! caller's thread under a read lock. A lookup that finds a grant whose group is not yet durable
//! waits for it, so no one is ever answered with a token a crash could take back.
//!
//! On open the log is replayed; a torn last frame (a crash mid-write: its callers were never
//! answered) is cut off. When status entries outnumber the records, the log is rewritten at open
//! as one entry per record. If a write or fsync fails, the store refuses everything from then on
//! (the memory may hold what the disk does not); a restart replays the log.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher as _, RandomState};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::issuer::kept::KeptToken;
use crate::journal;
use crate::metrics::JournalKind;
use crate::shared_strings::SharedStrings;
use crate::split_map::{SplitMap, SplitTable};
use crate::user_index::UserIndex;

use super::{
    FlowPosition, GrantCommit, GrantKey, GrantRecord, LedgerCheck, RestoreOutcome, StockLimits, StockOut, StockUsed,
    StoreError, TokenStatus, USER_UNSETTLED_READ_MAX, red_packet_flow_id,
};

/// The log's file name in the data directory.
pub const LOG_FILE_NAME: &str = "tokens.log";

/// The first bytes of a log file: the format and its version.
const LOG_MAGIC: &[u8; 8] = b"HBTLOG01";

/// The most operations one group commit takes. Large enough that a burst of grants shares an
/// fsync, small enough that the first waiter in a group is not held long behind the others and
/// that readers wait at most one group's work for the state lock.
pub const GROUP_COMMIT_OPS_MAX: usize = 1024;

/// Operations waiting for the committer. When full, callers wait: this is the host's
/// backpressure against a disk that cannot keep up.
const COMMIT_QUEUE_OPS_MAX: usize = 16 * 1024;

/// Records written per frame when the log is rewritten at open.
const REWRITE_FRAME_RECORDS: usize = 4096;

/// Log entry tags.
const ENTRY_PUT: u8 = 1;
const ENTRY_CREDITED: u8 = 2;
const ENTRY_PARK: u8 = 3;
const ENTRY_UNPARK: u8 = 4;
const ENTRY_VOUCH: u8 = 5;
const ENTRY_RETIRE: u8 = 6;
const ENTRY_RETIRED_TOTAL: u8 = 7;
const ENTRY_RETIRED_USER: u8 = 8;

/// Entries per frame when the retired totals and users are written at a rewrite.
const REWRITE_FRAME_ENTRIES: usize = 16 * 1024;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteOp {
    Grant { record: GrantRecord, limits: StockLimits, check: LedgerCheck, reply: Reply<GrantCommit> },
    ClaimQueue { max: usize, reply: Reply<Vec<GrantRecord>> },
    ClaimKeys { keys: Vec<GrantKey>, reply: Reply<Vec<GrantRecord>> },
    Complete { keys: Vec<GrantKey>, reply: Reply<()> },
    Restore { record: GrantRecord, credited: bool, reply: Reply<RestoreOutcome> },
    Park { keys: Vec<GrantKey>, reply: Reply<()> },
    Requeue { reply: Reply<u64> },
    RequeueKeys { keys: Vec<GrantKey>, reply: Reply<u64> },
    Retire { retain_ms: u64, max: usize, reply: Reply<usize> },
}

/// A handle on the embedded token store; clones share one state and one committer.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    committer: Arc<Committer>,
    /// Group red packets, in their own journal (`DATA/packets.log`).
    packets: super::packets::PacketBook,
}

/// What the committer and the readers share.
struct Shared {
    state: RwLock<State>,
    /// The last group whose log frame is on disk.
    durable_group: watch::Sender<u64>,
    /// Set once a log write failed: the memory may be ahead of the disk.
    failed: AtomicBool,
    commits: AtomicU64,
    /// Nonces of signed requests; not durable: a restarted host accepts only requests signed
    /// after it started until the window has passed (see `access`).
    nonces: parking_lot::Mutex<super::nonces::NonceMemory>,
    /// When the store was opened: credit times are milliseconds since then (records credited
    /// before the open count as credited at it).
    opened: std::time::Instant,
}

/// The committer thread and the way to it. Dropping the last handle closes the channel and waits
/// for the thread to finish its group, so the log is closed when the store is gone and can be
/// opened again at once (a restart in the same process).
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

fn failed_error() -> StoreError {
    StoreError::Unavailable("the token log could not be written; restart the host to replay it".into())
}

/// One stored grant, kept as little as possible: its activity and scene ids shared with the
/// store's other records, its token by what the other fields cannot give back
/// (`issuer::kept`); [`Slot::record`] builds the record again when it is read. Its seq is the
/// key it is kept under, not a field: 112 bytes, one of the allocator's size classes, where the
/// seq made it 120 and so 128 (`bench footprint`).
struct Slot {
    activity_id: Arc<str>,
    scene_id: Arc<str>,
    /// `rp/{activity}/{order_no}`: the order number is its end (the activity's index reads it
    /// here), and the user's index holds this same allocation.
    flow_id: Arc<str>,
    /// The bill copy after its length as a varint, then the kept token's bytes
    /// ([`KeptToken::as_bytes`]): one allocation for both.
    texts: Box<[u8]>,
    act_id: i64,
    amount_cents: i64,
    open_time_ms: u64,
    app_id: i64,
    /// The group that wrote it; it is durable once `durable_group` reaches this.
    group: u64,
    /// The seed's status number (see [`TokenStatus`]).
    status: u32,
}

impl Slot {
    fn new(record: GrantRecord, group: u64, strings: &mut SharedStrings) -> Slot {
        let token = KeptToken::keep(&record.token, &record.token_fields());
        let mut texts = Vec::with_capacity(record.bill_copy.len() + token.as_bytes().len() + 2);
        prost::encoding::encode_varint(record.bill_copy.len() as u64, &mut texts);
        texts.extend_from_slice(record.bill_copy.as_bytes());
        texts.extend_from_slice(token.as_bytes());
        Slot {
            activity_id: strings.share(&record.activity_id),
            scene_id: strings.share(&record.scene_id),
            flow_id: red_packet_flow_id(&record.activity_id, &record.order_no).into(),
            texts: texts.into_boxed_slice(),
            act_id: record.act_id,
            amount_cents: record.amount_cents,
            open_time_ms: record.open_time_ms,
            app_id: record.app_id,
            group,
            status: record.status,
        }
    }

    /// The record as it was stored under `seq`, its token's text given back.
    fn record(&self, seq: u64) -> GrantRecord {
        let mut record = GrantRecord {
            activity_id: self.activity_id.as_ref().into(),
            order_no: self.order_no().into(),
            scene_id: self.scene_id.as_ref().into(),
            act_id: self.act_id,
            amount_cents: self.amount_cents,
            open_time_ms: self.open_time_ms,
            status: self.status,
            seq,
            token: String::new(),
            bill_copy: String::new(),
            app_id: self.app_id,
            queue_id: String::new(),
        };
        let mut texts = &self.texts[..];
        let bill_bytes = prost::encoding::decode_varint(&mut texts).expect("written by Slot::new") as usize;
        let (bill_copy, token) = texts.split_at(bill_bytes);
        record.bill_copy = std::str::from_utf8(bill_copy).expect("written from a string").to_owned();
        record.token = KeptToken::text_of_bytes(token, &record.token_fields());
        record
    }

    fn status(&self) -> TokenStatus {
        TokenStatus::from_code(self.status).unwrap_or(TokenStatus::Pending)
    }

    /// The key of the record stored under `seq`.
    fn key(&self, seq: u64) -> GrantKey {
        GrantKey {
            activity_id: self.activity_id.as_ref().into(),
            order_no: self.order_no().into(),
            seq,
            queue_id: String::new(),
        }
    }

    fn order_no(&self) -> &str {
        &self.flow_id[self.order_at()..]
    }

    /// Where the order number starts in the flow id.
    fn order_at(&self) -> usize {
        FLOW_ID_PREFIX.len() + self.activity_id.len() + 1
    }
}

const _: () = assert!(std::mem::size_of::<Slot>() <= 112, "a record past 112 bytes takes the allocator's 128");

/// What a flow id, `rp/{activity}/{order_no}`, starts with.
const FLOW_ID_PREFIX: &str = "rp/";

/// One user's tokens: (open time, flow id) → seq.
type UserTokens = UserIndex<(u64, Arc<str>), u64>;

/// The whole store, rebuilt from the log at open.
#[derive(Default)]
struct State {
    /// seq → the grant, boxed: a table of 128-byte entries (key and slot) runs 44 % to 88 % full
    /// as it doubles, so it cost 146 to 293 bytes a token, where the box costs its 128 and the
    /// table 18 to 37 (and the suite's figure swung with where a run ended in the doubling).
    slots: SplitMap<u64, Box<Slot>>,
    /// activity → order number → seq: the seqs alone, each order number read from its record
    /// (8 bytes a token in the table where a key beside the seq took 32; `bench footprint`).
    by_key: HashMap<String, SplitTable<u64>>,
    /// act id → (open time, flow id) → seq: each user's tokens in wallet-flow order. Those not
    /// yet credited are found among them by their status ([`State::unsettled_of`]): a user holds
    /// few tokens at a time (credited ones retire), and a second index per user cost ≈ 65 bytes
    /// a pending token (`bench footprint`). Boxed, as the records are (see `slots`).
    user_tokens: SplitMap<i64, Box<UserTokens>>,
    /// The crediting queue, oldest first.
    queue: BTreeSet<u64>,
    /// Tokens taken off the queue because the ledger would not take them (the activity's budget
    /// cannot pay, or the ledger holds a different amount for the order). They are still owed
    /// and still shown pending; funding the activity puts them back in the queue.
    parked: BTreeSet<u64>,
    /// activity → scene → used; the scene `""` holds the activity's total.
    stock: HashMap<String, HashMap<String, StockUsed>>,
    /// Activities the store vouches for (see [`LedgerCheck`]).
    vouched: HashSet<String>,
    /// Credited records, oldest credit first, with when (ms since open): the retirement order.
    /// A seq retired or restored since is skipped when its turn comes.
    credited_order: VecDeque<(u64, u64)>,
    /// activity → users with retired records of it (see [`GrantCommit::CheckRetired`]).
    retired_users: HashMap<String, SplitMap<i64, ()>>,
    /// activity → scene → what its retired records add up to; the scene `""` holds the
    /// activity's total.
    retired: HashMap<String, HashMap<String, StockUsed>>,
    /// The activity and scene ids the records share.
    strings: SharedStrings,
    next_seq: u64,
    /// Entries in the log, to decide when to rewrite it.
    log_entries: u64,
}

/// The value under `key`, made on first use; the key is copied only then.
fn entry_of<'a, V: Default>(map: &'a mut HashMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The hash of the order number of the record `seq`, which the activity's index holds, again
/// (when a part of the index grows or shrinks).
fn order_hash(slots: &SplitMap<u64, Box<Slot>>, hasher: &RandomState, seq: &u64) -> u64 {
    hasher.hash_one(slots.get(seq).expect("the activity's index holds stored records only").order_no())
}

/// The scene name under which an activity's own total is kept; scene ids are never empty, so it
/// cannot clash.
const ACTIVITY_TOTAL: &str = "";

impl State {
    fn find(&self, activity_id: &str, order_no: &str) -> Option<u64> {
        let orders = self.by_key.get(activity_id)?;
        orders
            .find(orders.hash(order_no), |seq| self.slots.get(seq).is_some_and(|slot| slot.order_no() == order_no))
            .copied()
    }

    /// The seqs of the user's tokens not yet credited, oldest first.
    fn unsettled_of(&self, act_id: i64) -> Vec<u64> {
        let Some(tokens) = self.user_tokens.get(&act_id) else { return Vec::new() };
        let mut unsettled: Vec<u64> = tokens
            .iter()
            .map(|&(_, seq)| seq)
            .filter(|seq| self.slots.get(seq).is_some_and(|slot| slot.status() != TokenStatus::Credited))
            .collect();
        unsettled.sort_unstable();
        unsettled
    }

    fn stock(&self, activity_id: &str, scene_id: &str) -> StockUsed {
        self.stock.get(activity_id).and_then(|scenes| scenes.get(scene_id)).copied().unwrap_or_default()
    }

    /// Adds a record to every index: key, user lists, stock, and the queue unless credited.
    fn insert(&mut self, record: GrantRecord, group: u64) {
        let seq = record.seq;
        self.next_seq = self.next_seq.max(seq + 1);
        let slot = Slot::new(record, group, &mut self.strings);
        let scenes = entry_of(&mut self.stock, &slot.activity_id);
        for scene in [&*slot.scene_id, ACTIVITY_TOTAL] {
            let used = entry_of(scenes, scene);
            used.count += 1;
            used.cents = used.cents.saturating_add(slot.amount_cents);
        }
        self.user_tokens
            .get_or_insert_with(slot.act_id, Box::default)
            .insert((slot.open_time_ms, slot.flow_id.clone()), seq);
        if slot.status() != TokenStatus::Credited {
            self.queue.insert(seq);
        }
        let orders = entry_of(&mut self.by_key, &slot.activity_id);
        let slots = &self.slots;
        orders.insert_unique(orders.hash(slot.order_no()), seq, |hasher, other| order_hash(slots, hasher, other));
        self.slots.insert(seq, Box::new(slot));
    }

    /// Marks a record credited at `now_ms` (ms since open), which starts its retention.
    fn mark_credited(&mut self, seq: u64, now_ms: u64) -> bool {
        let Some(slot) = self.slots.get_mut(&seq) else { return false };
        if slot.status() == TokenStatus::Credited {
            return false;
        }
        slot.status = TokenStatus::Credited.code();
        self.credited_order.push_back((now_ms, seq));
        self.queue.remove(&seq);
        self.parked.remove(&seq);
        true
    }

    /// Takes a credited record out of every index; the stock it used stays counted, and it
    /// joins its activity's retired totals and users.
    fn retire(&mut self, seq: u64) -> bool {
        if self.slots.get(&seq).is_none_or(|slot| slot.status() != TokenStatus::Credited) {
            return false;
        }
        let Some(slot) = self.slots.remove(&seq) else { return false };
        if let Some(orders) = self.by_key.get_mut(&*slot.activity_id) {
            orders.remove(orders.hash(slot.order_no()), |&other| other == seq);
        }
        if let Some(tokens) = self.user_tokens.get_mut(&slot.act_id) {
            tokens.remove(&(slot.open_time_ms, slot.flow_id.clone()));
            if tokens.is_empty() {
                self.user_tokens.remove(&slot.act_id);
            }
        }
        self.add_retired(&slot.activity_id, &slot.scene_id, StockUsed { count: 1, cents: slot.amount_cents });
        entry_of(&mut self.retired_users, &slot.activity_id).insert(slot.act_id, ());
        self.strings.release(slot.activity_id);
        self.strings.release(slot.scene_id);
        true
    }

    /// Adds to the retired totals of a scene and of its activity.
    fn add_retired(&mut self, activity_id: &str, scene_id: &str, used: StockUsed) {
        let scenes = entry_of(&mut self.retired, activity_id);
        for scene in [scene_id, ACTIVITY_TOTAL] {
            let total = entry_of(scenes, scene);
            total.count += used.count;
            total.cents = total.cents.saturating_add(used.cents);
        }
    }

    /// Whether the user has retired records of the activity.
    fn has_retired(&self, activity_id: &str, act_id: i64) -> bool {
        self.retired_users.get(activity_id).is_some_and(|users| users.contains_key(&act_id))
    }

    /// Gives back memory the indexes no longer use once most of their entries left: a retired
    /// night leaves the process as small as its backlog, not as large as its peak.
    fn shrink(&mut self) {
        fn shrink_map<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 64 && map.len() * 4 < map.capacity() {
                map.shrink_to_fit();
            }
        }
        self.slots.shrink();
        shrink_map(&mut self.by_key);
        let slots = &self.slots;
        for orders in self.by_key.values_mut() {
            orders.shrink(|hasher, seq| order_hash(slots, hasher, seq));
        }
        self.by_key.retain(|_, orders| !orders.is_empty());
        self.user_tokens.shrink();
        self.strings.shrink();
        if self.credited_order.capacity() > 64 && self.credited_order.len() * 4 < self.credited_order.capacity() {
            self.credited_order.shrink_to_fit();
        }
    }

    fn park(&mut self, seq: u64) -> bool {
        if self.queue.remove(&seq) {
            self.parked.insert(seq);
            return true;
        }
        false
    }

    fn unpark(&mut self, seq: u64) -> bool {
        if self.parked.remove(&seq) {
            self.queue.insert(seq);
            return true;
        }
        false
    }

    /// Applies one entry read back from the log.
    fn replay(&mut self, entry: Entry) {
        self.log_entries += 1;
        match entry {
            Entry::Put(record) => {
                if self.find(&record.activity_id, &record.order_no).is_none() && !self.slots.contains_key(&record.seq) {
                    if record.status() == TokenStatus::Credited {
                        self.credited_order.push_back((0, record.seq));
                    }
                    self.insert(record, 0);
                }
            }
            Entry::Credited(seq) => {
                self.mark_credited(seq, 0);
            }
            Entry::Retire(seq) => {
                self.retire(seq);
            }
            Entry::RetiredTotal { activity_id, scene_id, used } => {
                // Only scenes are written; the activity's total follows from them. The stock
                // they used is counted as it was before their records left.
                self.add_retired(&activity_id, &scene_id, used);
                let scenes = self.stock.entry(activity_id).or_default();
                for scene in [scene_id.as_str(), ACTIVITY_TOTAL] {
                    let total = scenes.entry(scene.to_owned()).or_default();
                    total.count += used.count;
                    total.cents = total.cents.saturating_add(used.cents);
                }
            }
            Entry::RetiredUser { activity_id, act_id } => {
                self.retired_users.entry(activity_id).or_default().insert(act_id, ());
            }
            Entry::Park(seq) => {
                self.park(seq);
            }
            Entry::Unpark(seq) => {
                self.unpark(seq);
            }
            Entry::Vouch(activity_id) => {
                self.vouched.insert(activity_id);
            }
        }
    }
}

/// One log entry.
enum Entry {
    /// A new record, with its seq and status.
    Put(GrantRecord),
    /// The ledger has this seq's entry.
    Credited(u64),
    /// This seq left the queue for the parked set.
    Park(u64),
    /// This seq went back from the parked set to the queue.
    Unpark(u64),
    /// The store vouches for this activity (see [`LedgerCheck`]).
    Vouch(String),
    /// This seq's credited record left the store (see [`super::Store::retire_credited`]).
    Retire(u64),
    /// Written at a rewrite: what a scene's retired records add up to (their records are gone).
    RetiredTotal { activity_id: String, scene_id: String, used: StockUsed },
    /// Written at a rewrite: this user has retired records of this activity.
    RetiredUser { activity_id: String, act_id: i64 },
}

fn put_entry(log: &mut Vec<u8>, record: &GrantRecord) {
    log.push(ENTRY_PUT);
    prost::encoding::encode_varint(record.encoded_len() as u64, log);
    record.encode_raw(log);
}

fn seq_entry(log: &mut Vec<u8>, tag: u8, seq: u64) {
    log.push(tag);
    prost::encoding::encode_varint(seq, log);
}

fn vouch_entry(log: &mut Vec<u8>, activity_id: &str) {
    log.push(ENTRY_VOUCH);
    text(log, activity_id);
}

/// A length-prefixed string.
fn text(log: &mut Vec<u8>, value: &str) {
    prost::encoding::encode_varint(value.len() as u64, log);
    log.extend_from_slice(value.as_bytes());
}

fn retired_total_entry(log: &mut Vec<u8>, activity_id: &str, scene_id: &str, used: StockUsed) {
    log.push(ENTRY_RETIRED_TOTAL);
    text(log, activity_id);
    text(log, scene_id);
    prost::encoding::encode_varint(used.count, log);
    prost::encoding::encode_varint(used.cents as u64, log);
}

fn retired_user_entry(log: &mut Vec<u8>, activity_id: &str, act_id: i64) {
    log.push(ENTRY_RETIRED_USER);
    text(log, activity_id);
    prost::encoding::encode_varint(act_id as u64, log);
}

/// Reads a length-prefixed string.
fn read_text(payload: &mut &[u8]) -> Result<String, String> {
    let length = prost::encoding::decode_varint(payload).map_err(|error| error.to_string())?;
    let length = usize::try_from(length).ok().filter(|&n| n <= payload.len()).ok_or("text overruns")?;
    let (bytes, rest) = payload.split_at(length);
    *payload = rest;
    String::from_utf8(bytes.to_vec()).map_err(|error| error.to_string())
}

fn decode_entries(mut payload: &[u8], mut each: impl FnMut(Entry)) -> Result<(), String> {
    let varint = |payload: &mut &[u8]| prost::encoding::decode_varint(payload).map_err(|error| error.to_string());
    while let Some((&tag, rest)) = payload.split_first() {
        payload = rest;
        match tag {
            ENTRY_RETIRED_TOTAL => {
                let activity_id = read_text(&mut payload)?;
                let scene_id = read_text(&mut payload)?;
                let count = varint(&mut payload)?;
                let cents = varint(&mut payload)? as i64;
                each(Entry::RetiredTotal { activity_id, scene_id, used: StockUsed { count, cents } });
                continue;
            }
            ENTRY_RETIRED_USER => {
                let activity_id = read_text(&mut payload)?;
                let act_id = varint(&mut payload)? as i64;
                each(Entry::RetiredUser { activity_id, act_id });
                continue;
            }
            _ => {}
        }
        let number = varint(&mut payload)?;
        let entry = match tag {
            ENTRY_PUT => {
                let length = usize::try_from(number).ok().filter(|&n| n <= payload.len()).ok_or("record overruns")?;
                let (bytes, rest) = payload.split_at(length);
                payload = rest;
                Entry::Put(GrantRecord::decode(bytes).map_err(|error| error.to_string())?)
            }
            ENTRY_VOUCH => {
                let length = usize::try_from(number).ok().filter(|&n| n <= payload.len()).ok_or("name overruns")?;
                let (bytes, rest) = payload.split_at(length);
                payload = rest;
                Entry::Vouch(String::from_utf8(bytes.to_vec()).map_err(|error| error.to_string())?)
            }
            ENTRY_CREDITED => Entry::Credited(number),
            ENTRY_PARK => Entry::Park(number),
            ENTRY_UNPARK => Entry::Unpark(number),
            ENTRY_RETIRE => Entry::Retire(number),
            other => return Err(format!("unknown entry tag {other}")),
        };
        each(entry);
    }
    Ok(())
}

/// The log's payloads when it is rewritten: the vouches, then one entry per record (a claimed
/// token is written pending: claims are not logged) and one per parked token, a few thousand
/// records per frame.
fn compact_payloads(state: &State) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let mut payload = Vec::new();
    for activity_id in &state.vouched {
        vouch_entry(&mut payload, activity_id);
    }
    let mut entries = 0;
    let mut flush = |payload: &mut Vec<u8>, payloads: &mut Vec<Vec<u8>>| {
        entries += 1;
        if entries % REWRITE_FRAME_ENTRIES == 0 {
            payloads.push(std::mem::take(payload));
        }
    };
    for (activity_id, scenes) in &state.retired {
        for (scene_id, used) in scenes.iter().filter(|(scene_id, _)| scene_id.as_str() != ACTIVITY_TOTAL) {
            retired_total_entry(&mut payload, activity_id, scene_id, *used);
            flush(&mut payload, &mut payloads);
        }
    }
    for (activity_id, users) in &state.retired_users {
        for &act_id in users.keys() {
            retired_user_entry(&mut payload, activity_id, act_id);
            flush(&mut payload, &mut payloads);
        }
    }
    let mut seqs: Vec<u64> = state.slots.keys().copied().collect();
    seqs.sort_unstable();
    for chunk in seqs.chunks(REWRITE_FRAME_RECORDS) {
        for seq in chunk {
            let mut record = state.slots[seq].record(*seq);
            if record.status() == TokenStatus::Processing {
                record.status = TokenStatus::Pending.code();
            }
            put_entry(&mut payload, &record);
            if state.parked.contains(seq) {
                seq_entry(&mut payload, ENTRY_PARK, *seq);
            }
        }
        payloads.push(std::mem::take(&mut payload));
    }
    if !payload.is_empty() {
        payloads.push(payload);
    }
    payloads
}

/// Opens the log, replays it (a torn last frame is cut) and, when it is mostly status entries,
/// rewrites it. Returns the state and the file positioned for appending.
fn open_log(data_dir: &Path) -> Result<(State, File), StoreError> {
    journal::refuse_old_format(data_dir, "tokens.redb", LOG_FILE_NAME).map_err(StoreError::Unavailable)?;
    let path = data_dir.join(LOG_FILE_NAME);
    let mut state = State { next_seq: 1, ..State::default() };
    let mut file = journal::open(&path, LOG_MAGIC, |payload| decode_entries(payload, |entry| state.replay(entry)))
        .map_err(StoreError::Unavailable)?;
    // Seqs retired later in the log are still in the retirement order: drop them.
    let State { credited_order, slots, .. } = &mut state;
    credited_order.retain(|(_, seq)| slots.get(seq).is_some_and(|slot| slot.status() == TokenStatus::Credited));
    let records = state.slots.len() as u64;
    if state.log_entries > 2 * records + 1024 {
        let io = |error: std::io::Error| StoreError::Unavailable(format!("`{}`: {error}", path.display()));
        journal::rewrite(&path, LOG_MAGIC, compact_payloads(&state).into_iter()).map_err(io)?;
        tracing::info!(path = %path.display(), entries_before = state.log_entries, records, "token log rewritten");
        let retired = state.retired.values().map(|scenes| scenes.len() as u64).sum::<u64>()
            + state.retired_users.values().map(|users| users.len() as u64).sum::<u64>();
        state.log_entries = records + state.parked.len() as u64 + state.vouched.len() as u64 + retired;
        file = OpenOptions::new().append(true).open(&path).map_err(io)?;
    }
    Ok((state, file))
}

impl EmbeddedStore {
    /// Forgets the nonces whose time has passed ([`super::nonces::NonceMemory::forget_expired`]).
    pub fn forget_expired_nonces(&self, now_ms: u64) -> bool {
        self.shared.nonces.lock().forget_expired(now_ms)
    }

    /// Whether this is the first use of a signed request's nonce (see [`super::nonces`]).
    pub fn first_use_of_nonce(
        &self,
        app_id: i64,
        nonce: &str,
        timestamp_s: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        self.shared.nonces.lock().first_use(app_id, nonce, timestamp_s, now_ms, ttl_ms)
    }

    /// Opens (or creates) `DATA/tokens.log`, replays it and starts the committer thread, which
    /// stops when the last handle is dropped.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(unavailable)?;
        let (state, file) = open_log(data_dir)?;
        let (durable_group, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            durable_group,
            failed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            nonces: parking_lot::Mutex::new(super::nonces::NonceMemory::default()),
            opened: std::time::Instant::now(),
        });
        let (sender, receiver) = mpsc::channel(COMMIT_QUEUE_OPS_MAX);
        let committer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hongbao-store-commit".into())
            .spawn(move || run_committer(&committer_shared, file, receiver))
            .map_err(unavailable)?;
        let committer = Arc::new(Committer { ops: Some(sender), thread: Some(thread) });
        let packets = super::packets::PacketBook::open(data_dir)?;
        Ok(EmbeddedStore { shared, committer, packets })
    }

    /// The group red packets this store holds.
    pub(super) fn packets(&self) -> &super::packets::PacketBook {
        &self.packets
    }

    /// Groups written since open: under concurrent load far fewer than operations, because each
    /// carries a whole group.
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(failed_error());
        }
        Ok(())
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        self.check()?;
        let (reply, answer) = oneshot::channel();
        let ops = self.committer.ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores a new grant, unless its order number is stored already (then the original comes
    /// back) or the stock cannot cover it (then nothing is stored); see [`LedgerCheck`] for
    /// `check`.
    pub async fn commit_grant(
        &self,
        record: GrantRecord,
        limits: StockLimits,
        check: LedgerCheck,
    ) -> Result<GrantCommit, StoreError> {
        self.submit(|reply| WriteOp::Grant { record, limits, check, reply }).await
    }

    /// Takes up to `max` tokens from the front of the crediting queue and marks them processing.
    /// Tokens already processing (claimed before a crash) are taken again.
    pub async fn claim_queue(&self, max: usize) -> Result<Vec<GrantRecord>, StoreError> {
        // An empty queue costs a read, not a write transaction and its fsync.
        if self.queue_len()? == 0 {
            return Ok(Vec::new());
        }
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

    /// Readies the stock figures a scene's plugins may ask for: nothing to do, the embedded
    /// store answers them from memory (see [`crate::store::Store::prepare_plugin_stock`]).
    pub async fn refresh_plugin_stock(&self, _activity_id: &str, _scene_id: &str) {}

    /// How many tokens are parked.
    pub fn parked_len(&self) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.shared.state.read().parked.len() as u64)
    }

    /// The stored grant with this order number. A grant whose group is still being written is
    /// returned once it is durable, never before.
    pub async fn lookup(&self, activity_id: &str, order_no: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.check()?;
        let (record, group) = {
            let state = self.shared.state.read();
            let Some((seq, slot)) =
                state.find(activity_id, order_no).and_then(|seq| Some((seq, state.slots.get(&seq)?)))
            else {
                return Ok(None);
            };
            (slot.record(seq), slot.group)
        };
        if *self.shared.durable_group.borrow() < group {
            let mut durable = self.shared.durable_group.subscribe();
            let shared = &self.shared;
            durable
                .wait_for(|&durable| durable >= group || shared.failed.load(Ordering::Acquire))
                .await
                .map_err(|_| StoreError::Closed)?;
            self.check()?;
        }
        Ok(Some(record))
    }

    /// The user's tokens that are not yet credited, oldest first.
    pub fn unsettled_for_user(&self, act_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        self.check()?;
        let state = self.shared.state.read();
        let unsettled = state.unsettled_of(act_id);
        // Answering with part of the list would show a wrong balance: fail loudly instead.
        if unsettled.len() > USER_UNSETTLED_READ_MAX {
            return Err(StoreError::TooManyUnsettled { act_id, max: USER_UNSETTLED_READ_MAX });
        }
        Ok(unsettled.iter().filter_map(|&seq| Some(state.slots.get(&seq)?.record(seq))).collect())
    }

    /// The keys of the user's oldest `USER_UNSETTLED_READ_MAX` unsettled tokens.
    pub fn unsettled_keys_prefix(&self, act_id: i64) -> Result<Vec<GrantKey>, StoreError> {
        self.check()?;
        let state = self.shared.state.read();
        Ok(state
            .unsettled_of(act_id)
            .iter()
            .take(USER_UNSETTLED_READ_MAX)
            .filter_map(|&seq| Some(state.slots.get(&seq)?.key(seq)))
            .collect())
    }

    /// Up to `limit` of the user's tokens strictly older than `before`, newest first.
    pub fn user_tokens(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.check()?;
        let state = self.shared.state.read();
        let Some(tokens) = state.user_tokens.get(&act_id) else { return Ok(Vec::new()) };
        let seqs = match before {
            Some(position) => tokens.below(&(position.time_ms, Arc::from(position.flow_id.as_str()))),
            None => tokens.iter(),
        };
        Ok(seqs.rev().take(limit).filter_map(|(_, seq)| Some(state.slots.get(seq)?.record(*seq))).collect())
    }

    /// How many tokens wait in the crediting queue.
    pub fn queue_len(&self) -> Result<u64, StoreError> {
        self.check()?;
        Ok(self.shared.state.read().queue.len() as u64)
    }

    /// Stock used by a scene, or by the whole activity when `scene_id` is `None`.
    pub fn stock_used(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, StoreError> {
        self.check()?;
        Ok(self.shared.state.read().stock(activity_id, scene_id.unwrap_or(ACTIVITY_TOTAL)))
    }

    /// Retires records credited `retain_ms` or more ago (see [`super::Store::retire_credited`]).
    pub async fn retire_credited(&self, retain_ms: u64, max: usize) -> Result<usize, StoreError> {
        {
            let state = self.shared.state.read();
            let now_ms = self.shared.opened.elapsed().as_millis() as u64;
            // Nothing due costs a read, not a journal group.
            if state.credited_order.front().is_none_or(|&(at, _)| now_ms.saturating_sub(at) < retain_ms) {
                return Ok(0);
            }
        }
        self.submit(|reply| WriteOp::Retire { retain_ms, max, reply }).await
    }

    /// What one activity's retired records add up to, per scene.
    pub fn retired_of(&self, activity_id: &str) -> Result<HashMap<String, StockUsed>, StoreError> {
        self.check()?;
        let state = self.shared.state.read();
        let Some(scenes) = state.retired.get(activity_id) else { return Ok(HashMap::new()) };
        Ok(scenes.iter().filter(|(scene, _)| scene.as_str() != ACTIVITY_TOTAL).map(|(s, u)| (s.clone(), *u)).collect())
    }

    /// Every stored grant of one activity in order-number order, and whether each is parked;
    /// for reconciliation and tests, never on the grant path.
    pub fn grants_of(&self, activity_id: &str) -> Result<Vec<(GrantRecord, bool)>, StoreError> {
        self.check()?;
        let state = self.shared.state.read();
        let Some(orders) = state.by_key.get(activity_id) else { return Ok(Vec::new()) };
        let mut records: Vec<(GrantRecord, bool)> = orders
            .iter()
            .filter_map(|&seq| Some((seq, state.slots.get(&seq)?)))
            .map(|(seq, slot)| {
                let record = slot.record(seq);
                let parked = record.status() != TokenStatus::Credited && state.parked.contains(&record.seq);
                (record, parked)
            })
            .collect();
        records.sort_unstable_by(|a, b| a.0.order_no.cmp(&b.0.order_no));
        Ok(records)
    }
}

/// A group applied and written, waiting for its fsync.
struct Written {
    group: u64,
    /// Whether the group appended anything (a group of claims alone appends nothing).
    appended: bool,
    outcomes: Vec<Outcome>,
}

/// Groups written but not yet fsynced, at most. While the sync thread fsyncs, the committer
/// applies and writes the next groups, and one fsync then covers them all: durability costs one
/// fsync per round, not one per group, and a grant waits about one fsync, not two.
const GROUPS_AHEAD_OF_SYNC_MAX: usize = 64;

fn run_committer(shared: &Arc<Shared>, file: File, mut receiver: mpsc::Receiver<WriteOp>) {
    let file = Arc::new(file);
    let (to_sync, written) = std::sync::mpsc::sync_channel::<Written>(GROUPS_AHEAD_OF_SYNC_MAX);
    let syncer = {
        let (shared, file) = (shared.clone(), file.clone());
        std::thread::Builder::new().name("hongbao-store-sync".into()).spawn(move || run_syncer(&shared, &file, written))
    };
    let syncer = match syncer {
        Ok(syncer) => syncer,
        Err(error) => {
            tracing::error!(%error, "could not start the token log's sync thread");
            shared.failed.store(true, Ordering::Release);
            while let Some(op) = receiver.blocking_recv() {
                refuse(op);
            }
            return;
        }
    };
    let mut group = Vec::with_capacity(GROUP_COMMIT_OPS_MAX);
    let mut payload = Vec::with_capacity(1 << 20);
    let mut out = Vec::with_capacity(1 << 20);
    let mut group_number = 0u64;
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < GROUP_COMMIT_OPS_MAX {
            match receiver.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        if shared.failed.load(Ordering::Acquire) {
            for op in group.drain(..) {
                refuse(op);
            }
            continue;
        }
        group_number += 1;
        payload.clear();
        let mut outcomes = Vec::with_capacity(group.len());
        {
            let now_ms = shared.opened.elapsed().as_millis() as u64;
            let mut state = shared.state.write();
            for op in group.drain(..) {
                outcomes.push(apply(&mut state, op, &mut payload, group_number, now_ms));
            }
        }
        let appended = !payload.is_empty();
        if appended {
            out.clear();
            journal::frame(&mut out, &payload);
            if let Err(error) = (&*file).write_all(&out) {
                fail(shared, &error, outcomes);
                continue;
            }
        }
        if to_sync.send(Written { group: group_number, appended, outcomes }).is_err() {
            break;
        }
        // A large group's buffers are not kept for the next one.
        payload.shrink_to(1 << 20);
        out.shrink_to(1 << 20);
    }
    drop(to_sync);
    let _ = syncer.join();
}

/// Fsyncs written groups, a round at a time, and answers their callers once they are durable.
fn run_syncer(shared: &Shared, file: &File, written: std::sync::mpsc::Receiver<Written>) {
    let mut round = Vec::with_capacity(GROUPS_AHEAD_OF_SYNC_MAX);
    while let Ok(first) = written.recv() {
        round.push(first);
        round.extend(written.try_iter());
        let synced = if shared.failed.load(Ordering::Acquire) {
            Err(std::io::Error::other("an earlier write failed"))
        } else if round.iter().any(|written| written.appended) {
            journal::sync(file, JournalKind::Store)
        } else {
            Ok(())
        };
        match synced {
            Ok(()) => {
                let last = round.last().map_or(0, |written| written.group);
                shared.durable_group.send_replace(last);
                shared.commits.fetch_add(1, Ordering::Relaxed);
                for written in round.drain(..) {
                    for outcome in written.outcomes {
                        outcome.send(None);
                    }
                }
            }
            Err(error) => {
                for written in round.drain(..) {
                    fail(shared, &error, written.outcomes);
                }
            }
        }
    }
}

/// Marks the store failed (the memory may hold what the disk does not) and answers `outcomes`
/// with the error.
fn fail(shared: &Shared, error: &std::io::Error, outcomes: Vec<Outcome>) {
    if !shared.failed.swap(true, Ordering::AcqRel) {
        tracing::error!(%error, "token log write failed; the store refuses all operations until a restart");
    }
    // Wake lookups waiting for a group: they see the failure.
    shared.durable_group.send_modify(|_| {});
    let message = format!("token log write failed: {error}");
    for outcome in outcomes {
        outcome.send(Some(&message));
    }
}

/// Answers an operation that arrived after the log failed.
fn refuse(op: WriteOp) {
    let error = failed_error;
    // Every arm answers the same error; the reply types differ.
    match op {
        WriteOp::Grant { reply, .. } => drop(reply.send(Err(error()))),
        WriteOp::ClaimQueue { reply, .. } | WriteOp::ClaimKeys { reply, .. } => drop(reply.send(Err(error()))),
        WriteOp::Complete { reply, .. } | WriteOp::Park { reply, .. } => drop(reply.send(Err(error()))),
        WriteOp::Restore { reply, .. } => drop(reply.send(Err(error()))),
        WriteOp::Requeue { reply } | WriteOp::RequeueKeys { reply, .. } => drop(reply.send(Err(error()))),
        WriteOp::Retire { reply, .. } => drop(reply.send(Err(error()))),
    }
}

/// A reply computed while applying the group, sent only once the group is durable.
enum Outcome {
    Grant(Reply<GrantCommit>, GrantCommit),
    Records(Reply<Vec<GrantRecord>>, Vec<GrantRecord>),
    Unit(Reply<()>),
    Restore(Reply<RestoreOutcome>, RestoreOutcome),
    Count(Reply<u64>, u64),
    Retired(Reply<usize>, usize),
}

impl Outcome {
    fn send(self, failure: Option<&str>) {
        fn answer<T>(reply: Reply<T>, value: T, failure: Option<&str>) {
            let _ = reply.send(match failure {
                Some(message) => Err(StoreError::Unavailable(message.to_owned())),
                None => Ok(value),
            });
        }
        match self {
            Outcome::Grant(reply, value) => answer(reply, value, failure),
            Outcome::Records(reply, value) => answer(reply, value, failure),
            Outcome::Unit(reply) => answer(reply, (), failure),
            Outcome::Restore(reply, value) => answer(reply, value, failure),
            Outcome::Count(reply, value) => answer(reply, value, failure),
            Outcome::Retired(reply, value) => answer(reply, value, failure),
        }
    }
}

/// Applies one operation of the group being committed at `now_ms` (ms since open).
fn apply(state: &mut State, op: WriteOp, log: &mut Vec<u8>, group: u64, now_ms: u64) -> Outcome {
    match op {
        WriteOp::Grant { record, limits, check, reply } => {
            Outcome::Grant(reply, grant(state, record, limits, check, log, group))
        }
        WriteOp::ClaimQueue { max, reply } => {
            let seqs: Vec<u64> = state.queue.iter().take(max).copied().collect();
            Outcome::Records(reply, claim(state, seqs))
        }
        WriteOp::ClaimKeys { keys, reply } => {
            let seqs = keys.iter().filter_map(|key| state.find(&key.activity_id, &key.order_no)).collect();
            Outcome::Records(reply, claim(state, seqs))
        }
        WriteOp::Complete { keys, reply } => {
            for key in &keys {
                if let Some(seq) = state.find(&key.activity_id, &key.order_no)
                    && state.mark_credited(seq, now_ms)
                {
                    seq_entry(log, ENTRY_CREDITED, seq);
                    state.log_entries += 1;
                }
            }
            Outcome::Unit(reply)
        }
        WriteOp::Restore { record, credited, reply } => {
            Outcome::Restore(reply, restore(state, record, credited, log, group, now_ms))
        }
        WriteOp::Retire { retain_ms, max, reply } => {
            Outcome::Retired(reply, retire(state, retain_ms, max, log, now_ms))
        }
        WriteOp::Park { keys, reply } => {
            for key in &keys {
                if state.park(key.seq) {
                    seq_entry(log, ENTRY_PARK, key.seq);
                    state.log_entries += 1;
                }
            }
            Outcome::Unit(reply)
        }
        WriteOp::Requeue { reply } => {
            let seqs: Vec<u64> = state.parked.iter().copied().collect();
            Outcome::Count(reply, unpark(state, seqs, log))
        }
        WriteOp::RequeueKeys { keys, reply } => {
            Outcome::Count(reply, unpark(state, keys.iter().map(|key| key.seq).collect(), log))
        }
    }
}

fn grant(
    state: &mut State,
    mut record: GrantRecord,
    limits: StockLimits,
    check: LedgerCheck,
    log: &mut Vec<u8>,
    group: u64,
) -> GrantCommit {
    if let Some(seq) = state.find(&record.activity_id, &record.order_no) {
        return GrantCommit::Replayed(state.slots[&seq].record(seq));
    }
    match check {
        LedgerCheck::Skipped if !state.vouched.contains(&record.activity_id) => return GrantCommit::CheckLedger,
        LedgerCheck::Skipped | LedgerCheck::New if state.has_retired(&record.activity_id, record.act_id) => {
            return GrantCommit::CheckRetired;
        }
        LedgerCheck::Done { activity_clean: true } if !state.vouched.contains(&record.activity_id) => {
            vouch_entry(log, &record.activity_id);
            state.log_entries += 1;
            state.vouched.insert(record.activity_id.clone());
        }
        _ => {}
    }
    let scene_used = state.stock(&record.activity_id, &record.scene_id);
    let activity_used = state.stock(&record.activity_id, ACTIVITY_TOTAL);
    let amount = record.amount_cents;
    if limits.scene_count_max.is_some_and(|max| scene_used.count >= max) {
        return GrantCommit::OutOfStock(StockOut::SceneCount);
    }
    if limits.scene_budget_cents.is_some_and(|max| scene_used.cents.checked_add(amount).is_none_or(|total| total > max))
    {
        return GrantCommit::OutOfStock(StockOut::SceneBudget);
    }
    if activity_used.cents.checked_add(amount).is_none_or(|total| total > limits.activity_budget_cents) {
        return GrantCommit::OutOfStock(StockOut::ActivityBudget);
    }
    record.seq = state.next_seq;
    record.status = TokenStatus::Pending.code();
    record.queue_id.clear();
    put_entry(log, &record);
    state.log_entries += 1;
    state.insert(record.clone(), group);
    GrantCommit::Granted(record)
}

fn restore(
    state: &mut State,
    mut record: GrantRecord,
    credited: bool,
    log: &mut Vec<u8>,
    group: u64,
    now_ms: u64,
) -> RestoreOutcome {
    // A credited token of a user with retired records of the activity was retired (the store
    // keeps every token it was given until the ledger has it and the retention passed), so it
    // is present in the ledger and counted in the stock already.
    if state.find(&record.activity_id, &record.order_no).is_some()
        || (credited && state.has_retired(&record.activity_id, record.act_id))
    {
        return RestoreOutcome::AlreadyPresent;
    }
    record.seq = state.next_seq;
    record.status = if credited { TokenStatus::Credited } else { TokenStatus::Pending }.code();
    record.queue_id.clear();
    put_entry(log, &record);
    state.log_entries += 1;
    let seq = record.seq;
    state.insert(record, group);
    if credited {
        state.credited_order.push_back((now_ms, seq));
    }
    RestoreOutcome::Restored
}

/// Retires up to `max` records credited `retain_ms` or more before `now_ms`, logging each.
fn retire(state: &mut State, retain_ms: u64, max: usize, log: &mut Vec<u8>, now_ms: u64) -> usize {
    let mut retired = 0;
    while retired < max {
        let Some(&(credited_ms, seq)) = state.credited_order.front() else { break };
        if now_ms.saturating_sub(credited_ms) < retain_ms {
            break;
        }
        state.credited_order.pop_front();
        if state.retire(seq) {
            seq_entry(log, ENTRY_RETIRE, seq);
            state.log_entries += 1;
            retired += 1;
        }
    }
    if retired > 0 {
        state.shrink();
    }
    retired
}

/// Marks the tokens processing (in memory only: after a restart a claimed token is pending
/// again, which is what it is until the ledger has it) and returns those not yet credited.
fn claim(state: &mut State, seqs: Vec<u64>) -> Vec<GrantRecord> {
    let mut claimed = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let Some(slot) = state.slots.get_mut(&seq) else { continue };
        match slot.status() {
            TokenStatus::Credited => continue,
            TokenStatus::Processing => {}
            TokenStatus::Pending => slot.status = TokenStatus::Processing.code(),
        }
        claimed.push(slot.record(seq));
    }
    claimed
}

fn unpark(state: &mut State, seqs: Vec<u64>, log: &mut Vec<u8>) -> u64 {
    let mut moved = 0;
    for seq in seqs {
        if state.unpark(seq) {
            seq_entry(log, ENTRY_UNPARK, seq);
            state.log_entries += 1;
            moved += 1;
        }
    }
    moved
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

    const CHECKED: LedgerCheck = LedgerCheck::Done { activity_clean: false };

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    fn budget(cents: i64) -> StockLimits {
        StockLimits { activity_budget_cents: cents, ..StockLimits::default() }
    }

    // Proves concurrent grants share commits (group commit): 400 grants in flight at once take
    // far fewer than 400 fsynced groups, and every one of them is stored.
    #[test]
    fn concurrent_grants_share_commits() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let before = store.commit_count();
            let grants: Vec<_> = (0..400)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move { store.commit_grant(record(n), budget(1_000_000), CHECKED).await })
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

    // Proves stock is checked in the same step as the grant: with a count of 5, exactly five of
    // twenty concurrent grants are stored, and the activity budget bounds the cents.
    #[test]
    fn stock_is_never_oversold() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let limits =
                StockLimits { activity_budget_cents: 1_000, scene_count_max: Some(5), scene_budget_cents: None };
            let grants: Vec<_> = (0..20)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move { store.commit_grant(record(n), limits, CHECKED).await.unwrap() })
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
            assert!(matches!(
                store.commit_grant(record(100), budget(55), CHECKED).await.unwrap(),
                GrantCommit::OutOfStock(StockOut::ActivityBudget)
            ));
        });
    }

    // Proves the log brings back every record, status, parked token, stock count and the next
    // seq after a reopen, and that the rewrite at open keeps the same state.
    #[test]
    fn reopen_replays_the_log() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            for n in 0..6 {
                store.commit_grant(record(n), budget(1_000), CHECKED).await.unwrap();
            }
            let claimed = store.claim_queue(3).await.unwrap();
            assert_eq!(claimed.len(), 3);
            store.complete(claimed.iter().take(2).map(GrantRecord::key).collect()).await.unwrap();
            let parked = store.claim_keys(vec![record_key(&store, 5).await]).await.unwrap();
            store.park(parked.iter().map(GrantRecord::key).collect()).await.unwrap();
            let expect = |store: &EmbeddedStore| {
                assert_eq!(store.queue_len().unwrap(), 3);
                assert_eq!(store.parked_len().unwrap(), 1);
                assert_eq!(store.stock_used("a", None).unwrap(), StockUsed { count: 6, cents: 60 });
                let grants = store.grants_of("a").unwrap();
                let credited = grants.iter().filter(|(r, _)| r.status() == TokenStatus::Credited).count();
                assert_eq!(credited, 2);
                assert_eq!(grants.iter().filter(|(_, parked)| *parked).count(), 1);
                assert_eq!(store.unsettled_for_user(0).unwrap().len(), 0, "user 0's token is credited");
                assert_eq!(store.unsettled_for_user(5).unwrap().len(), 1, "user 5's token is parked, still owed");
            };
            expect(&store);
            drop(store);
            let store = EmbeddedStore::open(dir.path()).unwrap();
            expect(&store);
            let GrantCommit::Granted(next) = store.commit_grant(record(7), budget(1_000), CHECKED).await.unwrap()
            else {
                panic!("not granted")
            };
            assert_eq!(next.seq, 7, "seqs go on after the replayed ones");
            // Many status entries make the next open rewrite the log; the state stays the same.
            for _ in 0..700 {
                store.requeue_parked().await.unwrap();
                let key = record_key(&store, 5).await;
                store.park(vec![key]).await.unwrap();
            }
            drop(store);
            let before = std::fs::metadata(dir.path().join(LOG_FILE_NAME)).unwrap().len();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let after = std::fs::metadata(dir.path().join(LOG_FILE_NAME)).unwrap().len();
            assert!(after < before / 2, "rewritten: {before} → {after} bytes");
            assert_eq!(store.parked_len().unwrap(), 1);
            assert_eq!(store.queue_len().unwrap(), 4, "three from before, and the seventh grant");
            assert_eq!(store.stock_used("a", None).unwrap(), StockUsed { count: 7, cents: 70 });
        });
    }

    // Proves an activity's and a scene's shared ids leave with their last record (group red
    // packets are activities of their own: ids kept after their records retired would grow with
    // them), and that ids still held stay.
    #[test]
    fn retired_records_let_their_shared_ids_go() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let clean = LedgerCheck::Done { activity_clean: true };
            let other = |n| GrantRecord { activity_id: "b".into(), scene_id: "t".into(), ..record(n) };
            store.commit_grant(record(1), budget(1_000), clean).await.unwrap();
            store.commit_grant(other(2), budget(1_000), clean).await.unwrap();
            assert_eq!(store.shared.state.read().strings.len(), 4, "a, s, b and t");
            let key = store.lookup("b", &other(2).order_no).await.unwrap().unwrap().key();
            store.complete(vec![key]).await.unwrap();
            assert_eq!(store.retire_credited(0, 10).await.unwrap(), 1);
            assert_eq!(store.shared.state.read().strings.len(), 2, "b and t left with their last record");
            let kept = store.lookup("a", &record(1).order_no).await.unwrap().unwrap();
            assert_eq!((kept.activity_id.as_str(), kept.scene_id.as_str()), ("a", "s"));
        });
    }

    // Proves retiring takes only records credited for the retention out of the store (lookup,
    // user list, activity grants) while their stock stays counted and their totals and users are
    // kept; that a grant of a retired user the store cannot find asks the ledger, even where the
    // store vouches (`Skipped`) or the caller does (`New`); that a restored retired token is not
    // counted again; and that all of it survives a reopen and a log rewrite.
    #[test]
    fn retired_records_leave_the_store_but_not_the_stock() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let clean = LedgerCheck::Done { activity_clean: true };
            for n in 1..=3 {
                store.commit_grant(record(n), budget(1_000), clean).await.unwrap();
            }
            let credited = vec![record_key(&store, 1).await, record_key(&store, 2).await];
            store.complete(credited).await.unwrap();
            assert_eq!(store.retire_credited(60_000, 10).await.unwrap(), 0, "nothing credited a minute ago");
            assert_eq!(store.retire_credited(0, 1).await.unwrap(), 1, "at most `max`");
            assert_eq!(store.retire_credited(0, 10).await.unwrap(), 1);
            assert_eq!(store.retire_credited(0, 10).await.unwrap(), 0, "the pending record stays");
            // `held`: records still in the store; `used`: grants counted in the stock.
            let check = |store: &EmbeddedStore, held: usize, used: u64| {
                assert!(store.shared.state.read().find("a", &record(1).order_no).is_none());
                assert!(store.user_tokens(1, None, 10).unwrap().is_empty());
                assert_eq!(store.grants_of("a").unwrap().len(), held);
                assert_eq!(store.stock_used("a", Some("s")).unwrap().count, used);
                assert_eq!(
                    store.retired_of("a").unwrap(),
                    HashMap::from([("s".into(), StockUsed { count: 2, cents: 20 })])
                );
            };
            check(&store, 1, 3);
            let grant = |n, check| store.commit_grant(record(n), budget(1_000), check);
            assert_eq!(grant(1, LedgerCheck::Skipped).await.unwrap(), GrantCommit::CheckRetired, "a replay?");
            assert_eq!(grant(2, LedgerCheck::New).await.unwrap(), GrantCommit::CheckRetired);
            assert!(matches!(grant(4, LedgerCheck::Skipped).await.unwrap(), GrantCommit::Granted(_)), "user 4 is new");
            let restored = store.restore(GrantRecord { status: 8, ..record(1) }, true).await.unwrap();
            assert_eq!(restored, RestoreOutcome::AlreadyPresent, "a retired token is in the ledger and the stock");
            assert_eq!(store.stock_used("a", None).unwrap().count, 4);
            drop(store);

            let store = EmbeddedStore::open(dir.path()).unwrap();
            check(&store, 2, 4);
            assert_eq!(
                store.commit_grant(record(1), budget(1_000), LedgerCheck::Skipped).await.unwrap(),
                GrantCommit::CheckRetired,
                "the retired user is replayed from the log"
            );
            let payloads = compact_payloads(&store.shared.state.read());
            drop(store);
            journal::rewrite(&dir.path().join(LOG_FILE_NAME), LOG_MAGIC, payloads.into_iter()).unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            check(&store, 2, 4);
            assert_eq!(store.stock_used("a", None).unwrap(), StockUsed { count: 4, cents: 40 }, "after a rewrite");
            assert_eq!(
                store.commit_grant(record(2), budget(1_000), LedgerCheck::Skipped).await.unwrap(),
                GrantCommit::CheckRetired,
                "a rewritten log keeps the retired users"
            );
            // The retired records' stock still bounds the activity: 40 of 40 cents used.
            assert_eq!(
                store.commit_grant(record(5), budget(40), CHECKED).await.unwrap(),
                GrantCommit::OutOfStock(StockOut::ActivityBudget)
            );
        });
    }

    async fn record_key(store: &EmbeddedStore, n: i64) -> GrantKey {
        store.lookup("a", &record(n).order_no).await.unwrap().unwrap().key()
    }

    // Proves a frame torn by a crash mid-write is cut off at open and the frames before it
    // stay; garbage that passes no checksum is never read as tokens.
    #[test]
    fn torn_last_frame_is_cut() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.commit_grant(record(1), budget(1_000), CHECKED).await.unwrap();
            store.commit_grant(record(2), budget(1_000), CHECKED).await.unwrap();
            drop(store);
            let path = dir.path().join(LOG_FILE_NAME);
            let whole = std::fs::read(&path).unwrap();
            std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert!(store.lookup("a", &record(1).order_no).await.unwrap().is_some());
            assert!(store.lookup("a", &record(2).order_no).await.unwrap().is_none(), "the torn grant is gone");
            assert_eq!(store.stock_used("a", None).unwrap().count, 1);
            let GrantCommit::Granted(again) = store.commit_grant(record(2), budget(1_000), CHECKED).await.unwrap()
            else {
                panic!("not granted")
            };
            assert_eq!(again.seq, 2);
            drop(store);
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(store.stock_used("a", None).unwrap().count, 2, "appends after the cut are read back");
        });
    }

    // Proves the store vouches for an activity only after being told the ledger holds none of
    // its red packets, keeps the vouch across a reopen and a log rewrite, and loses it with the
    // log file.
    #[test]
    fn vouch_is_kept_in_the_log() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let skipped = |n| store.commit_grant(record(n), budget(1_000), LedgerCheck::Skipped);
            assert_eq!(skipped(1).await.unwrap(), GrantCommit::CheckLedger);
            assert!(store.lookup("a", &record(1).order_no).await.unwrap().is_none(), "nothing written");
            let dirty = LedgerCheck::Done { activity_clean: false };
            assert!(matches!(
                store.commit_grant(record(1), budget(1_000), dirty).await.unwrap(),
                GrantCommit::Granted(_)
            ));
            assert_eq!(skipped(2).await.unwrap(), GrantCommit::CheckLedger, "not vouched: the ledger was dirty");
            let clean = LedgerCheck::Done { activity_clean: true };
            assert!(matches!(
                store.commit_grant(record(2), budget(1_000), clean).await.unwrap(),
                GrantCommit::Granted(_)
            ));
            assert!(matches!(skipped(3).await.unwrap(), GrantCommit::Granted(_)));
            drop(store);
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let skipped = |n| store.commit_grant(record(n), budget(1_000), LedgerCheck::Skipped);
            assert!(matches!(skipped(4).await.unwrap(), GrantCommit::Granted(_)), "the vouch is replayed");
            let mut state = State::default();
            state.vouched.insert("a".into());
            drop(store);
            journal::rewrite(&dir.path().join(LOG_FILE_NAME), LOG_MAGIC, compact_payloads(&state).into_iter()).unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert!(
                matches!(
                    store.commit_grant(record(5), budget(1_000), LedgerCheck::Skipped).await.unwrap(),
                    GrantCommit::Granted(_)
                ),
                "a rewritten log keeps the vouch"
            );
            drop(store);
            std::fs::remove_file(dir.path().join(LOG_FILE_NAME)).unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(
                store.commit_grant(record(6), budget(1_000), LedgerCheck::Skipped).await.unwrap(),
                GrantCommit::CheckLedger
            );
        });
    }

    // Proves a file that is not a token log is refused with its path, not replayed as empty.
    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE_NAME), b"not a log at all").unwrap();
        let error = EmbeddedStore::open(dir.path()).err().expect("refused").to_string();
        assert!(error.contains(LOG_FILE_NAME) && error.contains("bad header"), "{error}");
    }
}
