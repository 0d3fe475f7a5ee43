//! The money rules, written once for both ledgers: which amounts an entry may carry, how a
//! funding tops a budget up, what crediting a red packet and withdrawing do given what the books
//! hold, and the paired assertions around every write: on the entries before they are written,
//! and on what the storage gives back after.
//!
//! The rules take the facts they decide on (the entry already under an id, a balance) as plain
//! values. Each ledger reads those facts its own way (the embedded one from memory under its
//! writers' lock, the PostgreSQL one from rows it has locked) and both then decide the same, in
//! the same order, with the same log lines.
//!
//! Input is refused with an error ([`check_amount`]); the assertions only check what the rules
//! themselves produced, so one firing means a bug in the ledger, never a bad request.

use std::borrow::Cow;

use super::{Credit, CreditResult, ENTRY_CENTS_MAX, EntryKind, LedgerEntry, LedgerError};

/// Refuses an amount that is not positive or is larger than one entry may carry.
pub(super) fn check_amount(amount_cents: i64) -> Result<(), LedgerError> {
    if amount_cents <= 0 || amount_cents > ENTRY_CENTS_MAX {
        return Err(LedgerError::AmountOutOfRange(amount_cents));
    }
    Ok(())
}

/// Whether an account may go below zero: only an activity's funding account, which is where the
/// company's money comes from, and a transit account between ledger shards, whose borrower's copy
/// is the negative of its lender's (see [`super::sharded`]). Every other account pays only what it
/// holds.
pub(super) fn may_go_negative(account: &str) -> bool {
    account.starts_with("funding/") || account.starts_with("transit/")
}

/// The entry that tops an activity's budget up to `budget_cents` in total when `funded_cents`
/// are in already; none when the activity has that much or more (money put in stays; the grant
/// path enforces a lowered budget).
pub(super) fn funding_entry(
    activity_id: &str,
    budget_cents: i64,
    funded_cents: i64,
    time_ms: u64,
) -> Option<LedgerEntry> {
    let top_up_cents = budget_cents - funded_cents;
    (top_up_cents > 0).then(|| LedgerEntry::funding(activity_id, budget_cents, top_up_cents, time_ms))
}

/// What the books hold under a red packet's id: the amount and user of the entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Existing {
    /// The entry's amount.
    pub amount_cents: i64,
    /// The entry's user.
    pub act_id: i64,
}

/// Decides one credit from what the books hold under its id (`existing`, counting entries
/// written earlier in the same batch) and the balance of its activity's budget account. The
/// caller writes the entry only for [`CreditResult::Applied`], and then takes its amount off the
/// budget balance it passes for the batch's next credit.
pub(super) fn decide_credit(credit: &Credit, id: &str, existing: Option<Existing>, budget_cents: i64) -> CreditResult {
    let result = decide_credit_quietly(credit, id, existing, budget_cents);
    if result == CreditResult::BudgetExhausted {
        report_budget_exhausted(credit);
    }
    result
}

/// [`decide_credit`] without the log line of a budget that cannot pay: for a ledger shard, whose
/// budget share falling short only means the credit borrows from another shard; the sharded
/// ledger reports the credits that stay unpaid ([`report_budget_exhausted`]).
pub(super) fn decide_credit_quietly(
    credit: &Credit,
    id: &str,
    existing: Option<Existing>,
    budget_cents: i64,
) -> CreditResult {
    if let Some(existing) = existing {
        if existing.amount_cents == credit.amount_cents && existing.act_id == credit.act_id {
            return CreditResult::AlreadyCredited;
        }
        tracing::error!(entry = %id, ledger_cents = existing.amount_cents, token_cents = credit.amount_cents, "ledger holds this order with another amount or user");
        return CreditResult::Conflict;
    }
    if budget_cents < credit.amount_cents {
        return CreditResult::BudgetExhausted;
    }
    CreditResult::Applied
}

/// Logs a granted red packet the activity's budget cannot pay.
pub(super) fn report_budget_exhausted(credit: &Credit) {
    tracing::error!(activity = %credit.activity_id, order_no = %credit.order_no, "budget account cannot pay a granted red packet");
}

/// What a withdrawal does once [`decide_withdrawal`] allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WithdrawalStep {
    /// The request id was done before with this amount: answer with that entry again.
    Replay,
    /// Write [`LedgerEntry::withdrawal`].
    Write,
}

/// Decides a transfer (a withdrawal, a group red packet's send or refund) from the amount of the
/// entry already under its id, if any, and its debit account's balance: once per id, never below
/// zero. A conflict names the entry's reference (the client's request id).
pub(super) fn decide_withdrawal(
    entry: &LedgerEntry,
    existing_amount_cents: Option<i64>,
    balance_cents: i64,
) -> Result<WithdrawalStep, LedgerError> {
    match existing_amount_cents {
        Some(amount_cents) if amount_cents == entry.amount_cents => Ok(WithdrawalStep::Replay),
        Some(_) => Err(LedgerError::RequestConflict(entry.reference.clone())),
        None if balance_cents < entry.amount_cents && !may_go_negative(&entry.debit_account) => {
            Err(LedgerError::InsufficientBalance { balance_cents })
        }
        None => Ok(WithdrawalStep::Write),
    }
}

/// Asserts that a credit batch's decisions and the entries about to be written agree: the
/// applied credits, in order, are exactly the written entries, each with its credit's id,
/// amount and user, paid from its activity's budget into its user's wallet.
pub(super) fn assert_credit_plan(credits: &[Credit], results: &[CreditResult], written: &[LedgerEntry]) {
    assert_eq!(credits.len(), results.len(), "one result per credit");
    let mut entries = written.iter();
    for (credit, _) in credits.iter().zip(results).filter(|(_, result)| **result == CreditResult::Applied) {
        let expected = LedgerEntry::red_packet(credit);
        let entry = entries.next().unwrap_or_else(|| panic!("applied credit `{}` has no entry to write", expected.id));
        assert!(
            entry.id == expected.id
                && entry.amount_cents == expected.amount_cents
                && entry.act_id == expected.act_id
                && entry.debit_account == expected.debit_account
                && entry.credit_account == expected.credit_account,
            "entry {entry:?} does not write credit {credit:?}"
        );
    }
    assert!(entries.next().is_none(), "a credit batch writes an entry no credit applied");
}

/// Asserts what a write is about to record: every amount in range, money moving between two
/// different accounts, an id of the entry's kind, and no id twice.
pub(super) fn assert_before_write(entries: &[LedgerEntry]) {
    let mut ids = std::collections::HashSet::with_capacity(entries.len());
    for entry in entries {
        assert!(
            entry.amount_cents > 0 && entry.amount_cents <= ENTRY_CENTS_MAX,
            "entry `{}` moves {} cents",
            entry.id,
            entry.amount_cents
        );
        assert_ne!(entry.debit_account, entry.credit_account, "entry `{}` moves money to its own account", entry.id);
        let prefix = match entry.kind() {
            EntryKind::RedPacket => "rp/",
            EntryKind::Withdrawal => "wd/",
            EntryKind::Funding => "fund/",
            EntryKind::PacketSent => "ps/",
            EntryKind::PacketRefund => "pr/",
        };
        assert!(entry.id.starts_with(prefix), "entry `{}` is not named as a {:?}", entry.id, entry.kind());
        assert!(ids.insert(entry.id.as_str()), "entry `{}` is written twice in one batch", entry.id);
    }
}

/// An entry as the storage gives it back after a write: the facts the money rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadBack<'a> {
    /// The account debited.
    pub debit_account: Cow<'a, str>,
    /// The account credited.
    pub credit_account: Cow<'a, str>,
    /// The amount moved.
    pub amount_cents: i64,
}

impl<'a> ReadBack<'a> {
    /// What `entry` says.
    pub(super) fn of(entry: &'a LedgerEntry) -> ReadBack<'a> {
        ReadBack {
            debit_account: Cow::Borrowed(&entry.debit_account),
            credit_account: Cow::Borrowed(&entry.credit_account),
            amount_cents: entry.amount_cents,
        }
    }
}

/// Asserts, after a write committed, that the storage gives back every written entry under its
/// id with the accounts and amount it was written with. `read_back` looks an id up in what the
/// storage returned.
pub(super) fn assert_read_back<'a>(written: &'a [LedgerEntry], read_back: impl Fn(&str) -> Option<ReadBack<'a>>) {
    for entry in written {
        let found = read_back(&entry.id);
        assert!(
            found == Some(ReadBack::of(entry)),
            "ledger entry `{}` does not read back as written: {found:?}",
            entry.id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(order_no: &str, act_id: i64, amount_cents: i64) -> Credit {
        Credit {
            activity_id: "a".into(),
            order_no: order_no.into(),
            scene_id: "s".into(),
            act_id,
            amount_cents,
            open_time_ms: 1,
            memo: "m".into(),
            token: "t".into(),
        }
    }

    // Proves the amount rule refuses with an error, not a panic, on both sides of the range.
    #[test]
    fn amounts_out_of_range_are_errors() {
        assert!(check_amount(1).is_ok());
        assert!(check_amount(ENTRY_CENTS_MAX).is_ok());
        for bad in [0, -1, ENTRY_CENTS_MAX + 1, i64::MIN, i64::MAX] {
            assert!(matches!(check_amount(bad), Err(LedgerError::AmountOutOfRange(cents)) if cents == bad));
        }
    }

    // Proves a funding writes only the difference up to a higher total, and nothing otherwise.
    #[test]
    fn funding_tops_up_the_difference_only() {
        let entry = funding_entry("a", 100, 30, 5).expect("a top-up");
        assert_eq!((entry.id.as_str(), entry.amount_cents, entry.time_ms), ("fund/a/100", 70, 5));
        assert_eq!(funding_entry("a", 100, 100, 5), None);
        assert_eq!(funding_entry("a", 50, 100, 5), None);
        assert!(may_go_negative(&entry.debit_account));
        assert!(!may_go_negative(&entry.credit_account));
    }

    // Proves each credit outcome: a redelivery, a conflict on amount or on user, a budget that
    // cannot pay, and one that pays exactly.
    #[test]
    fn credit_decisions() {
        let c = credit("1", 7, 60);
        let same = Existing { amount_cents: 60, act_id: 7 };
        assert_eq!(decide_credit(&c, "rp/a/1", Some(same), 0), CreditResult::AlreadyCredited);
        let other_amount = Existing { amount_cents: 61, act_id: 7 };
        assert_eq!(decide_credit(&c, "rp/a/1", Some(other_amount), 1000), CreditResult::Conflict);
        let other_user = Existing { amount_cents: 60, act_id: 8 };
        assert_eq!(decide_credit(&c, "rp/a/1", Some(other_user), 1000), CreditResult::Conflict);
        assert_eq!(decide_credit(&c, "rp/a/1", None, 59), CreditResult::BudgetExhausted);
        assert_eq!(decide_credit(&c, "rp/a/1", None, 60), CreditResult::Applied);
    }

    // Proves a withdrawal replays its request id, refuses another amount under it, and never
    // takes a wallet below zero.
    #[test]
    fn withdrawal_decisions() {
        let request = LedgerEntry::withdrawal(&super::super::WithdrawalRequest {
            act_id: 5,
            request_id: "r1".into(),
            amount_cents: 30,
            time_ms: 0,
        });
        assert_eq!(decide_withdrawal(&request, Some(30), 0).unwrap(), WithdrawalStep::Replay);
        assert!(
            matches!(decide_withdrawal(&request, Some(31), 100), Err(LedgerError::RequestConflict(r)) if r == "r1")
        );
        assert!(matches!(
            decide_withdrawal(&request, None, 29),
            Err(LedgerError::InsufficientBalance { balance_cents: 29 })
        ));
        assert_eq!(decide_withdrawal(&request, None, 30).unwrap(), WithdrawalStep::Write);
    }

    // Proves the before-write assertions pass what the rules produce and stop a plan whose
    // entries do not match its decisions.
    #[test]
    fn plan_assertions_hold_for_the_rules_and_catch_a_mismatch() {
        let credits = [credit("1", 1, 5), credit("2", 1, 6)];
        let results = [CreditResult::Applied, CreditResult::BudgetExhausted];
        let written = vec![LedgerEntry::red_packet(&credits[0])];
        assert_credit_plan(&credits, &results, &written);
        assert_before_write(&written);
        let funding = funding_entry("a", 10, 0, 0).unwrap();
        assert_before_write(std::slice::from_ref(&funding));

        let wrong_amount = vec![LedgerEntry { amount_cents: 6, ..written[0].clone() }];
        let caught = std::panic::catch_unwind(|| assert_credit_plan(&credits, &results, &wrong_amount));
        assert!(caught.is_err(), "an entry with another amount than its credit");
        let extra = vec![written[0].clone(), LedgerEntry::red_packet(&credits[1])];
        assert!(std::panic::catch_unwind(|| assert_credit_plan(&credits, &results, &extra)).is_err());
        let twice = vec![written[0].clone(), written[0].clone()];
        assert!(std::panic::catch_unwind(|| assert_before_write(&twice)).is_err(), "an id twice");
        let zero = vec![LedgerEntry { amount_cents: 0, ..funding }];
        assert!(std::panic::catch_unwind(|| assert_before_write(&zero)).is_err(), "a zero amount");
    }

    // Proves the read-back assertion passes an exact read and stops a missing or changed entry.
    #[test]
    fn read_back_must_match_what_was_written() {
        let written = vec![LedgerEntry::red_packet(&credit("1", 1, 5))];
        let stored = written.clone();
        assert_read_back(&written, |id| stored.iter().find(|e| e.id == id).map(ReadBack::of));
        assert!(std::panic::catch_unwind(|| assert_read_back(&written, |_| None)).is_err(), "missing");
        let changed = [LedgerEntry { amount_cents: 4, ..stored[0].clone() }];
        let read = |id: &str| changed.iter().find(|e| e.id == id).map(ReadBack::of);
        assert!(std::panic::catch_unwind(|| assert_read_back(&written, read)).is_err(), "changed amount");
    }
}
