//! Group red packets in the token store: each packet's definition (its shares, decided at send
//! time), who claimed which share, and whether it is closed and refunded.
//!
//! A grab is two steps, each atomic on its own: **claim** a share of the packet (here: at most
//! one per user, in one slot on a Cluster), then **grant** that share as a red packet of the
//! packet's activity `pk.{packet_id}` through the ordinary grant path of the store (the token,
//! the user's indexes and the crediting queue, in the grabber's shard). A host that dies between
//! the two leaves a claim without a token; the user's retried grab, or the refund at expiry,
//! grants it, so every claimed share is paid exactly once (the order number is the user's, so the
//! ledger cannot credit it twice either).
//!
//! A packet is refunded once: the refunder first **closes** it (no claim succeeds after that,
//! whatever any host's clock says), so the set of claims it reads is final, then writes the
//! refund entry in the ledger (its id `pr/{packet_id}` makes a second write a replay), then marks
//! the packet refunded here. A crash between any two steps repeats them, changing nothing twice.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use prost::Message as _;

use super::{Store, StoreError};
use crate::journal;

/// A group red packet as sent: immutable once stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PacketDef {
    /// Derived from the sending app, the sender and the send's request id.
    #[prost(string, tag = "1")]
    pub packet_id: String,
    /// Who paid for it.
    #[prost(int64, tag = "2")]
    pub sender_act_id: i64,
    /// The app it was sent through.
    #[prost(int64, tag = "3")]
    pub app_id: i64,
    /// The whole amount.
    #[prost(int64, tag = "4")]
    pub total_cents: i64,
    /// The shares in the order they are handed out; they sum to `total_cents`, each ≥ 1.
    #[prost(int64, repeated, tag = "5")]
    pub shares: Vec<i64>,
    /// `random` or `equal`.
    #[prost(string, tag = "6")]
    pub split: String,
    /// When it was sent.
    #[prost(uint64, tag = "7")]
    pub created_ms: u64,
    /// From then on nobody may grab, and the unclaimed shares go back to the sender.
    #[prost(uint64, tag = "8")]
    pub expires_at_ms: u64,
    /// The sender's words, shown on the grabbers' bills.
    #[prost(string, tag = "9")]
    pub greeting: String,
    /// Who may grab (the app vouches for the group); empty: anyone.
    #[prost(int64, repeated, tag = "10")]
    pub grabbers: Vec<i64>,
    /// The sender's idempotency key.
    #[prost(string, tag = "11")]
    pub request_id: String,
}

/// What the store holds of one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketState {
    /// As sent.
    pub def: PacketDef,
    /// Each claim, `(act_id, share index)`, in claim order.
    pub claims: Vec<(i64, u32)>,
    /// No more claims succeed.
    pub closed: bool,
    /// The refund the ledger has written (cents, possibly 0), once it is done.
    pub refunded_cents: Option<i64>,
}

/// The outcome of claiming a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This user now holds share `index`.
    New(u32),
    /// This user claimed share `index` before.
    Again(u32),
    /// Every share is claimed.
    Empty,
    /// The packet expired (or was closed for its refund).
    Expired,
    /// No such packet.
    Unknown,
}

/// The most packets one sweep takes at once.
pub const PACKETS_DUE_READ_MAX: usize = 64;

impl Store {
    /// Notes that a packet with this id may be sent and expires at `expires_at_ms`, before its
    /// money moves, so that a host dying between the ledger's debit and [`Store::packet_create`]
    /// still leaves the packet to the refund sweep.
    pub async fn packet_expect(&self, packet_id: &str, expires_at_ms: u64) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.packets().expect(packet_id, expires_at_ms).await,
            Store::Redis(s) => s.packet_expect(packet_id, expires_at_ms).await,
        }
    }

    /// Stores a packet; if one with its id is stored already, that one is answered and kept.
    /// `claims` (share indexes `0..claims.len()`, in order) are stored with it, atomically: a
    /// packet rebuilt from the ledger after the store lost it starts with the grabs the ledger
    /// has credited.
    pub async fn packet_create(&self, def: PacketDef, claims: Vec<i64>) -> Result<PacketDef, StoreError> {
        match self {
            Store::Embedded(s) => s.packets().create(def, claims).await,
            Store::Redis(s) => s.packet_create(def, claims).await,
        }
    }

    /// The packet with this id.
    pub async fn packet(&self, packet_id: &str) -> Result<Option<PacketState>, StoreError> {
        match self {
            Store::Embedded(s) => Ok(s.packets().get(packet_id)),
            Store::Redis(s) => s.packet(packet_id).await,
        }
    }

    /// Claims a share of `def` for `act_id` at `now_ms` (see [`Claim`]).
    /// `now_ms` is the embedded host's clock; Redis judges expiry by its own.
    pub async fn packet_claim(&self, def: &PacketDef, act_id: i64, now_ms: u64) -> Result<Claim, StoreError> {
        match self {
            Store::Embedded(s) => s.packets().claim(&def.packet_id, act_id, now_ms).await,
            Store::Redis(s) => s.packet_claim(def, act_id).await,
        }
    }

    /// Closes a packet for its refund and answers its final claims.
    pub async fn packet_close(&self, packet_id: &str) -> Result<Vec<(i64, u32)>, StoreError> {
        match self {
            Store::Embedded(s) => s.packets().close(packet_id).await,
            Store::Redis(s) => s.packet_close(packet_id).await,
        }
    }

    /// Records that the ledger holds the packet's refund, and stops sweeping it.
    pub async fn packet_refunded(&self, packet_id: &str, refund_cents: i64) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.packets().refunded(packet_id, refund_cents).await,
            Store::Redis(s) => s.packet_refunded(packet_id, refund_cents).await,
        }
    }

    /// Takes up to [`PACKETS_DUE_READ_MAX`] ids of packets expired and not yet refunded (also
    /// those only expected: see [`Store::packet_expect`]) for this host's refund sweep, and puts
    /// each back in the sweep `lease_ms` later: hosts of a fleet take disjoint packets, and a
    /// packet whose refund fails steps aside for a while instead of holding the front of the
    /// sweep. On Redis "expired" is judged by Redis's clock, one clock for the whole fleet;
    /// `now_ms` is the embedded host's.
    pub async fn packets_take_due(&self, now_ms: u64, lease_ms: u64) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Embedded(s) => Ok(s.packets().take_due(now_ms, lease_ms)),
            Store::Redis(s) => s.packets_take_due(lease_ms).await,
        }
    }

    /// The definition of a stored packet, which never changes (Redis hosts keep the ones they
    /// read: a grab reads no packet state but its claim).
    pub async fn packet_def(&self, packet_id: &str) -> Result<Option<std::sync::Arc<PacketDef>>, StoreError> {
        match self {
            Store::Embedded(s) => Ok(s.packets().def(packet_id).map(std::sync::Arc::new)),
            Store::Redis(s) => s.packet_def(packet_id).await,
        }
    }

    /// The expiry an expected (not stored) packet was named with, if the store knows it.
    pub async fn packet_expected_expiry(&self, packet_id: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Embedded(s) => Ok(s.packets().expected_expiry(packet_id)),
            Store::Redis(s) => s.packet_expected_expiry(packet_id).await,
        }
    }

    /// Forgets an expected packet whose send never reached the ledger.
    pub async fn packet_forget(&self, packet_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.packets().forget(packet_id).await,
            Store::Redis(s) => s.packet_forget(packet_id).await,
        }
    }
}

/// The embedded store's packets: in memory, kept durable in `DATA/packets.log` (a
/// [`journal`]). Every change is one frame, appended under the book's lock and applied; nobody
/// is answered until an fsync covers every frame appended before their answer was decided
/// (group commit: while one caller fsyncs, the frames of those queued behind it wait for the
/// next fsync, which covers them all at once). A failed write or fsync stops every later change
/// (503), since the memory may then be ahead of the disk.
#[derive(Clone)]
pub struct PacketBook {
    inner: Arc<Inner>,
}

struct Inner {
    book: parking_lot::Mutex<Book>,
    /// A handle on the journal for fsyncs, taken by one caller at a time.
    sync: parking_lot::Mutex<File>,
    /// Frames known durable.
    synced: std::sync::atomic::AtomicU64,
}

/// The journal's header.
const PACKETS_MAGIC: &[u8; 8] = b"HBPKT001";

struct Book {
    packets: HashMap<String, PacketState>,
    /// Expected but not created: id → expiry.
    expected: HashMap<String, u64>,
    /// Not refunded yet, by when the sweep should look (the expiry, later once taken): what
    /// the sweeper reads.
    open: BTreeSet<(u64, String)>,
    /// Each open packet's place in `open`.
    open_at: HashMap<String, u64>,
    file: File,
    /// Frames appended since open.
    written: u64,
    /// A write or fsync failed.
    failed: bool,
}

/// One change, as a journal frame.
#[derive(Clone, PartialEq, prost::Message)]
struct Change {
    /// 1 expect, 2 create, 3 claim, 4 close, 5 refunded, 6 forget.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    packet_id: String,
    #[prost(message, optional, tag = "3")]
    def: Option<PacketDef>,
    #[prost(int64, tag = "4")]
    act_id: i64,
    #[prost(uint32, tag = "5")]
    index: u32,
    /// The expiry for `expect`, the refund for `refunded`.
    #[prost(int64, tag = "6")]
    cents_or_ms: i64,
}

const EXPECT: u32 = 1;
const CREATE: u32 = 2;
const CLAIM: u32 = 3;
const CLOSE: u32 = 4;
const REFUNDED: u32 = 5;
const FORGET: u32 = 6;

impl Book {
    fn open_insert(&mut self, id: &str, at_ms: u64) {
        self.open_remove(id);
        self.open.insert((at_ms, id.to_owned()));
        self.open_at.insert(id.to_owned(), at_ms);
    }

    fn open_remove(&mut self, id: &str) {
        if let Some(at_ms) = self.open_at.remove(id) {
            self.open.remove(&(at_ms, id.to_owned()));
        }
    }

    fn apply(&mut self, change: Change) {
        let id = change.packet_id;
        match change.kind {
            EXPECT => {
                let expires_at_ms = change.cents_or_ms as u64;
                if !self.packets.contains_key(&id) {
                    self.open_insert(&id, expires_at_ms);
                    self.expected.insert(id, expires_at_ms);
                }
            }
            CREATE => {
                let Some(def) = change.def else { return };
                self.expected.remove(&id);
                self.open_insert(&id, def.expires_at_ms);
                self.packets.insert(id, PacketState { def, claims: Vec::new(), closed: false, refunded_cents: None });
            }
            CLAIM => {
                if let Some(state) = self.packets.get_mut(&id) {
                    state.claims.push((change.act_id, change.index));
                }
            }
            CLOSE => {
                if let Some(state) = self.packets.get_mut(&id) {
                    state.closed = true;
                }
            }
            REFUNDED => {
                if let Some(state) = self.packets.get_mut(&id) {
                    state.closed = true;
                    state.refunded_cents = Some(change.cents_or_ms);
                    self.open_remove(&id);
                }
            }
            FORGET if self.expected.remove(&id).is_some() => self.open_remove(&id),
            _ => {}
        }
    }

    /// Appends `change` to the journal and applies it; [`PacketBook::blocking`] makes it durable
    /// before anyone is answered.
    fn write(&mut self, change: Change) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Unavailable("packets.log: an earlier write failed; restart the host".into()));
        }
        let mut frame = Vec::new();
        journal::frame(&mut frame, &change.encode_to_vec());
        if let Err(error) = self.file.write_all(&frame) {
            self.failed = true;
            return Err(StoreError::Unavailable(format!("packets.log: {error}")));
        }
        self.written += 1;
        self.apply(change);
        Ok(())
    }
}

impl Inner {
    /// Returns once the first `frames` frames are on disk, fsyncing them (and every frame
    /// appended meanwhile) unless another caller's fsync already covered them.
    fn durable(&self, frames: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.synced.load(Ordering::Acquire) >= frames {
            return Ok(());
        }
        let file = self.sync.lock();
        if self.synced.load(Ordering::Acquire) >= frames {
            return Ok(());
        }
        let target = self.book.lock().written;
        if let Err(error) = file.sync_data() {
            self.book.lock().failed = true;
            return Err(StoreError::Unavailable(format!("packets.log: {error}")));
        }
        self.synced.store(target, Ordering::Release);
        Ok(())
    }
}

impl PacketBook {
    /// Opens (creating) `DATA/packets.log` and replays it.
    pub fn open(data_dir: &Path) -> Result<PacketBook, StoreError> {
        let mut changes = Vec::new();
        let file = journal::open(&data_dir.join("packets.log"), PACKETS_MAGIC, |payload| {
            changes.push(Change::decode(payload).map_err(|error| format!("a packets.log frame: {error}"))?);
            Ok(())
        })
        .map_err(StoreError::Unavailable)?;
        let sync = file.try_clone().map_err(|error| StoreError::Unavailable(format!("packets.log: {error}")))?;
        let mut book = Book {
            packets: HashMap::new(),
            expected: HashMap::new(),
            open: BTreeSet::new(),
            open_at: HashMap::new(),
            file,
            written: 0,
            failed: false,
        };
        for change in changes {
            book.apply(change);
        }
        let inner = Inner {
            book: parking_lot::Mutex::new(book),
            sync: parking_lot::Mutex::new(sync),
            synced: std::sync::atomic::AtomicU64::new(0),
        };
        Ok(PacketBook { inner: Arc::new(inner) })
    }

    /// Runs `work` on the book off the async workers, then waits until every frame appended so
    /// far (its own, and any it read the effect of) is durable.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Book) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let (answer, written) = {
                let mut book = inner.book.lock();
                let answer = work(&mut book);
                (answer, book.written)
            };
            inner.durable(written)?;
            answer
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("packets: {error}")))?
    }

    async fn expect(&self, packet_id: &str, expires_at_ms: u64) -> Result<(), StoreError> {
        let packet_id = packet_id.to_owned();
        self.blocking(move |book| {
            if book.packets.contains_key(&packet_id) || book.expected.contains_key(&packet_id) {
                return Ok(());
            }
            book.write(Change { kind: EXPECT, packet_id, cents_or_ms: expires_at_ms as i64, ..Change::default() })
        })
        .await
    }

    async fn create(&self, def: PacketDef, claims: Vec<i64>) -> Result<PacketDef, StoreError> {
        self.blocking(move |book| {
            if let Some(state) = book.packets.get(&def.packet_id) {
                return Ok(state.def.clone());
            }
            let packet_id = def.packet_id.clone();
            book.write(Change {
                kind: CREATE,
                packet_id: packet_id.clone(),
                def: Some(def.clone()),
                ..Change::default()
            })?;
            // Under the same lock: nobody claims in between.
            for (index, act_id) in claims.into_iter().enumerate() {
                let change = Change {
                    kind: CLAIM,
                    packet_id: packet_id.clone(),
                    act_id,
                    index: index as u32,
                    ..Change::default()
                };
                book.write(change)?;
            }
            Ok(def)
        })
        .await
    }

    fn get(&self, packet_id: &str) -> Option<PacketState> {
        self.inner.book.lock().packets.get(packet_id).cloned()
    }

    /// The definition alone (a grab needs no claims).
    fn def(&self, packet_id: &str) -> Option<PacketDef> {
        self.inner.book.lock().packets.get(packet_id).map(|state| state.def.clone())
    }

    async fn claim(&self, packet_id: &str, act_id: i64, now_ms: u64) -> Result<Claim, StoreError> {
        let packet_id = packet_id.to_owned();
        self.blocking(move |book| {
            let Some(state) = book.packets.get(&packet_id) else { return Ok(Claim::Unknown) };
            if let Some(&(_, index)) = state.claims.iter().find(|(claimer, _)| *claimer == act_id) {
                return Ok(Claim::Again(index));
            }
            if state.closed || now_ms >= state.def.expires_at_ms {
                return Ok(Claim::Expired);
            }
            let index = state.claims.len() as u32;
            if index as usize >= state.def.shares.len() {
                return Ok(Claim::Empty);
            }
            book.write(Change { kind: CLAIM, packet_id, act_id, index, ..Change::default() })?;
            Ok(Claim::New(index))
        })
        .await
    }

    async fn close(&self, packet_id: &str) -> Result<Vec<(i64, u32)>, StoreError> {
        let packet_id = packet_id.to_owned();
        self.blocking(move |book| {
            let Some(state) = book.packets.get(&packet_id) else { return Ok(Vec::new()) };
            let claims = state.claims.clone();
            if !state.closed {
                book.write(Change { kind: CLOSE, packet_id, ..Change::default() })?;
            }
            Ok(claims)
        })
        .await
    }

    async fn refunded(&self, packet_id: &str, refund_cents: i64) -> Result<(), StoreError> {
        let packet_id = packet_id.to_owned();
        self.blocking(move |book| {
            match book.packets.get(&packet_id) {
                Some(state) if state.refunded_cents.is_none() => {}
                _ => return Ok(()),
            }
            book.write(Change { kind: REFUNDED, packet_id, cents_or_ms: refund_cents, ..Change::default() })
        })
        .await
    }

    async fn forget(&self, packet_id: &str) -> Result<(), StoreError> {
        let packet_id = packet_id.to_owned();
        self.blocking(move |book| {
            if !book.expected.contains_key(&packet_id) {
                return Ok(());
            }
            book.write(Change { kind: FORGET, packet_id, ..Change::default() })
        })
        .await
    }

    /// Ids due by `now_ms` (without taking them).
    fn due(&self, now_ms: u64) -> Vec<String> {
        let book = self.inner.book.lock();
        book.open
            .iter()
            .take_while(|(at_ms, _)| *at_ms <= now_ms)
            .take(PACKETS_DUE_READ_MAX)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// See [`Store::packets_take_due`]; the later places live in memory only (after a restart
    /// every open packet is due at its expiry again, which is safe: the steps are idempotent).
    fn take_due(&self, now_ms: u64, lease_ms: u64) -> Vec<String> {
        let due = self.due(now_ms);
        let mut book = self.inner.book.lock();
        for id in &due {
            if book.open_at.contains_key(id) {
                book.open_insert(id, now_ms + lease_ms);
            }
        }
        due
    }

    fn expected_expiry(&self, packet_id: &str) -> Option<u64> {
        self.inner.book.lock().expected.get(packet_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: &str, shares: &[i64], expires_at_ms: u64) -> PacketDef {
        PacketDef {
            packet_id: id.into(),
            sender_act_id: 7,
            total_cents: shares.iter().sum(),
            shares: shares.to_vec(),
            expires_at_ms,
            ..PacketDef::default()
        }
    }

    // Proves concurrent claims share fsyncs and still hand out every share once: 200 users race
    // for 150 shares on a multi-threaded runtime, exactly 150 win distinct shares, and the
    // journal holds exactly those after reopening.
    #[test]
    fn concurrent_claims_commit_in_groups_and_hand_out_each_share_once() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        let won = runtime.block_on(async {
            let book = PacketBook::open(dir.path()).unwrap();
            book.create(def("hot", &[1; 150], u64::MAX), Vec::new()).await.unwrap();
            let tasks: Vec<_> = (0..200)
                .map(|act_id| {
                    let book = book.clone();
                    tokio::spawn(async move { (act_id, book.claim("hot", act_id, 1).await.unwrap()) })
                })
                .collect();
            let mut won = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    (act_id, Claim::New(index)) => won.push((act_id, index)),
                    (_, Claim::Empty) => {}
                    other => panic!("{other:?}"),
                }
            }
            won
        });
        assert_eq!(won.len(), 150);
        let mut shares: Vec<u32> = won.iter().map(|&(_, index)| index).collect();
        shares.sort_unstable();
        assert_eq!(shares, (0..150).collect::<Vec<_>>());
        let mut reopened = PacketBook::open(dir.path()).unwrap().get("hot").unwrap().claims;
        reopened.sort_unstable();
        let mut won = won;
        won.sort_unstable();
        assert_eq!(reopened, won);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    // Proves claims hand out each share once, one per user, none after expiry or close, and
    // that everything survives reopening the journal.
    #[test]
    fn claims_are_once_per_user_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let book = PacketBook::open(dir.path()).unwrap();
            book.expect("p", 100).await.unwrap();
            assert_eq!(book.due(100), ["p"]);
            book.create(def("p", &[3, 4], 100), Vec::new()).await.unwrap();
            // A second create keeps the first definition.
            assert_eq!(book.create(def("p", &[7], 100), vec![9]).await.unwrap().shares, [3, 4]);
            assert_eq!(book.claim("p", 1, 10).await.unwrap(), Claim::New(0));
            assert_eq!(book.claim("p", 1, 10).await.unwrap(), Claim::Again(0));
            assert_eq!(book.claim("p", 2, 10).await.unwrap(), Claim::New(1));
            assert_eq!(book.claim("p", 3, 10).await.unwrap(), Claim::Empty);
            assert_eq!(book.claim("q", 3, 10).await.unwrap(), Claim::Unknown);
            book.create(def("r", &[5], 50), Vec::new()).await.unwrap();
            // A rebuilt packet starts with its known claims; the next claim takes the next share.
            book.create(def("s", &[1, 2, 3], 100), vec![8, 9]).await.unwrap();
            assert_eq!(book.claim("s", 8, 10).await.unwrap(), Claim::Again(0));
            assert_eq!(book.claim("s", 7, 10).await.unwrap(), Claim::New(2));
            assert_eq!(book.claim("r", 1, 50).await.unwrap(), Claim::Expired);
            assert_eq!(book.due(99), ["r"]);
            assert_eq!(book.close("r").await.unwrap(), []);
            book.refunded("r", 5).await.unwrap();
            assert!(book.due(1000).contains(&"p".to_owned()) && !book.due(1000).contains(&"r".to_owned()));
            // Taking a due packet puts it back later: the next sweep sees the others first.
            assert_eq!(book.take_due(1000, 500), ["p", "s"]);
            assert!(book.due(1000).is_empty());
            assert_eq!(book.due(1500), ["p", "s"]);
        });
        let book = PacketBook::open(dir.path()).unwrap();
        let p = book.get("p").unwrap();
        assert_eq!(p.claims, [(1, 0), (2, 1)]);
        assert_eq!(book.get("r").unwrap().refunded_cents, Some(5));
        assert_eq!(book.due(1000), ["p", "s"]);
    }
}
