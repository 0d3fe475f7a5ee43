//! The embedded ledger: one redb file, `DATA/ledger.redb`, kept apart from the token store so
//! that the two can disagree exactly as a real ledger service and a hot store can (a crash
//! between crediting and marking credited), and recovery is tested against that.
//!
//! Writes are few and large (a writer batch is one transaction), so they go straight to redb,
//! which serialises write transactions itself; async callers run them on the blocking pool.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use prost::Message as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::{
    Credit, CreditResult, ENTRY_CENTS_MAX, EntryKind, LedgerEntry, LedgerError, LedgerWallet, PAYOUTS_ACCOUNT,
    Withdrawal, WithdrawalRequest, budget_account, wallet_account,
};
use crate::store::{FlowPosition, flow_index_range, red_packet_flow_id};

/// account → balance in cents.
const ACCOUNTS: TableDefinition<&str, i64> = TableDefinition::new("accounts");
/// entry id → encoded [`LedgerEntry`]; the key is the uniqueness constraint.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// (act id, time, entry id) → (): each user's entries in wallet-flow order.
const USER_ENTRIES: TableDefinition<(i64, u64, &str), ()> = TableDefinition::new("user_entries");
/// act id → cents of red packets ever credited.
const USER_INCOME: TableDefinition<i64, i64> = TableDefinition::new("user_income");
/// activity → cents funded so far.
const FUNDED: TableDefinition<&str, i64> = TableDefinition::new("funded");

fn unavailable(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(error.to_string())
}

/// A handle on the embedded ledger; clones share one database.
#[derive(Clone)]
pub struct EmbeddedLedger {
    db: Arc<Database>,
}

impl EmbeddedLedger {
    /// Opens (or creates) `DATA/ledger.redb`.
    pub fn open(data_dir: &Path) -> Result<EmbeddedLedger, LedgerError> {
        std::fs::create_dir_all(data_dir).map_err(unavailable)?;
        let db = Database::create(data_dir.join("ledger.redb")).map_err(unavailable)?;
        let setup = db.begin_write().map_err(unavailable)?;
        {
            setup.open_table(ACCOUNTS).map_err(unavailable)?;
            setup.open_table(ENTRIES).map_err(unavailable)?;
            setup.open_table(USER_ENTRIES).map_err(unavailable)?;
            setup.open_table(USER_INCOME).map_err(unavailable)?;
            setup.open_table(FUNDED).map_err(unavailable)?;
        }
        setup.commit().map_err(unavailable)?;
        Ok(EmbeddedLedger { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(unavailable)?
    }

    /// Tops the activity's budget account up to `budget_cents` in total. Idempotent: funding the
    /// same total twice writes one entry. A lower budget than already funded changes nothing
    /// here (money put in stays); the grant path enforces the lower bound.
    pub async fn fund_activity(&self, activity_id: String, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
        self.blocking(move |db| fund_activity(db, &activity_id, budget_cents, time_ms)).await
    }

    /// Credits a batch of red packets in one transaction: one result per credit, in order.
    pub async fn credit_batch(&self, credits: Vec<Credit>) -> Result<Vec<CreditResult>, LedgerError> {
        self.blocking(move |db| credit_batch(db, &credits)).await
    }

    /// Debits a wallet, once per request id, never below zero.
    pub async fn withdraw(&self, request: WithdrawalRequest) -> Result<Withdrawal, LedgerError> {
        self.blocking(move |db| withdraw(db, &request)).await
    }

    /// The user's balance and income, and which of `flow_ids` are credited, in one snapshot.
    pub fn wallet(&self, act_id: i64, flow_ids: &[String]) -> Result<LedgerWallet, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let accounts = read.open_table(ACCOUNTS).map_err(unavailable)?;
        let income = read.open_table(USER_INCOME).map_err(unavailable)?;
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        let balance_cents =
            accounts.get(wallet_account(act_id).as_str()).map_err(unavailable)?.map_or(0, |v| v.value());
        let income_cents = income.get(act_id).map_err(unavailable)?.map_or(0, |v| v.value());
        let mut credited_flow_ids = HashSet::new();
        for flow_id in flow_ids {
            if entries.get(flow_id.as_str()).map_err(unavailable)?.is_some() {
                credited_flow_ids.insert(flow_id.clone());
            }
        }
        Ok(LedgerWallet { balance_cents, income_cents, credited_flow_ids })
    }

    /// Up to `limit` of the user's entries strictly older than `before`, newest first.
    pub fn user_entries(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let index = read.open_table(USER_ENTRIES).map_err(unavailable)?;
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        let rows = index.range(flow_index_range(act_id, before)).map_err(unavailable)?;
        let mut found = Vec::with_capacity(limit);
        for row in rows.rev().take(limit) {
            let (key, _) = row.map_err(unavailable)?;
            let (_, _, id) = key.value();
            if let Some(bytes) = entries.get(id).map_err(unavailable)? {
                found.push(decode(bytes.value())?);
            }
        }
        Ok(found)
    }

    /// The entry with this id.
    pub fn entry(&self, id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        let found = entries.get(id).map_err(unavailable)?;
        found.map(|bytes| decode(bytes.value())).transpose()
    }

    /// An account's balance.
    pub fn balance(&self, account: &str) -> Result<i64, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let accounts = read.open_table(ACCOUNTS).map_err(unavailable)?;
        Ok(accounts.get(account).map_err(unavailable)?.map_or(0, |v| v.value()))
    }

    /// Whether any red packet of the activity was ever credited.
    pub fn has_red_packets(&self, activity_id: &str) -> Result<bool, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        let (start, end) = (format!("rp/{activity_id}/"), format!("rp/{activity_id}0"));
        Ok(entries.range(start.as_str()..end.as_str()).map_err(unavailable)?.next().is_some())
    }

    /// The red packet entries of one activity, for reconciliation; never on the grant path.
    pub fn red_packets_of(&self, activity_id: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        // Ids are `rp/{activity}/{order_no}`; '0' is the byte after '/', so this range is exactly
        // the activity's red packets.
        let start = format!("rp/{activity_id}/");
        let end = format!("rp/{activity_id}0");
        let mut found = Vec::new();
        for row in entries.range(start.as_str()..end.as_str()).map_err(unavailable)? {
            found.push(decode(row.map_err(unavailable)?.1.value())?);
        }
        Ok(found)
    }

    /// Every entry, for audits and tests; never on a request path.
    pub fn all_entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        let mut all = Vec::new();
        for row in entries.iter().map_err(unavailable)? {
            all.push(decode(row.map_err(unavailable)?.1.value())?);
        }
        Ok(all)
    }

    /// Every account with its balance, for audits and tests.
    pub fn all_balances(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        let read = self.db.begin_read().map_err(unavailable)?;
        let accounts = read.open_table(ACCOUNTS).map_err(unavailable)?;
        let mut all = Vec::new();
        for row in accounts.iter().map_err(unavailable)? {
            let (name, balance) = row.map_err(unavailable)?;
            all.push((name.value().to_owned(), balance.value()));
        }
        Ok(all)
    }
}

fn decode(bytes: &[u8]) -> Result<LedgerEntry, LedgerError> {
    LedgerEntry::decode(bytes).map_err(|error| LedgerError::Unavailable(format!("corrupt ledger entry: {error}")))
}

fn may_go_negative(account: &str) -> bool {
    account.starts_with("funding/")
}

/// Moves `amount` from `debit` to `credit`, refusing to take a guarded account below zero.
/// Returns false (and changes nothing) when it would.
fn transfer(
    accounts: &mut redb::Table<'_, &'static str, i64>,
    debit: &str,
    credit: &str,
    amount: i64,
) -> Result<bool, LedgerError> {
    assert!(amount > 0 && amount <= ENTRY_CENTS_MAX, "ledger transfer of {amount} cents");
    let debit_balance = accounts.get(debit).map_err(unavailable)?.map_or(0, |v| v.value());
    let credit_balance = accounts.get(credit).map_err(unavailable)?.map_or(0, |v| v.value());
    let debit_after = debit_balance - amount;
    if debit_after < 0 && !may_go_negative(debit) {
        return Ok(false);
    }
    let credit_after = credit_balance.checked_add(amount).ok_or(LedgerError::AmountOutOfRange(amount))?;
    accounts.insert(debit, debit_after).map_err(unavailable)?;
    accounts.insert(credit, credit_after).map_err(unavailable)?;
    Ok(true)
}

fn fund_activity(db: &Database, activity_id: &str, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
    if budget_cents <= 0 || budget_cents > ENTRY_CENTS_MAX {
        return Err(LedgerError::AmountOutOfRange(budget_cents));
    }
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut funded = txn.open_table(FUNDED).map_err(unavailable)?;
        let already = funded.get(activity_id).map_err(unavailable)?.map_or(0, |v| v.value());
        let top_up = budget_cents - already;
        if top_up <= 0 {
            return Ok(());
        }
        let mut accounts = txn.open_table(ACCOUNTS).map_err(unavailable)?;
        let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
        let entry = LedgerEntry {
            id: format!("fund/{activity_id}/{budget_cents}"),
            kind: EntryKind::Funding as u32,
            debit_account: format!("funding/{activity_id}"),
            credit_account: budget_account(activity_id),
            amount_cents: top_up,
            time_ms,
            activity_id: activity_id.to_owned(),
            ..LedgerEntry::default()
        };
        transfer(&mut accounts, &entry.debit_account, &entry.credit_account, top_up)?;
        entries.insert(entry.id.as_str(), entry.encode_to_vec().as_slice()).map_err(unavailable)?;
        funded.insert(activity_id, budget_cents).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

fn credit_batch(db: &Database, credits: &[Credit]) -> Result<Vec<CreditResult>, LedgerError> {
    // Paired with the read-back below: what goes into the books is checked on the way in and
    // on the way out.
    for credit in credits {
        assert!(credit.amount_cents > 0 && credit.amount_cents <= ENTRY_CENTS_MAX, "credit of {credit:?}");
    }
    let mut results = Vec::with_capacity(credits.len());
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut accounts = txn.open_table(ACCOUNTS).map_err(unavailable)?;
        let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
        let mut user_entries = txn.open_table(USER_ENTRIES).map_err(unavailable)?;
        let mut income = txn.open_table(USER_INCOME).map_err(unavailable)?;
        for credit in credits {
            let id = red_packet_flow_id(&credit.activity_id, &credit.order_no);
            let existing =
                entries.get(id.as_str()).map_err(unavailable)?.map(|bytes| decode(bytes.value())).transpose()?;
            if let Some(entry) = existing {
                if entry.amount_cents == credit.amount_cents && entry.act_id == credit.act_id {
                    results.push(CreditResult::AlreadyCredited);
                } else {
                    tracing::error!(entry = %id, ledger_cents = entry.amount_cents, token_cents = credit.amount_cents, "ledger holds this order with another amount or user");
                    results.push(CreditResult::Conflict);
                }
                continue;
            }
            let entry = LedgerEntry {
                id,
                kind: EntryKind::RedPacket as u32,
                debit_account: budget_account(&credit.activity_id),
                credit_account: wallet_account(credit.act_id),
                amount_cents: credit.amount_cents,
                time_ms: credit.open_time_ms,
                act_id: credit.act_id,
                memo: credit.memo.clone(),
                activity_id: credit.activity_id.clone(),
                scene_id: credit.scene_id.clone(),
                reference: credit.order_no.clone(),
                token: credit.token.clone(),
            };
            if !transfer(&mut accounts, &entry.debit_account, &entry.credit_account, entry.amount_cents)? {
                tracing::error!(activity = %credit.activity_id, order_no = %credit.order_no, "budget account cannot pay a granted red packet");
                results.push(CreditResult::BudgetExhausted);
                continue;
            }
            entries.insert(entry.id.as_str(), entry.encode_to_vec().as_slice()).map_err(unavailable)?;
            user_entries.insert((entry.act_id, entry.time_ms, entry.id.as_str()), ()).map_err(unavailable)?;
            let before = income.get(entry.act_id).map_err(unavailable)?.map_or(0, |v| v.value());
            income.insert(entry.act_id, before.saturating_add(entry.amount_cents)).map_err(unavailable)?;
            results.push(CreditResult::Applied);
        }
    }
    txn.commit().map_err(unavailable)?;
    let read = db.begin_read().map_err(unavailable)?;
    let entries = read.open_table(ENTRIES).map_err(unavailable)?;
    for (credit, result) in credits.iter().zip(&results) {
        if *result == CreditResult::Applied {
            let id = red_packet_flow_id(&credit.activity_id, &credit.order_no);
            let stored =
                entries.get(id.as_str()).map_err(unavailable)?.map(|bytes| decode(bytes.value())).transpose()?;
            assert!(
                stored.is_some_and(|entry| entry.amount_cents == credit.amount_cents && entry.act_id == credit.act_id),
                "ledger entry `{id}` does not read back as credited"
            );
        }
    }
    Ok(results)
}

fn withdraw(db: &Database, request: &WithdrawalRequest) -> Result<Withdrawal, LedgerError> {
    if request.amount_cents <= 0 || request.amount_cents > ENTRY_CENTS_MAX {
        return Err(LedgerError::AmountOutOfRange(request.amount_cents));
    }
    let wallet = wallet_account(request.act_id);
    let id = format!("wd/{}/{}", request.act_id, request.request_id);
    let txn = db.begin_write().map_err(unavailable)?;
    let withdrawal = {
        let mut accounts = txn.open_table(ACCOUNTS).map_err(unavailable)?;
        let mut entries = txn.open_table(ENTRIES).map_err(unavailable)?;
        let mut user_entries = txn.open_table(USER_ENTRIES).map_err(unavailable)?;
        let existing = entries.get(id.as_str()).map_err(unavailable)?.map(|bytes| decode(bytes.value())).transpose()?;
        if let Some(entry) = existing {
            if entry.amount_cents != request.amount_cents {
                return Err(LedgerError::RequestConflict(request.request_id.clone()));
            }
            let balance_cents = accounts.get(wallet.as_str()).map_err(unavailable)?.map_or(0, |v| v.value());
            return Ok(Withdrawal { entry, balance_cents, replayed: true });
        }
        if !transfer(&mut accounts, &wallet, PAYOUTS_ACCOUNT, request.amount_cents)? {
            let balance_cents = accounts.get(wallet.as_str()).map_err(unavailable)?.map_or(0, |v| v.value());
            return Err(LedgerError::InsufficientBalance { balance_cents });
        }
        let entry = LedgerEntry {
            id,
            kind: EntryKind::Withdrawal as u32,
            debit_account: wallet.clone(),
            credit_account: PAYOUTS_ACCOUNT.to_owned(),
            amount_cents: request.amount_cents,
            time_ms: request.time_ms,
            act_id: request.act_id,
            reference: request.request_id.clone(),
            ..LedgerEntry::default()
        };
        entries.insert(entry.id.as_str(), entry.encode_to_vec().as_slice()).map_err(unavailable)?;
        user_entries.insert((entry.act_id, entry.time_ms, entry.id.as_str()), ()).map_err(unavailable)?;
        let balance_cents = accounts.get(wallet.as_str()).map_err(unavailable)?.map_or(0, |v| v.value());
        Withdrawal { entry, balance_cents, replayed: false }
    };
    txn.commit().map_err(unavailable)?;
    Ok(withdrawal)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression: funding an activity with the largest budget the config allows panicked on a
    // ledger assertion. It must fund, and an out-of-range budget must be an error, not a panic.
    #[test]
    fn largest_configured_budget_funds_and_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = EmbeddedLedger::open(dir.path()).unwrap();
        fund_activity(&ledger.db, "big", crate::config::BUDGET_CENTS_MAX, 0).unwrap();
        assert_eq!(ledger.balance(&budget_account("big")).unwrap(), crate::config::BUDGET_CENTS_MAX);
        assert!(matches!(fund_activity(&ledger.db, "big", i64::MAX, 0), Err(LedgerError::AmountOutOfRange(_))));
        assert!(matches!(fund_activity(&ledger.db, "big", 0, 0), Err(LedgerError::AmountOutOfRange(_))));
        // Funding the same total again writes nothing more.
        fund_activity(&ledger.db, "big", crate::config::BUDGET_CENTS_MAX, 0).unwrap();
        assert_eq!(ledger.all_entries().unwrap().len(), 1);
    }
}
