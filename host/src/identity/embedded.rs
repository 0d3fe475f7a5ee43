//! The embedded identities: the bindings in memory, made durable by an append-only journal,
//! `DATA/identities.log` ([`crate::journal`] frames), beside the embedded ledger.
//!
//! The journal holds records of two kinds: a user binding ((app, app_user_id) → act_id; a later
//! one for the same user is a re-pointing and wins) and a phone binding (phone hash → act_id).
//! A bind's records are one frame, appended and fsynced under the writers' lock before memory
//! changes, so readers never see a binding the disk does not have. The counter of fresh act_ids
//! is the highest act_id of hongbao's range any record names, plus one: every allocated act_id is
//! written in the frame that allocates it, and records are never removed, so no act_id is handed
//! out twice, across restarts too. If an append or fsync fails, the storage refuses everything
//! until a restart replays the journal.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use prost::Message as _;

use super::{Bound, IDENTITY_ACT_ID_BASE, IdentityError, PhoneHash};
use crate::journal;

/// The journal's file name in the data directory.
pub const JOURNAL_FILE_NAME: &str = "identities.log";

/// The first bytes of the journal: the format and its version.
const JOURNAL_MAGIC: &[u8; 8] = b"HBIDLOG1";

/// A user binding record.
const KIND_USER: u32 = 1;
/// A phone binding record.
const KIND_PHONE: u32 = 2;

/// One journal record.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    /// [`KIND_USER`] or [`KIND_PHONE`].
    #[prost(uint32, tag = "1")]
    kind: u32,
    /// The app, for user bindings.
    #[prost(int64, tag = "2")]
    app_id: i64,
    /// The app's name for the user, for user bindings.
    #[prost(string, tag = "3")]
    app_user_id: String,
    /// The act_id bound.
    #[prost(int64, tag = "4")]
    act_id: i64,
    /// The phone number's keyed hash, for phone bindings.
    #[prost(bytes = "vec", tag = "5")]
    phone_hash: Vec<u8>,
}

/// The bindings, rebuilt from the journal at open.
struct State {
    users: HashMap<(i64, String), i64>,
    phones: HashMap<[u8; 32], i64>,
    /// The act_ids some phone is bound to.
    phoned: HashSet<i64>,
    /// The next fresh act_id.
    next_act_id: i64,
}

impl State {
    fn record(&mut self, record: Record) -> Result<(), String> {
        match record.kind {
            KIND_USER => {
                self.users.insert((record.app_id, record.app_user_id), record.act_id);
            }
            KIND_PHONE => {
                let hash: [u8; 32] = record.phone_hash.try_into().map_err(|_| "a phone hash is not 32 bytes")?;
                self.phones.insert(hash, record.act_id);
                self.phoned.insert(record.act_id);
            }
            kind => return Err(format!("unknown record kind {kind}")),
        }
        if record.act_id >= self.next_act_id {
            self.next_act_id = record.act_id.checked_add(1).ok_or("act_id overflow")?;
        }
        Ok(())
    }
}

/// A handle on the embedded identities; clones share one state.
#[derive(Clone)]
pub struct EmbeddedIdentities {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    /// The journal, appended under this lock, which is also the writers' lock.
    journal: Mutex<File>,
    /// Set once an append or fsync failed.
    failed: AtomicBool,
}

fn user_record(app_id: i64, app_user_id: &str, act_id: i64) -> Record {
    Record { kind: KIND_USER, app_id, app_user_id: app_user_id.to_owned(), act_id, phone_hash: Vec::new() }
}

fn phone_record(phone: &PhoneHash, act_id: i64) -> Record {
    Record { kind: KIND_PHONE, act_id, phone_hash: phone.0.to_vec(), ..Record::default() }
}

impl EmbeddedIdentities {
    /// Opens (or creates) `DATA/identities.log` and replays it; a torn last frame is cut.
    pub fn open(data_dir: &Path) -> Result<EmbeddedIdentities, IdentityError> {
        std::fs::create_dir_all(data_dir).map_err(|error| IdentityError::Unavailable(error.to_string()))?;
        let mut state = State {
            users: HashMap::new(),
            phones: HashMap::new(),
            phoned: HashSet::new(),
            next_act_id: IDENTITY_ACT_ID_BASE,
        };
        let file = journal::open(&data_dir.join(JOURNAL_FILE_NAME), JOURNAL_MAGIC, |mut payload| {
            while !payload.is_empty() {
                state.record(Record::decode_length_delimited(&mut payload).map_err(|error| error.to_string())?)?;
            }
            Ok(())
        })
        .map_err(IdentityError::Unavailable)?;
        Ok(EmbeddedIdentities {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                journal: Mutex::new(file),
                failed: AtomicBool::new(false),
            }),
        })
    }

    fn check(&self) -> Result<(), IdentityError> {
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(IdentityError::Unavailable(
                "the identity journal could not be written; restart the host".into(),
            ));
        }
        Ok(())
    }

    /// Runs one write: `decide` reads the state under the writers' lock and returns the records
    /// to write with its answer; they are appended as one frame, fsynced, then applied.
    fn write<T>(&self, decide: impl FnOnce(&State) -> (T, Vec<Record>)) -> Result<T, IdentityError> {
        self.check()?;
        let mut journal = self.inner.journal.lock();
        let (answer, records) = decide(&self.inner.state.read());
        if records.is_empty() {
            return Ok(answer);
        }
        let mut payload = Vec::new();
        for record in &records {
            record.encode_length_delimited(&mut payload).expect("a Vec grows");
        }
        let mut out = Vec::with_capacity(payload.len() + 8);
        journal::frame(&mut out, &payload);
        if let Err(error) = journal.write_all(&out).and_then(|()| journal.sync_data()) {
            self.inner.failed.store(true, Ordering::Release);
            tracing::error!(%error, "identity journal write failed; identities are refused until a restart");
            return Err(IdentityError::Unavailable(format!("identity journal write failed: {error}")));
        }
        let mut state = self.inner.state.write();
        for record in records {
            state.record(record).expect("records written here are valid");
        }
        Ok(answer)
    }

    /// Runs a write on the blocking pool: it waits for an fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EmbeddedIdentities) -> Result<T, IdentityError> + Send + 'static,
    ) -> Result<T, IdentityError> {
        let identities = self.clone();
        tokio::task::spawn_blocking(move || work(&identities))
            .await
            .map_err(|error| IdentityError::Unavailable(error.to_string()))?
    }

    /// The act_id of (app, app_user_id), if bound.
    pub fn lookup(&self, app_id: i64, app_user_id: &str) -> Result<Option<i64>, IdentityError> {
        self.check()?;
        Ok(self.inner.state.read().users.get(&(app_id, app_user_id.to_owned())).copied())
    }

    /// Whether any phone number is bound to `act_id`.
    pub fn has_phone(&self, act_id: i64) -> Result<bool, IdentityError> {
        self.check()?;
        Ok(self.inner.state.read().phoned.contains(&act_id))
    }

    /// See [`super::IdentityStorage::bind`].
    pub async fn bind(
        &self,
        app_id: i64,
        app_user_id: &str,
        phone: Option<&PhoneHash>,
    ) -> Result<Bound, IdentityError> {
        let (app_user_id, phone) = (app_user_id.to_owned(), phone.copied());
        self.blocking(move |identities| identities.bind_now(app_id, &app_user_id, phone.as_ref())).await
    }

    fn bind_now(&self, app_id: i64, app_user_id: &str, phone: Option<&PhoneHash>) -> Result<Bound, IdentityError> {
        self.write(|state| {
            let mut records = Vec::new();
            let phone_owner = phone.and_then(|phone| state.phones.get(&phone.0).copied());
            let (act_id, created) = match state.users.get(&(app_id, app_user_id.to_owned())) {
                Some(&act_id) => (act_id, false),
                None => {
                    let act_id = phone_owner.unwrap_or(state.next_act_id);
                    records.push(user_record(app_id, app_user_id, act_id));
                    (act_id, true)
                }
            };
            let phone_act_id = phone.map(|phone| {
                phone_owner.unwrap_or_else(|| {
                    records.push(phone_record(phone, act_id));
                    act_id
                })
            });
            (Bound { act_id, created, phone_act_id }, records)
        })
    }

    /// See [`super::IdentityStorage::repoint`].
    pub async fn repoint(&self, app_id: i64, app_user_id: &str, from: i64, to: i64) -> Result<bool, IdentityError> {
        let app_user_id = app_user_id.to_owned();
        self.blocking(move |identities| {
            identities.write(|state| {
                if state.users.get(&(app_id, app_user_id.clone())) != Some(&from) {
                    return (false, Vec::new());
                }
                (true, vec![user_record(app_id, &app_user_id, to)])
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(byte: u8) -> PhoneHash {
        PhoneHash([byte; 32])
    }

    // Proves the bind step: a known user keeps its act_id, a new user takes a bound phone's
    // act_id, else a fresh one from the base up; a free phone goes to the user's act_id.
    #[tokio::test]
    async fn binds_follow_the_phone_and_allocate_fresh_act_ids() {
        let dir = tempfile::tempdir().unwrap();
        let identities = EmbeddedIdentities::open(dir.path()).unwrap();
        let first = identities.bind(1128, "u1", Some(&phone(1))).await.unwrap();
        assert_eq!(
            first,
            Bound { act_id: IDENTITY_ACT_ID_BASE, created: true, phone_act_id: Some(IDENTITY_ACT_ID_BASE) }
        );
        let again = identities.bind(1128, "u1", None).await.unwrap();
        assert_eq!(again, Bound { act_id: IDENTITY_ACT_ID_BASE, created: false, phone_act_id: None });
        let other_app = identities.bind(2329, "x9", Some(&phone(1))).await.unwrap();
        assert_eq!(other_app.act_id, IDENTITY_ACT_ID_BASE);
        let fresh = identities.bind(2329, "x10", None).await.unwrap();
        assert_eq!(fresh.act_id, IDENTITY_ACT_ID_BASE + 1);
        let claims = identities.bind(2329, "x10", Some(&phone(2))).await.unwrap();
        assert_eq!(claims.phone_act_id, Some(IDENTITY_ACT_ID_BASE + 1));
        let taken = identities.bind(2329, "x10", Some(&phone(1))).await.unwrap();
        assert_eq!(taken.phone_act_id, Some(IDENTITY_ACT_ID_BASE), "a bound phone is never re-pointed");
        assert!(identities.has_phone(IDENTITY_ACT_ID_BASE + 1).unwrap());
    }

    // Proves a reopened store replays its journal (bindings, phones, re-pointings and the
    // counter: no act_id is handed out twice, even one no binding names any more), and that a
    // torn last frame is cut without losing the frames before it.
    #[tokio::test]
    async fn reopening_replays_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        {
            let identities = EmbeddedIdentities::open(dir.path()).unwrap();
            identities.bind(1128, "a", Some(&phone(7))).await.unwrap();
            let b = identities.bind(2329, "b", None).await.unwrap();
            assert!(identities.repoint(2329, "b", b.act_id, IDENTITY_ACT_ID_BASE).await.unwrap());
            assert!(!identities.repoint(2329, "b", b.act_id, IDENTITY_ACT_ID_BASE).await.unwrap());
        }
        let path = dir.path().join(JOURNAL_FILE_NAME);
        let mut torn = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        torn.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(torn);
        let identities = EmbeddedIdentities::open(dir.path()).unwrap();
        assert_eq!(identities.lookup(1128, "a").unwrap(), Some(IDENTITY_ACT_ID_BASE));
        assert_eq!(identities.lookup(2329, "b").unwrap(), Some(IDENTITY_ACT_ID_BASE));
        assert_eq!(identities.lookup(2329, "c").unwrap(), None);
        assert!(identities.has_phone(IDENTITY_ACT_ID_BASE).unwrap());
        let joined = identities.bind(9, "z", Some(&phone(7))).await.unwrap();
        assert_eq!(joined.act_id, IDENTITY_ACT_ID_BASE);
        let fresh = identities.bind(9, "y", None).await.unwrap();
        assert_eq!(fresh.act_id, IDENTITY_ACT_ID_BASE + 2, "act_id BASE+1 was handed out once already");
    }
}
