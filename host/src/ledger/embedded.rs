//! The embedded ledger: the books in memory, made durable by an append-only journal,
//! `DATA/ledger.log`. It is kept apart from the token store so that the two can disagree exactly
//! as a real ledger service and a hot store can (a crash between crediting and marking
//! credited), and recovery is tested against that.
//!
//! The journal holds the entries, which are the books' facts; the balances, each user's income
//! and flow, and the total each activity has been funded to are derived from them when the
//! journal is replayed at open. A write (a funding, a credit batch, a withdrawal) is checked and
//! applied under the writers' lock, appended as one frame and fsynced before it answers; a batch
//! of credits is one frame and one fsync whatever its size. Readers take a read lock and never
//! wait for the disk; they may see a write's entries while its fsync runs (its caller is not
//! answered before it is durable). If an append or fsync fails, the ledger refuses everything
//! until a restart replays the journal, because the memory may hold entries the disk does not.
//!
//! This replaced a redb file: its copy-on-write B-trees turned a credit's four random-key
//! inserts into whole pages copied and written per batch, and the writer took 40 % of the
//! embedded host's CPU at 10k credits/s (see `BENCHMARKS.md`).

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use prost::Message as _;

use super::books::Books;
use super::rules::{self, WithdrawalStep};
use super::{
    Credit, CreditResult, LedgerEntry, LedgerError, LedgerWallet, Withdrawal, WithdrawalRequest, budget_account,
    wallet_account,
};
use crate::journal;
use crate::metrics::JournalKind;
use crate::store::{FlowPosition, red_packet_flow_id};

/// The journal's file name in the data directory.
pub const JOURNAL_FILE_NAME: &str = "ledger.log";

/// The first bytes of the journal: the format and its version.
const JOURNAL_MAGIC: &[u8; 8] = b"HBLLOG01";

fn unavailable(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(error.to_string())
}

/// A handle on the embedded ledger; clones share one set of books.
#[derive(Clone)]
pub struct EmbeddedLedger {
    inner: Arc<Inner>,
}

struct Inner {
    books: RwLock<Books>,
    /// The journal, appended under this lock: it is also the writers' lock, so writes are
    /// checked against the books in the order they reach the disk.
    journal: Mutex<File>,
    /// Set once an append or fsync failed.
    failed: AtomicBool,
}

impl EmbeddedLedger {
    /// Opens (or creates) `DATA/ledger.log` and replays it.
    pub fn open(data_dir: &Path) -> Result<EmbeddedLedger, LedgerError> {
        std::fs::create_dir_all(data_dir).map_err(unavailable)?;
        journal::refuse_old_format(data_dir, "ledger.redb", JOURNAL_FILE_NAME).map_err(LedgerError::Unavailable)?;
        let mut books = Books::default();
        let file = journal::open(&data_dir.join(JOURNAL_FILE_NAME), JOURNAL_MAGIC, |mut payload| {
            while !payload.is_empty() {
                let length = prost::encoding::decode_varint(&mut payload).map_err(|error| error.to_string())?;
                let length = usize::try_from(length).ok().filter(|&n| n <= payload.len()).ok_or("entry overruns")?;
                let (bytes, rest) = payload.split_at(length);
                payload = rest;
                books.record(&LedgerEntry::decode(bytes).map_err(|error| error.to_string())?);
            }
            Ok(())
        })
        .map_err(LedgerError::Unavailable)?;
        Ok(EmbeddedLedger {
            inner: Arc::new(Inner {
                books: RwLock::new(books),
                journal: Mutex::new(file),
                failed: AtomicBool::new(false),
            }),
        })
    }

    fn check(&self) -> Result<(), LedgerError> {
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(LedgerError::Unavailable("the ledger journal could not be written; restart the host".into()));
        }
        Ok(())
    }

    /// Runs one write: `apply` checks and records its entries in the books under the writers'
    /// lock and returns them with its answer; they are then asserted ([`rules::assert_before_write`]),
    /// appended as one frame, fsynced, and read back from the books.
    fn write<T>(
        &self,
        apply: impl FnOnce(&mut Books) -> Result<(T, Vec<LedgerEntry>), LedgerError>,
    ) -> Result<T, LedgerError> {
        self.check()?;
        let mut journal = self.inner.journal.lock();
        let (answer, written) = apply(&mut self.inner.books.write())?;
        if written.is_empty() {
            return Ok(answer);
        }
        rules::assert_before_write(&written);
        let mut payload = Vec::with_capacity(written.iter().map(|entry| entry.encoded_len() + 4).sum());
        for entry in &written {
            entry.encode_length_delimited(&mut payload).expect("a Vec grows");
        }
        let mut out = Vec::with_capacity(payload.len() + 8);
        journal::frame(&mut out, &payload);
        if let Err(error) = journal.write_all(&out).and_then(|()| journal::sync(&journal, JournalKind::Ledger)) {
            self.inner.failed.store(true, Ordering::Release);
            tracing::error!(%error, "ledger journal write failed; the ledger refuses all operations until a restart");
            return Err(unavailable(format!("ledger journal write failed: {error}")));
        }
        drop(journal);
        let books = self.inner.books.read();
        rules::assert_read_back(&written, |id| books.read_back(id));
        Ok(answer)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EmbeddedLedger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = self.clone();
        tokio::task::spawn_blocking(move || work(&ledger)).await.map_err(unavailable)?
    }

    /// Tops the activity's budget account up to `budget_cents` in total. Idempotent: funding the
    /// same total twice writes one entry. A lower budget than already funded changes nothing
    /// here (money put in stays); the grant path enforces the lower bound.
    pub async fn fund_activity(&self, activity_id: String, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
        self.blocking(move |ledger| ledger.fund_activity_now(&activity_id, budget_cents, time_ms)).await
    }

    fn fund_activity_now(&self, activity_id: &str, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
        rules::check_amount(budget_cents)?;
        self.write(|books| {
            let Some(entry) = rules::funding_entry(activity_id, budget_cents, books.funded(activity_id), time_ms)
            else {
                return Ok(((), Vec::new()));
            };
            if books.contains(&entry.id) {
                return Err(unavailable(format!("funding entry `{}` cannot be written", entry.id)));
            }
            books.check_room(1)?;
            books.check_fits(&entry)?;
            books.record(&entry);
            Ok(((), vec![entry]))
        })
    }

    /// Credits a batch of red packets in one frame: one result per credit, in order.
    pub async fn credit_batch(&self, credits: Vec<Credit>) -> Result<Vec<CreditResult>, LedgerError> {
        self.blocking(move |ledger| ledger.credit_batch_now(&credits)).await
    }

    /// The rules decide each credit ([`rules::decide_credit`]); [`EmbeddedLedger::write`] makes
    /// the paired assertions around the frame.
    fn credit_batch_now(&self, credits: &[Credit]) -> Result<Vec<CreditResult>, LedgerError> {
        for credit in credits {
            rules::check_amount(credit.amount_cents)?;
        }
        self.write(|books| {
            books.check_room(credits.len())?;
            let mut results = Vec::with_capacity(credits.len());
            let mut written = Vec::with_capacity(credits.len());
            for credit in credits {
                let id = red_packet_flow_id(&credit.activity_id, &credit.order_no);
                let existing = books.existing(&id);
                let budget_cents = books.balance(&budget_account(&credit.activity_id));
                let result = rules::decide_credit(credit, &id, existing, budget_cents);
                if result == CreditResult::Applied {
                    let entry = LedgerEntry { id, ..LedgerEntry::red_packet(credit) };
                    books.check_fits(&entry)?;
                    books.record(&entry);
                    written.push(entry);
                }
                results.push(result);
            }
            rules::assert_credit_plan(credits, &results, &written);
            Ok((results, written))
        })
    }

    /// Debits a wallet, once per request id, never below zero.
    pub async fn withdraw(&self, request: WithdrawalRequest) -> Result<Withdrawal, LedgerError> {
        self.transfer(LedgerEntry::withdrawal(&request)).await
    }

    /// Writes one entry out of an account that may not go below zero, once per id (see
    /// [`crate::ledger::Ledger::transfer`]).
    pub async fn transfer(&self, entry: LedgerEntry) -> Result<Withdrawal, LedgerError> {
        self.blocking(move |ledger| ledger.transfer_now(&entry)).await
    }

    fn transfer_now(&self, entry: &LedgerEntry) -> Result<Withdrawal, LedgerError> {
        rules::check_amount(entry.amount_cents)?;
        let wallet = entry.debit_account.clone();
        let entry = entry.clone();
        self.write(|books| {
            let existing = books.entry(&entry.id);
            let balance_cents = books.balance(&wallet);
            if rules::decide_withdrawal(&entry, existing.as_ref().map(|entry| entry.amount_cents), balance_cents)?
                == WithdrawalStep::Replay
            {
                let replayed = existing.expect("a replay has its entry");
                return Ok((Withdrawal { entry: replayed, balance_cents, replayed: true }, Vec::new()));
            }
            books.check_room(1)?;
            books.check_fits(&entry)?;
            books.record(&entry);
            let withdrawal =
                Withdrawal { entry: entry.clone(), balance_cents: books.balance(&wallet), replayed: false };
            Ok((withdrawal, vec![entry]))
        })
    }

    /// The user's balance and income, and which of `flow_ids` are credited, in one snapshot.
    pub fn wallet(&self, act_id: i64, flow_ids: &[String]) -> Result<LedgerWallet, LedgerError> {
        self.check()?;
        let books = self.inner.books.read();
        Ok(LedgerWallet {
            balance_cents: books.balance(&wallet_account(act_id)),
            income_cents: books.income(act_id),
            credited_flow_ids: flow_ids.iter().filter(|id| books.contains(id)).cloned().collect::<HashSet<_>>(),
        })
    }

    /// Up to `limit` of the user's entries strictly older than `before`, newest first.
    pub fn user_entries(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().user_entries(act_id, before, limit))
    }

    /// The entry with this id.
    pub fn entry(&self, id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().entry(id))
    }

    /// An account's balance.
    pub fn balance(&self, account: &str) -> Result<i64, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().balance(account))
    }

    /// Whether any red packet of the activity was ever credited.
    pub fn has_red_packets(&self, activity_id: &str) -> Result<bool, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().has_red_packets(activity_id))
    }

    /// The red packet entries of one activity, by id, for reconciliation; never on the grant
    /// path.
    pub fn red_packets_of(&self, activity_id: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().red_packets_by_id(activity_id))
    }

    /// Every entry, by id, for audits and tests; never on a request path.
    pub fn all_entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().all_entries())
    }

    /// Every account with its balance, by name, for audits and tests.
    pub fn all_balances(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        self.check()?;
        Ok(self.inner.books.read().all_balances())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::budget_account;

    // Regression: funding an activity with the largest budget the config allows panicked on a
    // ledger assertion. It must fund, and an out-of-range budget must be an error, not a panic.
    #[test]
    fn largest_configured_budget_funds_and_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        ledger.fund_activity_now("big", crate::config::BUDGET_CENTS_MAX, 0).unwrap();
        assert_eq!(ledger.balance(&budget_account("big")).unwrap(), crate::config::BUDGET_CENTS_MAX);
        assert!(matches!(ledger.fund_activity_now("big", i64::MAX, 0), Err(LedgerError::AmountOutOfRange(_))));
        assert!(matches!(ledger.fund_activity_now("big", 0, 0), Err(LedgerError::AmountOutOfRange(_))));
        // Funding the same total again writes nothing more.
        ledger.fund_activity_now("big", crate::config::BUDGET_CENTS_MAX, 0).unwrap();
        assert_eq!(ledger.all_entries().unwrap().len(), 1);
    }

    // Regression: a credit out of range panicked on an assertion in the embedded ledger while
    // the PostgreSQL ledger refused it. Amounts are input: the batch is refused whole, nothing
    // written, and the ledger keeps working.
    #[test]
    fn a_credit_out_of_range_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        ledger.fund_activity_now("a", 100, 0).unwrap();
        for bad in [0, -5, crate::ledger::ENTRY_CENTS_MAX + 1] {
            let refused = ledger.credit_batch_now(&[credit(1, 1), credit(2, bad)]);
            assert!(matches!(refused, Err(LedgerError::AmountOutOfRange(cents)) if cents == bad), "{refused:?}");
        }
        assert_eq!(ledger.all_entries().unwrap().len(), 1);
        assert_eq!(ledger.credit_batch_now(&[credit(1, 1)]).unwrap(), [CreditResult::Applied]);
    }

    fn credit(n: i64, cents: i64) -> Credit {
        Credit {
            activity_id: "a".into(),
            order_no: format!("{n}_s_1_cash_0"),
            scene_id: "s".into(),
            act_id: n,
            amount_cents: cents,
            open_time_ms: n as u64,
            memo: "m".into(),
            token: format!("t{n}"),
        }
    }

    // Proves the journal brings back the same books after a reopen: every entry, every balance,
    // income and the funded total (a second funding to the same total writes nothing), and that
    // a torn last frame is cut without touching the frames before it.
    #[test]
    fn reopen_replays_the_same_books() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        ledger.fund_activity_now("a", 100, 1).unwrap();
        let results = ledger.credit_batch_now(&[credit(1, 30), credit(2, 50), credit(1, 30), credit(3, 40)]).unwrap();
        assert_eq!(
            results,
            [
                CreditResult::Applied,
                CreditResult::Applied,
                CreditResult::AlreadyCredited,
                CreditResult::BudgetExhausted
            ]
        );
        let request = WithdrawalRequest { act_id: 2, request_id: "w1".into(), amount_cents: 20, time_ms: 9 };
        ledger.transfer_now(&LedgerEntry::withdrawal(&request)).unwrap();
        let books = |ledger: &EmbeddedLedger| (ledger.all_entries().unwrap(), ledger.all_balances().unwrap());
        let before = books(&ledger);
        assert_eq!(ledger.wallet(2, &[]).unwrap().income_cents, 50);
        drop(ledger);
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        assert_eq!(books(&ledger), before);
        assert_eq!(ledger.wallet(2, &[]).unwrap().balance_cents, 30);
        assert_eq!(ledger.wallet(2, &[]).unwrap().income_cents, 50);
        ledger.fund_activity_now("a", 100, 2).unwrap();
        assert_eq!(ledger.all_entries().unwrap().len(), before.0.len(), "funded to 100 already");
        ledger.credit_batch_now(&[credit(4, 5)]).unwrap();
        drop(ledger);
        let path = dir.path().join(JOURNAL_FILE_NAME);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        assert_eq!(books(&ledger), before, "the torn credit is gone, the rest stays");
    }

    // Proves a data directory holding an earlier version's redb ledger is refused with a message
    // naming the file, not served as an empty ledger.
    #[test]
    fn earlier_redb_ledger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ledger.redb"), b"old").unwrap();
        let error = EmbeddedLedger::open(dir.path()).err().expect("refused").to_string();
        assert!(error.contains("ledger.redb") && error.contains("earlier hongbao version"), "{error}");
    }
}
