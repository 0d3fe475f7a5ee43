//! The embedded ledger's books in memory, rebuilt from its journal at open.
//!
//! Every entry stays for as long as the ledger lives, so the layout is what a grant costs in
//! memory (`hongbao bench footprint`): the entries in a flat table by the order they were
//! written ([`KeptEntry`], 64 bytes and one allocation of texts each), an index from id to that
//! sequence number (4 bytes a slot), one row per user holding the wallet's balance, the income
//! and the user's entries in flow order, and the other accounts (budgets, group packets) by name.
//! Reads by id prefix (reconciliation, audits) walk the table; none is on the grant path.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use super::kept::{Interned, KeptEntry, wallet_user};
use super::rules::{self, Existing, ReadBack};
use super::{EntryKind, LedgerEntry, LedgerError, wallet_account};
use crate::split_map::{SplitMap, SplitTable};
use crate::store::FlowPosition;

/// Entries a chunk of the table holds: the table grows a chunk at a time, never moving what it
/// holds (a move of a whole table would hold the writers' lock while every grant waits).
const CHUNK_BITS: u32 = 13;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Sequence numbers are `u32`: the books refuse a write past this many entries.
const ENTRIES_MAX: usize = u32::MAX as usize;

/// The books (see the module docs).
#[derive(Default)]
pub(super) struct Books {
    entries: Table,
    /// Id → sequence number: `u32`s in a split table, the ids themselves read from the entries.
    by_id: SplitTable<u32>,
    strings: Interned,
    /// Account → balance in cents, for every account but users' wallets.
    named: SplitMap<String, i64>,
    /// Act id → the user's wallet, income and entries. Boxed: a table of 56-byte entries runs
    /// 44 % to 88 % full as it doubles (64 to 128 bytes a user), the box is 48 bytes and the
    /// table's pointers 18 to 37.
    users: SplitMap<i64, Box<UserBooks>>,
    /// Activity → cents funded so far.
    funded: HashMap<String, i64>,
    /// `{a}` of every id `rp/{a}/…` written: which activities have red packets.
    red_packet_activities: HashSet<Box<str>>,
}

/// One user's part of the books.
#[derive(Default)]
struct UserBooks {
    /// The balance of `wallet/{act_id}`.
    balance: i64,
    /// Cents of red packets ever credited.
    income: i64,
    /// The user's entries (red packets, withdrawals, packets sent and refunded) by (time, id).
    entries: Vec<u32>,
    /// Whether `wallet/{act_id}` was ever debited or credited (an account the books list).
    has_wallet: bool,
}

/// The entries by sequence number, in chunks of [`CHUNK`].
#[derive(Default)]
struct Table {
    chunks: Vec<Vec<KeptEntry>>,
    len: usize,
}

impl Table {
    fn push(&mut self, entry: KeptEntry) -> u32 {
        let seq = u32::try_from(self.len).expect("checked by Books::check_room");
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("pushed above").push(entry);
        self.len += 1;
        seq
    }

    fn get(&self, seq: u32) -> &KeptEntry {
        let seq = seq as usize;
        &self.chunks[seq >> CHUNK_BITS][seq & (CHUNK - 1)]
    }

    fn iter(&self) -> impl Iterator<Item = &KeptEntry> {
        self.chunks.iter().flatten()
    }
}

impl Books {
    /// The balance of an account, 0 when it was never used.
    pub(super) fn balance(&self, account: &str) -> i64 {
        match wallet_user(account) {
            Some(act_id) => self.users.get(&act_id).map_or(0, |user| user.balance),
            None => self.named.get(account).copied().unwrap_or(0),
        }
    }

    /// The account's balance, the account made (at 0) on first use.
    fn account_mut(&mut self, account: &str) -> &mut i64 {
        if let Some(act_id) = wallet_user(account) {
            let user = self.users.get_or_insert_with(act_id, Box::default);
            user.has_wallet = true;
            return &mut user.balance;
        }
        if self.named.get(account).is_none() {
            self.named.insert(account.to_owned(), 0);
        }
        self.named.get_mut(account).expect("inserted above")
    }

    /// Refuses a write of `more` entries the table has no sequence numbers left for.
    pub(super) fn check_room(&self, more: usize) -> Result<(), LedgerError> {
        if self.entries.len + more > ENTRIES_MAX {
            return Err(LedgerError::Unavailable(format!(
                "the embedded ledger holds {} entries, its most",
                self.entries.len
            )));
        }
        Ok(())
    }

    /// Refuses an entry whose amount would overflow the balance of the account it credits. The
    /// rules ([`rules`]) decide whether the debited account can pay; this only guards the sum.
    pub(super) fn check_fits(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        self.balance(&entry.credit_account)
            .checked_add(entry.amount_cents)
            .ok_or(LedgerError::AmountOutOfRange(entry.amount_cents))?;
        Ok(())
    }

    /// Records an entry: moves its amount and updates the indexes. Entries are checked before
    /// they are recorded (or were, when they were first written and are now replayed), and an id
    /// is recorded once.
    pub(super) fn record(&mut self, entry: &LedgerEntry) {
        let amount = entry.amount_cents;
        let debited = self.account_mut(&entry.debit_account);
        *debited -= amount;
        assert!(
            *debited >= 0 || rules::may_go_negative(&entry.debit_account),
            "entry `{}` takes `{}` below zero",
            entry.id,
            entry.debit_account
        );
        let credited = self.account_mut(&entry.credit_account);
        *credited = credited.saturating_add(amount);
        let kept = KeptEntry::keep(entry, &mut self.strings);
        let seq = self.entries.push(kept);
        self.index_id(&entry.id, seq);
        if let Some(activity) = entry.id.strip_prefix("rp/").and_then(|rest| rest.split_once('/')).map(|(a, _)| a)
            && !self.red_packet_activities.contains(activity)
        {
            self.red_packet_activities.insert(activity.into());
        }
        match entry.kind() {
            EntryKind::RedPacket | EntryKind::Withdrawal | EntryKind::PacketSent | EntryKind::PacketRefund => {
                let Books { users, entries, strings, .. } = self;
                let user = users.get_or_insert_with(entry.act_id, Box::default);
                if entry.kind() == EntryKind::RedPacket {
                    user.income = user.income.saturating_add(amount);
                }
                let before = |&other: &u32| flow_order_below(entries.get(other), strings, entry.time_ms, &entry.id);
                let at = match user.entries.last() {
                    Some(last) if !before(last) => user.entries.partition_point(before),
                    _ => user.entries.len(),
                };
                if user.entries.is_empty() {
                    // A user's first entry: exactly one slot.
                    user.entries.reserve_exact(1);
                }
                user.entries.insert(at, seq);
            }
            EntryKind::Funding => {
                let funded = self.funded.entry(entry.activity_id.clone()).or_default();
                *funded = funded.saturating_add(amount);
            }
        }
    }

    fn index_id(&mut self, id: &str, seq: u32) {
        let Books { entries, by_id, strings, .. } = self;
        let hash = by_id.hash(id);
        // Growing a part rehashes its ids, written out into one buffer.
        let buffer = RefCell::new(String::new());
        let rehash = |hasher: &RandomState, &other: &u32| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            entries.get(other).write_id(strings, &mut buffer);
            hasher.hash_one(buffer.as_str())
        };
        by_id.insert_unique(hash, seq, rehash);
    }

    /// The kept entry with this id.
    fn find(&self, id: &str) -> Option<&KeptEntry> {
        let hash = self.by_id.hash(id);
        self.by_id.find(hash, |&seq| self.entries.get(seq).id_is(&self.strings, id)).map(|&seq| self.entries.get(seq))
    }

    /// Whether an entry has this id.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// The entry with this id, as it was written.
    pub(super) fn entry(&self, id: &str) -> Option<LedgerEntry> {
        self.find(id).map(|kept| kept.entry(&self.strings))
    }

    /// What the credit rules need of the entry with this id.
    pub(super) fn existing(&self, id: &str) -> Option<Existing> {
        self.find(id).map(|kept| Existing { amount_cents: kept.amount_cents(), act_id: kept.act_id() })
    }

    /// The accounts and amount of the entry with this id, for a write's read-back.
    pub(super) fn read_back(&self, id: &str) -> Option<ReadBack<'_>> {
        self.find(id).map(|kept| kept.read_back(&self.strings))
    }

    /// Cents the activity was funded to.
    pub(super) fn funded(&self, activity_id: &str) -> i64 {
        self.funded.get(activity_id).copied().unwrap_or(0)
    }

    /// Cents of red packets the user was ever credited.
    pub(super) fn income(&self, act_id: i64) -> i64 {
        self.users.get(&act_id).map_or(0, |user| user.income)
    }

    /// Up to `limit` of the user's entries strictly before `before` in flow order, newest first.
    pub(super) fn user_entries(&self, act_id: i64, before: Option<&FlowPosition>, limit: usize) -> Vec<LedgerEntry> {
        let Some(user) = self.users.get(&act_id) else { return Vec::new() };
        let end = before.map_or(user.entries.len(), |position| {
            user.entries.partition_point(|&seq| {
                flow_order_below(self.entries.get(seq), &self.strings, position.time_ms, &position.flow_id)
            })
        });
        user.entries[..end].iter().rev().take(limit).map(|&seq| self.entries.get(seq).entry(&self.strings)).collect()
    }

    /// Whether any entry's id is `rp/{activity_id}/…`.
    pub(super) fn has_red_packets(&self, activity_id: &str) -> bool {
        if activity_id.contains('/') {
            return self.red_packets_of(activity_id).next().is_some();
        }
        self.red_packet_activities.contains(activity_id)
    }

    /// The entries whose ids are `rp/{activity_id}/…`, unordered.
    fn red_packets_of<'a>(&'a self, activity_id: &str) -> impl Iterator<Item = &'a KeptEntry> + 'a {
        let prefix = format!("rp/{activity_id}/");
        self.entries.iter().filter(move |kept| kept.id_starts_with(&self.strings, &prefix))
    }

    /// The red packet entries of one activity, by id.
    pub(super) fn red_packets_by_id(&self, activity_id: &str) -> Vec<LedgerEntry> {
        by_id(self.red_packets_of(activity_id).map(|kept| kept.entry(&self.strings)).collect())
    }

    /// Every entry, by id.
    pub(super) fn all_entries(&self) -> Vec<LedgerEntry> {
        by_id(self.entries.iter().map(|kept| kept.entry(&self.strings)).collect())
    }

    /// Every account ever used with its balance, by name.
    pub(super) fn all_balances(&self) -> Vec<(String, i64)> {
        let named = self.named.iter().map(|(name, balance)| (name.clone(), *balance));
        let wallets = self
            .users
            .iter()
            .filter(|(_, user)| user.has_wallet)
            .map(|(act_id, user)| (wallet_account(*act_id), user.balance));
        let mut all: Vec<(String, i64)> = named.chain(wallets).collect();
        all.sort_unstable();
        all
    }
}

/// Whether `kept` comes before (`time_ms`, `id`) in a user's flow: by time, then by id.
fn flow_order_below(kept: &KeptEntry, strings: &Interned, time_ms: u64, id: &str) -> bool {
    match kept.time_ms().cmp(&time_ms) {
        std::cmp::Ordering::Equal => *kept.id(strings) < *id,
        order => order.is_lt(),
    }
}

fn by_id(mut entries: Vec<LedgerEntry>) -> Vec<LedgerEntry> {
    entries.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    entries
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ledger::{Credit, WithdrawalRequest, budget_account};

    fn credit(act_id: i64, order: u64, time_ms: u64) -> LedgerEntry {
        LedgerEntry::red_packet(&Credit {
            activity_id: "spring".into(),
            order_no: format!("{act_id}_rain_{order}_cash_0"),
            scene_id: "rain".into(),
            act_id,
            amount_cents: 1,
            open_time_ms: time_ms,
            memo: "m".into(),
            token: format!("t{act_id}/{order}"),
        })
    }

    fn funded(cents: i64) -> Books {
        let mut books = Books::default();
        books.record(&crate::ledger::rules::funding_entry("spring", cents, 0, 0).expect("a funding"));
        books
    }

    // Proves every id is found after the index's parts grew many times (their ids rehashed from
    // the entries), that an id written nowhere is not, and that a user's wallet, income and
    // account list follow the entries.
    #[test]
    fn ids_are_found_after_the_index_grows() {
        let users = 20_000;
        let mut books = funded(users * 2);
        for act_id in 1..=users {
            books.record(&credit(act_id, 1, act_id as u64));
        }
        let request = WithdrawalRequest { act_id: 7, request_id: "w".into(), amount_cents: 1, time_ms: 9 };
        books.record(&LedgerEntry::withdrawal(&request));
        for act_id in 1..=users {
            let entry = credit(act_id, 1, act_id as u64);
            assert_eq!(books.entry(&entry.id).as_ref(), Some(&entry));
            assert!(!books.contains(&credit(act_id, 2, 0).id));
        }
        assert_eq!(books.entry("wd/7/w").map(|entry| entry.amount_cents), Some(1));
        assert!(!books.contains("rp/spring/"));
        assert_eq!(books.balance(&wallet_account(7)), 0);
        assert_eq!(books.income(7), 1);
        assert_eq!(books.balance(&budget_account("spring")), users);
        assert_eq!(books.all_entries().len(), users as usize + 2);
        let balances = books.all_balances();
        assert_eq!(balances.len(), users as usize + 3, "every wallet, the budget, the funding and the payouts");
        assert!(balances.is_sorted());
        assert!(books.has_red_packets("spring") && !books.has_red_packets("spr") && !books.has_red_packets("s/x"));
        assert_eq!(books.red_packets_by_id("spring").len(), users as usize);
    }

    // Proves a user's entries page in (time, id) order whatever order they were written in, ties
    // on time broken by id, as the flow's positions compare them.
    #[test]
    fn a_users_entries_page_in_flow_order() {
        let mut books = funded(1_000);
        let mut model = BTreeSet::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for order in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let entry = credit(5, order, state % 40);
            model.insert((entry.time_ms, entry.id.clone()));
            books.record(&entry);
        }
        let all: Vec<(u64, String)> = model.iter().rev().cloned().collect();
        let page = |before: Option<&(u64, String)>| {
            let position =
                before.map(|(time_ms, flow_id)| FlowPosition { time_ms: *time_ms, flow_id: flow_id.clone() });
            books.user_entries(5, position.as_ref(), 50).into_iter().map(|e| (e.time_ms, e.id)).collect::<Vec<_>>()
        };
        let mut walked = page(None);
        while let Some(last) = walked.last().cloned() {
            let next = page(Some(&last));
            if next.is_empty() {
                break;
            }
            walked.extend(next);
        }
        assert_eq!(walked, all);
        assert!(books.user_entries(6, None, 10).is_empty());
    }
}
