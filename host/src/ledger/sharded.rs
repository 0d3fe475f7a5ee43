//! The PostgreSQL ledger across several databases: `--ledger postgres://a,postgres://b,…`, one
//! ledger whose books are split by user. One URL is the plain PostgreSQL ledger, unchanged: every
//! call goes to its one database ([`Shard`]) as it did before shards existed.
//!
//! # Layout
//!
//! Shard `i` of `n` is the `i`-th URL. A user lives on shard `act_id mod n` (Euclidean, so
//! negative ids have a shard too): the wallet account, its income, the red packets credited to it
//! (`rp/{activity}/{order_no}`; every order number the host makes starts with `{act_id}_`, so the
//! id names its shard), its withdrawals (`wd/{act_id}/…`), and the group red packets it sends
//! (`ps/…`, `pr/…` and the account `packet/{id}`, which start on the sender's shard). A credit, a
//! withdrawal, a send or a refund is therefore one transaction on one database, exactly as on one
//! database. Each database records its place in the list (`ledger_shard`, migration 4) at its
//! first start; a start that lists the databases in another order or number is refused
//! ([`LedgerError::ShardLayout`]), because the list decides where every user's money is.
//!
//! # Budgets
//!
//! An activity's budget is split as the token store splits stock: shard `i` is funded with
//! [`budget_share`] (`budget / n`, one cent more on the first `budget % n` shards), so the shares
//! add up to the budget exactly, and each shard's budget account, like every guarded account,
//! never goes below zero (the CHECK): **never overspent**. A credit the user's shard cannot pay
//! from its share **borrows** from the other shards (**never stranded**), in three legs, each
//! one transaction on one database and each idempotent by its entry id:
//!
//! 1. On a lending shard `L`: `fund/{activity}/lent/{L}>{T}/{order_no}` moves cents from its
//!    budget into `transit/{L}>{T}` (half of what the lender holds when that is more than the
//!    credit needs, so a skewed rain borrows a few times, not once per credit; a packet's account
//!    lends exactly what its grabs need, so the refund finds the rest on the sender's shard).
//! 2. On the borrower `T`: `fund/{activity}/came/{L}>{T}/{order_no}` moves them from its own
//!    `transit/{L}>{T}` (below zero, like funding) into its budget.
//! 3. On `T`: the ordinary credit, from its budget, in one transaction as ever.
//!
//! A borrowing interrupted after leg 1 (the borrower's database lost, the host killed) leaves the
//! credit uncredited, so the writer tries it again; leg 1 then finds its loan under the same id
//! and lends nothing more, and leg 2 delivers it: the lender is debited once. Money that arrived
//! stays in the borrower's budget whatever happens next, so no order of failures loses a cent:
//! per database the books balance, and across them the transit accounts sum to the cents still on
//! their way (zero once every loan arrived). Loans left on the way by a credit that was then paid
//! otherwise (the budget raised in between) are delivered when the activity is funded next
//! ([`PostgresLedger::fund_activity`] settles them), which every host start and reload does.
//!
//! A group red packet's grabs are the same shape: their budget is `packet/{id}` on the sender's
//! shard, and a grabber on another shard borrows it. A refund short on the sender's shard (a loan
//! that arrived and was not all used) gathers the rest back the same way.
//!
//! # Reads
//!
//! A user's reads (wallet, flow, an entry whose id names its user) go to the user's shard, one
//! statement as before. Reads across users (an activity's red packets, every entry, every
//! balance, an account that is not a wallet) ask every shard at once and merge: an account's
//! balance is the sum of its copies, so `budget/{activity}` reads as the whole budget left. A
//! budget's or packet's balance also counts the loans between its copies still on their way:
//! each shard answers its copy plus its loans out minus its arrivals in one snapshot, a figure no
//! leg changes, so the sum is exact however the shards' reads interleave with a borrowing (a
//! packet's refund computes what nobody grabbed from it while grabs borrow).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::{join_all, try_join_all};

use super::postgres::Shard;
use super::rules;
use super::{
    Credit, CreditResult, EntryKind, LedgerEntry, LedgerError, LedgerWallet, PACKET_ACTIVITY_PREFIX, Withdrawal,
    WithdrawalRequest, budget_account,
};
use crate::store::FlowPosition;

/// Databases one ledger may span. Every read across users asks each one, so the count stays
/// small; 64 is far beyond what one writer fleet fills (each shard takes about 25k credits/s).
pub const SHARDS_MAX: usize = 64;

/// Rounds of borrowing one credit batch makes on a shard. A round lends from every other shard
/// until the batch's shortfall is covered; another round is needed only when credits on the
/// same shard took the arrived cents meanwhile, or a loan found from an earlier try had arrived.
const BORROW_ROUNDS_MAX: u32 = 4;

/// The shard (of `count`) that keeps a user's accounts and entries.
pub fn shard_of(act_id: i64, count: usize) -> usize {
    assert!(count > 0 && count <= SHARDS_MAX, "a ledger has 1 to {SHARDS_MAX} shards, not {count}");
    // Below SHARDS_MAX both conversions are exact.
    act_id.rem_euclid(count as i64) as usize
}

/// Shard `index`'s part of a budget of `budget_cents` over `count` shards: `budget / count`, and
/// one cent more on the first `budget % count` shards, so the parts add up to the budget.
pub fn budget_share(budget_cents: i64, index: usize, count: usize) -> i64 {
    assert!(index < count && count <= SHARDS_MAX, "shard {index} of {count}");
    let count = count as i64;
    budget_cents / count + i64::from((index as i64) < budget_cents % count)
}

/// What a lender gives for a shortfall of `need_cents` out of `balance_cents`: the need, or when
/// `generous` half the balance if that is more; never more than the balance.
pub(super) fn lend_amount(balance_cents: i64, need_cents: i64, generous: bool) -> i64 {
    let wanted = if generous { need_cents.max(balance_cents / 2) } else { need_cents };
    wanted.min(balance_cents).max(0)
}

/// The account between two shards that loans pass through; both shards keep a copy.
pub fn transit_account(from: usize, to: usize) -> String {
    format!("transit/{from}>{to}")
}

/// The id of the loan (`lent`) or arrival (`came`) from shard `from` to shard `to` for the credit
/// (or transfer) `cause` in borrowing round `round`.
fn loan_id(leg: &str, activity_id: &str, from: usize, to: usize, cause: &str, round: u32) -> String {
    match round {
        0 => format!("fund/{activity_id}/{leg}/{from}>{to}/{cause}"),
        _ => format!("fund/{activity_id}/{leg}/{from}>{to}/{cause}#{round}"),
    }
}

/// The act_id an entry id names, for the ids that name one: `rp/{activity}/{act_id}_…` (every
/// order number the host makes) and `wd/{act_id}/…`.
fn act_id_of_entry(id: &str) -> Option<i64> {
    if let Some(rest) = id.strip_prefix("rp/") {
        let (_, order_no) = rest.split_once('/')?;
        return order_no.split_once('_')?.0.parse().ok();
    }
    let (act_id, _) = id.strip_prefix("wd/")?.split_once('/')?;
    act_id.parse().ok()
}

/// The act_id a wallet account belongs to.
fn act_id_of_wallet(account: &str) -> Option<i64> {
    account.strip_prefix("wallet/")?.parse().ok()
}

/// `--ledger`'s value as a list of database URLs: one URL (any form PostgreSQL takes), or a comma
/// list of `postgres://` URLs, one per shard.
fn shard_urls(value: &str) -> Result<Vec<&str>, LedgerError> {
    if !value.contains(',') {
        return Ok(vec![value]);
    }
    let urls: Vec<&str> = value.split(',').map(str::trim).collect();
    if urls.len() > SHARDS_MAX {
        return Err(LedgerError::ShardLayout(format!("{} ledger databases; at most {SHARDS_MAX}", urls.len())));
    }
    for (index, url) in urls.iter().enumerate() {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(LedgerError::ShardLayout(format!(
                "ledger database {index} of the list is not a postgres:// URL"
            )));
        }
    }
    Ok(urls)
}

/// A URL as an error may show it: host, port and database, never the password.
fn shown(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else { return "(unparsable url)".into() };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

/// A handle on the PostgreSQL ledger, one database or several; clones share the connection
/// pools.
#[derive(Clone)]
pub struct PostgresLedger {
    shards: Arc<[Shard]>,
}

impl PostgresLedger {
    /// Connects to the database at `url`, or to every database of a comma list (one shard each,
    /// in list order), and brings their schemas up to date. TLS is not supported. Fails with
    /// [`LedgerError::Unavailable`] within seconds when a server cannot be reached, and with
    /// [`LedgerError::ShardLayout`] when the list is not the one the deployment first started with.
    pub async fn connect(url: &str) -> Result<PostgresLedger, LedgerError> {
        let urls = shard_urls(url)?;
        let shards = try_join_all(urls.iter().map(|url| Shard::connect(url))).await?;
        let count = i32::try_from(shards.len()).expect("at most SHARDS_MAX shards");
        let places = try_join_all(
            shards.iter().zip(0..).map(|(shard, index)| async move { shard.claim_place(index, count).await }),
        )
        .await?;
        for ((index, place), url) in (0..).zip(places).zip(&urls) {
            if place != (index, count) {
                let (recorded_index, recorded_count) = place;
                return Err(LedgerError::ShardLayout(format!(
                    "the database `{}` is shard {recorded_index} of {recorded_count}, but --ledger lists it as shard \
                     {index} of {count}; the list is fixed when a deployment first starts (docs/backends.md: adding \
                     a shard)",
                    shown(url)
                )));
            }
        }
        Ok(PostgresLedger { shards: shards.into() })
    }

    /// How many databases the ledger spans.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a user.
    fn home(&self, act_id: i64) -> &Shard {
        &self.shards[shard_of(act_id, self.shards.len())]
    }

    /// Tops the activity's budget up to `budget_cents` in total (idempotent): each shard to its
    /// [`budget_share`]. Then delivers loans of the activity left on their way ([`super::sharded`]).
    pub async fn fund_activity(&self, activity_id: String, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
        rules::check_amount(budget_cents)?;
        let count = self.shards.len();
        let fundings = self.shards.iter().enumerate().filter_map(|(index, shard)| {
            let share_cents = budget_share(budget_cents, index, count);
            (share_cents > 0).then(|| shard.fund_share(&activity_id, share_cents, budget_cents, time_ms))
        });
        try_join_all(fundings).await?;
        if count > 1 {
            self.settle_loans(&activity_id).await?;
        }
        Ok(())
    }

    /// Credits a batch of red packets: one transaction per shard the batch's users live on, run
    /// at once; credits a shard's budget share cannot pay then borrow ([`super::sharded`]). One
    /// result per credit, in order.
    pub async fn credit_batch(&self, credits: Vec<Credit>) -> Result<Vec<CreditResult>, LedgerError> {
        let count = self.shards.len();
        if count == 1 {
            return self.shards[0].credit_batch(credits).await;
        }
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, credit) in credits.iter().enumerate() {
            by_shard.entry(shard_of(credit.act_id, count)).or_default().push(index);
        }
        let batches = by_shard.iter().map(|(&shard, members)| {
            let batch: Vec<Credit> = members.iter().map(|&index| credits[index].clone()).collect();
            async move { self.credit_on(shard, batch).await }
        });
        // Every shard's transaction runs to its end before an error is answered: the writer
        // retries the whole batch, and the credits made find themselves already credited.
        let outcomes = join_all(batches).await;
        let mut results = vec![CreditResult::BudgetExhausted; credits.len()];
        for (members, outcome) in by_shard.values().zip(outcomes) {
            for (&index, result) in members.iter().zip(outcome?) {
                results[index] = result;
            }
        }
        Ok(results)
    }

    /// Credits a batch of one shard's users: locally, then by borrowing for what the shard's
    /// budgets could not pay.
    async fn credit_on(&self, shard: usize, credits: Vec<Credit>) -> Result<Vec<CreditResult>, LedgerError> {
        let mut results = self.shards[shard].credit_batch_locally(credits.clone()).await?;
        let mut short: Vec<usize> = short_credits(&results);
        for round in 0..BORROW_ROUNDS_MAX {
            if short.is_empty() {
                break;
            }
            let mut needs: BTreeMap<String, (i64, Vec<String>, &Credit)> = BTreeMap::new();
            for &index in &short {
                let credit = &credits[index];
                let (need, causes, _) =
                    needs.entry(budget_account(&credit.activity_id)).or_insert_with(|| (0, Vec::new(), credit));
                *need = need.saturating_add(credit.amount_cents);
                causes.push(credit.order_no.clone());
            }
            let (mut arrived, mut stale) = (false, false);
            for (account, (need, causes, first)) in needs {
                let ask = Borrowing {
                    to: shard,
                    account,
                    activity_id: first.activity_id.clone(),
                    causes,
                    need_cents: need.min(super::ENTRY_CENTS_MAX),
                    // A packet's account lends exactly what its grabs need, so that its refund
                    // finds the rest on the sender's shard.
                    generous: !first.activity_id.starts_with(PACKET_ACTIVITY_PREFIX),
                    round,
                    time_ms: first.open_time_ms,
                };
                let borrowed = self.borrow(&ask).await?;
                arrived |= borrowed.arrived_cents > 0;
                stale |= borrowed.stale;
            }
            // Tried again even when nothing arrived: loans other writers brought to this shard
            // meanwhile may pay it (every lender can be empty because its cents came here).
            let retried: Vec<Credit> = short.iter().map(|&index| credits[index].clone()).collect();
            let again = self.shards[shard].credit_batch_locally(retried).await?;
            for (&index, result) in short.iter().zip(&again) {
                results[index] = *result;
            }
            short = short
                .iter()
                .zip(&again)
                .filter(|(_, r)| **r == CreditResult::BudgetExhausted)
                .map(|(i, _)| *i)
                .collect();
            // Nothing arrived and nothing can: the shard's and the lenders' budgets are spent.
            // When a lender answered an old loan that had arrived long ago (its cents spent
            // meanwhile), the next round's loan ids are fresh: try them.
            if !arrived && !stale {
                break;
            }
        }
        for &index in &short {
            rules::report_budget_exhausted(&credits[index]);
        }
        Ok(results)
    }

    /// Lends `ask.need_cents` into `ask.account` on shard `ask.to` from the other shards, in turn
    /// from the next one on; answers the cents that arrived now.
    async fn borrow(&self, ask: &Borrowing) -> Result<Borrowed, LedgerError> {
        let count = self.shards.len();
        let (mut arrived_cents, mut stale) = (0, false);
        for from in (1..count).map(|step| (ask.to + step) % count) {
            if arrived_cents >= ask.need_cents {
                break;
            }
            let ids: Vec<String> = ask
                .causes
                .iter()
                .map(|cause| loan_id("lent", &ask.activity_id, from, ask.to, cause, ask.round))
                .collect();
            let loan = LedgerEntry {
                id: ids[0].clone(),
                kind: EntryKind::Funding as u32,
                debit_account: ask.account.clone(),
                credit_account: transit_account(from, ask.to),
                amount_cents: ask.need_cents - arrived_cents,
                time_ms: ask.time_ms,
                activity_id: ask.activity_id.clone(),
                reference: ask.causes[0].clone(),
                ..LedgerEntry::default()
            };
            let lent = self.shards[from].lend(&loan, &ids, ask.generous).await?;
            let Some((lent_id, amount_cents)) = lent.loan else { continue };
            if !lent.made_before {
                crate::failpoint::hit("ledger.borrow.after_lend");
            }
            let arrival = LedgerEntry {
                id: lent_id.replacen("/lent/", "/came/", 1),
                debit_account: loan.credit_account.clone(),
                credit_account: loan.debit_account.clone(),
                amount_cents,
                ..loan
            };
            // A loan made now has arrived when this returns, whoever delivered it (a host's
            // funding may settle it first). One made by an earlier try counts only if it arrives
            // now: had it arrived before, the shard's budget already held it when it fell short.
            let delivered_now = self.shards[ask.to].deliver(&arrival).await?;
            if delivered_now || !lent.made_before {
                tracing::debug!(loan = %lent_id, amount_cents, "budget lent between ledger shards");
                arrived_cents += amount_cents;
            } else {
                stale = true;
            }
        }
        Ok(Borrowed { arrived_cents, stale })
    }

    /// Delivers every loan of the activity that left its lender and never arrived (a credit
    /// paid otherwise after its borrowing was interrupted); answers the cents delivered.
    async fn settle_loans(&self, activity_id: &str) -> Result<i64, LedgerError> {
        let (start, end) = (format!("fund/{activity_id}/lent/"), format!("fund/{activity_id}/lent0"));
        let lent = try_join_all(self.shards.iter().map(|shard| shard.entries_in_range(&start, &end))).await?;
        let mut arrivals: BTreeMap<usize, Vec<LedgerEntry>> = BTreeMap::new();
        for loan in lent.into_iter().flatten() {
            let Some(to) = loan.credit_account.rsplit_once('>').and_then(|(_, to)| to.parse::<usize>().ok()) else {
                continue;
            };
            if to >= self.shards.len() {
                continue;
            }
            let arrival = LedgerEntry {
                id: loan.id.replacen("/lent/", "/came/", 1),
                debit_account: loan.credit_account.clone(),
                credit_account: loan.debit_account.clone(),
                ..loan
            };
            arrivals.entry(to).or_default().push(arrival);
        }
        let mut delivered_cents = 0;
        for (to, arrivals) in arrivals {
            let ids: Vec<String> = arrivals.iter().map(|arrival| arrival.id.clone()).collect();
            let arrived = self.shards[to].existing_ids(&ids).await?;
            for arrival in arrivals.iter().filter(|arrival| !arrived.contains(&arrival.id)) {
                if self.shards[to].deliver(arrival).await? {
                    tracing::warn!(loan = %arrival.id, cents = arrival.amount_cents, "delivered a loan left on its way");
                    delivered_cents += arrival.amount_cents;
                }
            }
        }
        Ok(delivered_cents)
    }

    /// Debits a wallet, once per request id, never below zero.
    pub async fn withdraw(&self, request: WithdrawalRequest) -> Result<Withdrawal, LedgerError> {
        self.transfer(LedgerEntry::withdrawal(&request)).await
    }

    /// Writes one entry out of an account that may not go below zero, once per id (see
    /// [`crate::ledger::Ledger::transfer`]), on the shard of the entry's user. A packet refund
    /// the sender's shard cannot pay gathers the packet's cents back from the other shards first.
    pub async fn transfer(&self, entry: LedgerEntry) -> Result<Withdrawal, LedgerError> {
        let count = self.shards.len();
        let to = shard_of(entry.act_id, count);
        let outcome = self.shards[to].transfer(entry.clone()).await;
        let Err(LedgerError::InsufficientBalance { balance_cents }) = outcome else { return outcome };
        if count == 1 || act_id_of_wallet(&entry.debit_account).is_some() {
            return outcome;
        }
        // Gathering lends exactly what is short. It takes no packet money a grab still needs:
        // a refund is written only after every grab of the packet was credited.
        let activity_id = match entry.debit_account.strip_prefix("packet/") {
            Some(packet_id) => super::packet_activity(packet_id),
            None => entry.activity_id.clone(),
        };
        let ask = Borrowing {
            to,
            account: entry.debit_account.clone(),
            activity_id,
            causes: vec![entry.id.clone()],
            need_cents: entry.amount_cents - balance_cents,
            generous: false,
            round: 0,
            time_ms: entry.time_ms,
        };
        if self.borrow(&ask).await?.arrived_cents == 0 {
            return outcome;
        }
        self.shards[to].transfer(entry).await
    }

    /// The user's balance and income, and which of `flow_ids` are credited, in one snapshot of
    /// the user's shard.
    pub async fn wallet(&self, act_id: i64, flow_ids: &[String]) -> Result<LedgerWallet, LedgerError> {
        self.home(act_id).wallet(act_id, flow_ids).await
    }

    /// Up to `limit` of the user's entries strictly older than `before`, newest first.
    pub async fn user_entries(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        self.home(act_id).user_entries(act_id, before, limit).await
    }

    /// The entry with this id: from the shard its id names, else from whichever shard has it.
    /// Funding entries exist on every funded shard under one id; the answer adds their amounts.
    pub async fn entry(&self, id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        if let Some(act_id) = act_id_of_entry(id).filter(|_| self.shards.len() > 1) {
            return self.home(act_id).entry(id).await;
        }
        let found = try_join_all(self.shards.iter().map(|shard| shard.entry(id))).await?;
        Ok(merge_entries(found.into_iter().flatten()).pop())
    }

    /// An account's balance: a wallet's from its user's shard, any other account's as the sum
    /// of its copies. A budget's or a packet's counts the cents lent between its copies that
    /// have not arrived: a refund reading its packet while a grab borrows sees all of it.
    pub async fn balance(&self, account: &str) -> Result<i64, LedgerError> {
        if self.shards.len() == 1 {
            return self.shards[0].balance(account).await;
        }
        if let Some(act_id) = act_id_of_wallet(account) {
            return self.home(act_id).balance(account).await;
        }
        let activity_id = match (account.strip_prefix("budget/"), account.strip_prefix("packet/")) {
            (Some(activity_id), _) => activity_id.to_owned(),
            (_, Some(packet_id)) => super::packet_activity(packet_id),
            _ => {
                let balances = try_join_all(self.shards.iter().map(|shard| shard.balance(account))).await?;
                return Ok(balances.into_iter().sum());
            }
        };
        let balances =
            try_join_all(self.shards.iter().map(|shard| shard.balance_with_loans(account, &activity_id))).await?;
        Ok(balances.into_iter().sum())
    }

    /// Whether any red packet of the activity was ever credited, on any shard.
    pub async fn has_red_packets(&self, activity_id: &str) -> Result<bool, LedgerError> {
        let found = try_join_all(self.shards.iter().map(|shard| shard.has_red_packets(activity_id))).await?;
        Ok(found.into_iter().any(|has| has))
    }

    /// The red packet entries of one activity, by id, from every shard; for reconciliation.
    pub async fn red_packets_of(&self, activity_id: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        let found = try_join_all(self.shards.iter().map(|shard| shard.red_packets_of(activity_id))).await?;
        Ok(merge_entries(found.into_iter().flatten()))
    }

    /// Every entry, by id, from every shard (a funding's copies as one entry); for audits.
    pub async fn all_entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        let found = try_join_all(self.shards.iter().map(Shard::all_entries)).await?;
        Ok(merge_entries(found.into_iter().flatten()))
    }

    /// Every account with its balance (the sum of its copies), by name; for audits. A transit
    /// account reads as the cents on their way between two shards.
    pub async fn all_balances(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        let found = try_join_all(self.shards.iter().map(Shard::all_balances)).await?;
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for (account, cents) in found.into_iter().flatten() {
            *sums.entry(account).or_default() += cents;
        }
        Ok(sums.into_iter().collect())
    }

    /// Every shard's accounts with their balances, by shard: the books as each database keeps
    /// them, for audits of the shards one by one.
    pub async fn balances_by_shard(&self) -> Result<Vec<Vec<(String, i64)>>, LedgerError> {
        try_join_all(self.shards.iter().map(Shard::all_balances)).await
    }

    /// The cents lent between shards that have not arrived: the sum of every transit account's
    /// copies, zero once every borrowing finished.
    pub async fn transit_cents(&self) -> Result<i64, LedgerError> {
        let balances = self.all_balances().await?;
        Ok(balances.iter().filter(|(account, _)| account.starts_with("transit/")).map(|(_, cents)| cents).sum())
    }

    /// The first shard's connection pool, for the identity tables, which live in the first
    /// database ([`crate::identity::postgres`]).
    pub(crate) fn pool(&self) -> &deadpool_postgres::Pool {
        self.shards[0].pool()
    }
}

/// A shortfall to borrow for on one shard.
struct Borrowing {
    /// The borrowing shard.
    to: usize,
    /// The budget (or packet) account short on it.
    account: String,
    /// The account's activity (`pk.{id}` for a packet's).
    activity_id: String,
    /// What the loan is for, naming it: the order numbers of the credits short, or a transfer's
    /// entry id. Leg 1 looks for an earlier loan under each.
    causes: Vec<String>,
    /// Cents short.
    need_cents: i64,
    /// Whether a lender gives half of what it holds when that is more than the need.
    generous: bool,
    /// The borrowing round, part of the loan ids.
    round: u32,
    /// The time written on the loan's entries.
    time_ms: u64,
}

/// What one borrowing brought.
struct Borrowed {
    /// Cents that arrived in the borrower's account.
    arrived_cents: i64,
    /// A lender answered a loan of an earlier try that had arrived before: its cents were in the
    /// borrower's account already when the credit fell short, so a fresh loan is needed.
    stale: bool,
}

/// The positions of the credits a shard's budgets could not pay.
fn short_credits(results: &[CreditResult]) -> Vec<usize> {
    (0..results.len()).filter(|&index| results[index] == CreditResult::BudgetExhausted).collect()
}

/// Entries from several shards by id, each id once: a funding's copies (one per funded shard,
/// the only entries written under one id on several shards) as one entry with their sum.
fn merge_entries(entries: impl Iterator<Item = LedgerEntry>) -> Vec<LedgerEntry> {
    let mut by_id: BTreeMap<String, LedgerEntry> = BTreeMap::new();
    for entry in entries {
        match by_id.get_mut(&entry.id) {
            Some(merged) => merged.amount_cents += entry.amount_cents,
            None => {
                by_id.insert(entry.id.clone(), entry);
            }
        }
    }
    by_id.into_values().collect()
}

#[cfg(test)]
mod tests {
    //! The pure parts (routing, the budget split, the lending rule) and, on a PostgreSQL server
    //! (`DATABASE_URL`, or trust auth on 127.0.0.1:5432), the ledger over two databases.

    use super::*;
    use crate::ledger::postgres::tests::{TestDb, credit};
    use crate::ledger::wallet_account;

    // Proves the shares of a budget add up to it exactly for every shard count, differ by at
    // most a cent, and give the remainder to the first shards.
    #[test]
    fn budget_shares_add_up_to_the_budget() {
        for count in 1..=SHARDS_MAX {
            for budget in [1, 2, 3, 7, 100, 101, 999_999, super::super::ENTRY_CENTS_MAX] {
                let shares: Vec<i64> = (0..count).map(|index| budget_share(budget, index, count)).collect();
                assert_eq!(shares.iter().sum::<i64>(), budget, "{budget} over {count}");
                let (low, high) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(high - low <= 1, "{budget} over {count}: {shares:?}");
                assert!(shares.windows(2).all(|pair| pair[0] >= pair[1]), "{shares:?}");
            }
        }
        assert_eq!((0..2).map(|i| budget_share(101, i, 2)).collect::<Vec<_>>(), [51, 50]);
        assert_eq!((0..3).map(|i| budget_share(1, i, 3)).collect::<Vec<_>>(), [1, 0, 0]);
    }

    // Proves the routing: users by act_id mod n (negative ids too), entry ids by the act_id they
    // name, and ids that name nobody are asked of every shard.
    #[test]
    fn users_and_entries_route_to_one_shard() {
        assert_eq!(shard_of(7, 1), 0);
        assert_eq!([shard_of(10, 3), shard_of(11, 3), shard_of(12, 3)], [1, 2, 0]);
        assert_eq!(shard_of(-1, 2), 1);
        assert_eq!(shard_of(i64::MIN, 3), i64::MIN.rem_euclid(3) as usize);
        assert_eq!(act_id_of_entry("rp/camp/42_rain_3_cash_1"), Some(42));
        assert_eq!(act_id_of_entry("rp/pk.0123456789abcdef0123/77_grab"), Some(77));
        assert_eq!(act_id_of_entry("wd/42/request-1"), Some(42));
        for nobody in ["rp/camp/1", "rp/camp/x_1", "ps/0123", "pr/0123", "fund/camp/100", "wd/x/1", "rp/"] {
            assert_eq!(act_id_of_entry(nobody), None, "{nobody}");
        }
        assert_eq!(act_id_of_wallet("wallet/-3"), Some(-3));
        assert_eq!(act_id_of_wallet("budget/camp"), None);
    }

    // Proves `--ledger` parses as one URL (any form) or a list of postgres:// URLs, bounded.
    #[test]
    fn ledger_urls_parse_as_a_list() {
        assert_eq!(shard_urls("host=h dbname=d").unwrap(), ["host=h dbname=d"]);
        assert_eq!(shard_urls("postgres://a/x, postgresql://b/y").unwrap(), ["postgres://a/x", "postgresql://b/y"]);
        assert!(matches!(shard_urls("postgres://a/x,redis://b"), Err(LedgerError::ShardLayout(_))));
        assert!(matches!(shard_urls("postgres://a/x,"), Err(LedgerError::ShardLayout(_))));
        let too_many = vec!["postgres://a/x"; SHARDS_MAX + 1].join(",");
        assert!(matches!(shard_urls(&too_many), Err(LedgerError::ShardLayout(_))));
        assert_eq!(shown("postgres://u:secret@db.example:6543/books"), "db.example:6543/books");
    }

    // Proves the lending rule: never more than the lender holds, the need when asked exactly,
    // half the balance when generous and that is more.
    #[test]
    fn lenders_give_what_is_needed_or_half() {
        assert_eq!(lend_amount(100, 10, false), 10);
        assert_eq!(lend_amount(100, 10, true), 50);
        assert_eq!(lend_amount(100, 70, true), 70);
        assert_eq!(lend_amount(5, 10, true), 5);
        assert_eq!(lend_amount(0, 10, true), 0);
        assert_eq!(lend_amount(1, 1, true), 1);
        assert_eq!(loan_id("lent", "a", 1, 0, "5_x", 0), "fund/a/lent/1>0/5_x");
        assert_eq!(loan_id("came", "a", 1, 0, "5_x", 2), "fund/a/came/1>0/5_x#2");
    }

    /// A ledger over two fresh databases, with the databases (dropped with them).
    async fn two_shards() -> (PostgresLedger, [TestDb; 2]) {
        let dbs = [TestDb::create().await, TestDb::create().await];
        let ledger = PostgresLedger::connect(&format!("{},{}", dbs[0].url, dbs[1].url)).await.unwrap();
        (ledger, dbs)
    }

    /// Checks the books of every shard and across them: each shard balances, no guarded account
    /// is below zero, nothing is on its way between shards, and the wallets and budgets left
    /// hold exactly what was funded. Answers the cents in wallets.
    async fn assert_books(ledger: &PostgresLedger, funded_cents: i64) -> i64 {
        for (shard, balances) in ledger.balances_by_shard().await.unwrap().iter().enumerate() {
            assert_eq!(balances.iter().map(|(_, cents)| cents).sum::<i64>(), 0, "shard {shard}: {balances:?}");
            for (account, cents) in balances {
                assert!(*cents >= 0 || rules::may_go_negative(account), "shard {shard}: {account} at {cents}");
            }
        }
        assert_eq!(ledger.transit_cents().await.unwrap(), 0, "cents left on their way");
        let balances = ledger.all_balances().await.unwrap();
        let sum_of = |prefix: &str| balances.iter().filter(|(a, _)| a.starts_with(prefix)).map(|(_, c)| c).sum::<i64>();
        let held = sum_of("wallet/") + sum_of("budget/") + sum_of("packet/") + sum_of("transit/");
        assert_eq!(held, funded_cents, "{balances:?}");
        assert_eq!(sum_of("funding/"), -funded_cents);
        sum_of("wallet/")
    }

    // Proves a budget split over two shards at its boundary, with every user on one shard: red
    // packets adding up to exactly the budget are all credited (never stranded: shard 0's share
    // is 51 of 101, the rest is borrowed from shard 1), one cent more is refused (never
    // overspent), and the books of both shards balance with nothing left on its way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_budget_split_over_shards_pays_exactly_its_total() {
        let (ledger, _dbs) = two_shards().await;
        ledger.fund_activity("a".into(), 101, 1).await.unwrap();
        assert_eq!(ledger.balance("budget/a").await.unwrap(), 101);
        // Users 2, 4, 6, …: all on shard 0. Amounts 1..=13 add up to 91, then 10 more.
        let mut amounts: Vec<i64> = (1..=13).collect();
        amounts.push(10);
        assert_eq!(amounts.iter().sum::<i64>(), 101);
        let credits: Vec<Credit> = amounts
            .iter()
            .enumerate()
            .map(|(n, &cents)| {
                let act_id = 2 * (n as i64 + 1);
                credit("a", &format!("{act_id}_rain_{n}"), act_id, cents, n as u64)
            })
            .collect();
        assert!(credits.iter().all(|credit| shard_of(credit.act_id, 2) == 0));
        for batch in credits.chunks(4) {
            let results = ledger.credit_batch(batch.to_vec()).await.unwrap();
            assert!(results.iter().all(|r| *r == CreditResult::Applied), "{results:?}");
        }
        let over = credit("a", "2_rain_over", 2, 1, 99);
        assert_eq!(ledger.credit_batch(vec![over.clone()]).await.unwrap(), [CreditResult::BudgetExhausted]);
        assert_eq!(ledger.balance("budget/a").await.unwrap(), 0);
        assert_eq!(assert_books(&ledger, 101).await, 101);
        // Redelivered, every credit is found already credited, on its user's shard.
        let again = ledger.credit_batch(credits.clone()).await.unwrap();
        assert!(again.iter().all(|r| *r == CreditResult::AlreadyCredited), "{again:?}");
        for credit in &credits {
            let id = crate::store::red_packet_flow_id("a", &credit.order_no);
            assert_eq!(ledger.entry(&id).await.unwrap().map(|e| e.amount_cents), Some(credit.amount_cents));
        }
        assert_eq!(ledger.red_packets_of("a").await.unwrap().len(), credits.len());

        // A credit larger than any one share is paid from both: 3 over shares of 2 and 1, to a
        // user on the shard with the smaller share.
        ledger.fund_activity("b".into(), 3, 1).await.unwrap();
        let whole = credit("b", "1_whole", 1, 3, 0);
        assert_eq!(ledger.credit_batch(vec![whole]).await.unwrap(), [CreditResult::Applied]);
        assert_eq!(ledger.balance("budget/b").await.unwrap(), 0);
        assert_eq!(ledger.wallet(1, &[]).await.unwrap().balance_cents, 3);
        assert_books(&ledger, 104).await;
    }

    // Proves borrowing under concurrency: four writers at once credit users all on shard 0
    // (whose share is half the budget), so they borrow from shard 1 at the same time; every
    // credit up to the budget is paid, exactly the budget is paid, and no cent is left on its way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_borrow_the_whole_budget_and_no_more() {
        let (ledger, _dbs) = two_shards().await;
        let budget = 4 * 25 * 3;
        ledger.fund_activity("a".into(), budget, 1).await.unwrap();
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let mut applied = 0;
                    for batch in 0..5 {
                        let credits: Vec<Credit> = (0..5)
                            .map(|n| {
                                let act_id = 2 * (1 + writer * 100 + batch * 10 + n);
                                credit("a", &format!("{act_id}_c"), act_id, 3, 0)
                            })
                            .collect();
                        let results = ledger.credit_batch(credits).await.unwrap();
                        applied += results.iter().filter(|r| **r == CreditResult::Applied).count();
                    }
                    applied
                })
            })
            .collect();
        let mut applied = 0;
        for writer in writers {
            applied += writer.await.unwrap();
        }
        // 100 credits of 3 cents: exactly the budget of 300.
        assert_eq!(applied, 100);
        assert_eq!(ledger.balance("budget/a").await.unwrap(), 0);
        let extra = credit("a", "2_extra", 2, 1, 0);
        assert_eq!(ledger.credit_batch(vec![extra]).await.unwrap(), [CreditResult::BudgetExhausted]);
        assert_eq!(assert_books(&ledger, budget).await, budget);
    }

    // Proves a borrowing interrupted after its first leg (the loan written on the lender, the
    // host gone before the arrival) completes once when the credit is tried again: the lender's
    // loan is found and reused, not made twice, and the books end as if nothing had happened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_borrowing_reuses_its_loan() {
        let (ledger, _dbs) = two_shards().await;
        ledger.fund_activity("a".into(), 100, 1).await.unwrap();
        let big = credit("a", "2_big", 2, 80, 5);
        // Leg 1 alone, as the borrowing writes it: shard 1 lends into transit for shard 0.
        let ids = vec![loan_id("lent", "a", 1, 0, &big.order_no, 0)];
        let loan = LedgerEntry {
            id: ids[0].clone(),
            kind: EntryKind::Funding as u32,
            debit_account: "budget/a".into(),
            credit_account: transit_account(1, 0),
            amount_cents: 30,
            time_ms: 5,
            activity_id: "a".into(),
            reference: big.order_no.clone(),
            ..LedgerEntry::default()
        };
        let lent = ledger.shards[1].lend(&loan, &ids, true).await.unwrap();
        assert_eq!(lent, super::super::postgres::Lent { loan: Some((ids[0].clone(), 30)), made_before: false });
        assert_eq!(ledger.transit_cents().await.unwrap(), 30, "the loan is on its way");
        assert_eq!(ledger.balance("budget/a").await.unwrap(), 100, "a budget counts its loans on their way");

        assert_eq!(ledger.credit_batch(vec![big.clone()]).await.unwrap(), [CreditResult::Applied]);
        assert_eq!(ledger.wallet(2, &[]).await.unwrap().balance_cents, 80);
        let loans: Vec<LedgerEntry> =
            ledger.all_entries().await.unwrap().into_iter().filter(|e| e.id.contains("/lent/")).collect();
        assert_eq!(loans.len(), 1, "{loans:?}");
        // Shard 1 lent 30 once: its share of 50 holds 20.
        let shard_1 = ledger.balances_by_shard().await.unwrap().remove(1);
        assert!(shard_1.contains(&("budget/a".to_owned(), 20)), "{shard_1:?}");
        assert_books(&ledger, 100).await;
    }

    // Proves a credit whose earlier borrowing delivered its loan, spent meanwhile by another
    // credit of the shard, borrows afresh (the next round's loan id) instead of stopping at the
    // old loan: the budget's last 20 cents still pay it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_credit_whose_old_loan_was_spent_borrows_afresh() {
        let (ledger, _dbs) = two_shards().await;
        ledger.fund_activity("a".into(), 100, 1).await.unwrap();
        let late = credit("a", "2_late", 2, 20, 5);
        let ids = vec![loan_id("lent", "a", 1, 0, &late.order_no, 0)];
        let loan = LedgerEntry {
            id: ids[0].clone(),
            kind: EntryKind::Funding as u32,
            debit_account: "budget/a".into(),
            credit_account: transit_account(1, 0),
            amount_cents: 30,
            activity_id: "a".into(),
            ..LedgerEntry::default()
        };
        ledger.shards[1].lend(&loan, &ids, false).await.unwrap();
        let arrival = LedgerEntry {
            id: loan_id("came", "a", 1, 0, &late.order_no, 0),
            debit_account: loan.credit_account.clone(),
            credit_account: loan.debit_account.clone(),
            ..loan
        };
        assert!(ledger.shards[0].deliver(&arrival).await.unwrap());
        // Another credit on shard 0 spends all 80 cents there.
        assert_eq!(ledger.credit_batch(vec![credit("a", "4_all", 4, 80, 5)]).await.unwrap(), [CreditResult::Applied]);
        assert_eq!(ledger.credit_batch(vec![late]).await.unwrap(), [CreditResult::Applied]);
        assert_eq!(ledger.balance("budget/a").await.unwrap(), 0);
        assert_books(&ledger, 100).await;
    }

    // Proves a loan left on its way by a credit that was then paid otherwise (here: the budget
    // raised in between) arrives when the activity is funded next, so no cent stays in transit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn funding_delivers_loans_left_on_their_way() {
        let (ledger, _dbs) = two_shards().await;
        ledger.fund_activity("a".into(), 10, 1).await.unwrap();
        let ids = vec![loan_id("lent", "a", 0, 1, "1_x", 0)];
        let loan = LedgerEntry {
            id: ids[0].clone(),
            kind: EntryKind::Funding as u32,
            debit_account: "budget/a".into(),
            credit_account: transit_account(0, 1),
            amount_cents: 4,
            activity_id: "a".into(),
            ..LedgerEntry::default()
        };
        ledger.shards[0].lend(&loan, &ids, false).await.unwrap();
        assert_eq!(ledger.transit_cents().await.unwrap(), 4);
        assert_eq!(ledger.balance("budget/a").await.unwrap(), 10);
        ledger.fund_activity("a".into(), 12, 2).await.unwrap();
        assert_eq!(ledger.transit_cents().await.unwrap(), 0);
        let shards = ledger.balances_by_shard().await.unwrap();
        assert!(shards[1].contains(&("budget/a".to_owned(), 6 + 4)), "{shards:?}");
        assert_books(&ledger, 12).await;
    }

    // Proves a group red packet across shards: the sender's packet account on the sender's
    // shard pays grabbers on the other shard exactly what they grab, and the refund of the rest
    // is paid on the sender's shard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_packet_pays_grabbers_on_another_shard_and_refunds_the_rest() {
        let (ledger, _dbs) = two_shards().await;
        ledger.fund_activity("a".into(), 100, 1).await.unwrap();
        ledger.credit_batch(vec![credit("a", "2_in", 2, 50, 1)]).await.unwrap();
        let send = LedgerEntry {
            id: "ps/p1".into(),
            kind: EntryKind::PacketSent as u32,
            debit_account: wallet_account(2),
            credit_account: crate::ledger::packet_account("p1"),
            amount_cents: 30,
            time_ms: 2,
            act_id: 2,
            ..LedgerEntry::default()
        };
        ledger.transfer(send).await.unwrap();
        let activity = crate::ledger::packet_activity("p1");
        let grabs = vec![credit(&activity, "3_grab", 3, 10, 3), credit(&activity, "5_grab", 5, 7, 3)];
        assert_eq!(ledger.credit_batch(grabs).await.unwrap(), [CreditResult::Applied, CreditResult::Applied]);
        assert_eq!(ledger.balance("packet/p1").await.unwrap(), 13);
        let refund = LedgerEntry {
            id: "pr/p1".into(),
            kind: EntryKind::PacketRefund as u32,
            debit_account: crate::ledger::packet_account("p1"),
            credit_account: wallet_account(2),
            amount_cents: 13,
            time_ms: 4,
            act_id: 2,
            ..LedgerEntry::default()
        };
        assert!(!ledger.transfer(refund).await.unwrap().replayed);
        assert_eq!(ledger.balance("packet/p1").await.unwrap(), 0);
        assert_eq!(ledger.wallet(2, &[]).await.unwrap().balance_cents, 50 - 30 + 13);
        assert_eq!(ledger.entry("ps/p1").await.unwrap().map(|e| e.amount_cents), Some(30));
        // The grabs moved money between wallets: they hold the 50 credited.
        assert_eq!(assert_books(&ledger, 100).await, 50);
    }

    // Proves a start with another shard list than the first is refused, naming the database:
    // the list in the other order, one database alone, one database twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_shard_list_is_refused() {
        let (ledger, dbs) = two_shards().await;
        drop(ledger);
        let (a, b) = (&dbs[0].url, &dbs[1].url);
        for list in [format!("{b},{a}"), a.clone(), format!("{a},{a}"), format!("{a},{b},{a}")] {
            match PostgresLedger::connect(&list).await {
                Err(LedgerError::ShardLayout(message)) => {
                    assert!(message.contains(&dbs[0].name) || message.contains(&dbs[1].name), "{message}");
                }
                Err(other) => panic!("{list}: {other}"),
                Ok(_) => panic!("{list}: accepted"),
            }
        }
        let again = PostgresLedger::connect(&format!("{a},{b}")).await.unwrap();
        assert_eq!(again.shard_count(), 2);
    }
}
