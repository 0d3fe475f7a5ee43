//! An entry as the embedded ledger keeps it in memory.
//!
//! The books hold every entry for as long as the ledger lives, so each byte of one is a byte per
//! grant. A [`LedgerEntry`] is eight strings; [`KeptEntry`] keeps them as little as possible and
//! gives the same entry back ([`KeptEntry::entry`]):
//!
//! - the id is the books' key, not repeated inside;
//! - the strings many entries repeat (activity, scene, budget and other shared accounts) are one
//!   allocation each, shared ([`crate::shared_strings`]);
//! - the user's wallet account, `wallet/{act_id}`, is not kept: the user's id gives it back;
//! - a red packet's token is kept by what the entry's fields cannot give back (`issuer::kept`).
//!
//! Measured with `hongbao bench footprint` (BENCHMARKS.md).

use std::borrow::Cow;
use std::sync::Arc;

use super::{EntryKind, LedgerEntry, wallet_account};
use crate::issuer::kept::{KeptToken, TokenFields};
use crate::shared_strings::SharedStrings;

/// An account of an entry.
#[derive(Clone)]
enum Account {
    /// The entry's user's wallet, `wallet/{act_id}`.
    Wallet,
    /// Any other account, shared.
    Named(Arc<str>),
}

impl Account {
    fn keep(name: &str, act_id: i64, strings: &mut SharedStrings) -> Account {
        if is_wallet_of(name, act_id) { Account::Wallet } else { Account::Named(strings.share(name)) }
    }

    fn name(&self, act_id: i64) -> Cow<'_, str> {
        match self {
            Account::Wallet => Cow::Owned(wallet_account(act_id)),
            Account::Named(name) => Cow::Borrowed(name),
        }
    }
}

/// Whether `name` is `wallet/{act_id}`, written as [`wallet_account`] writes it.
fn is_wallet_of(name: &str, act_id: i64) -> bool {
    name.strip_prefix("wallet/").is_some_and(|id| id.parse::<i64>().is_ok_and(|id| id == act_id))
        && name == wallet_account(act_id)
}

/// A [`LedgerEntry`] without its id, its strings shared or derived (see the module docs).
pub(super) struct KeptEntry {
    kind: u32,
    amount_cents: i64,
    time_ms: u64,
    act_id: i64,
    debit_account: Account,
    credit_account: Account,
    memo: Box<str>,
    activity_id: Arc<str>,
    scene_id: Arc<str>,
    reference: Box<str>,
    token: KeptToken,
}

impl KeptEntry {
    /// Keeps `entry`, sharing its repeated strings through `strings`.
    pub(super) fn keep(entry: &LedgerEntry, strings: &mut SharedStrings) -> KeptEntry {
        KeptEntry {
            kind: entry.kind,
            amount_cents: entry.amount_cents,
            time_ms: entry.time_ms,
            act_id: entry.act_id,
            debit_account: Account::keep(&entry.debit_account, entry.act_id, strings),
            credit_account: Account::keep(&entry.credit_account, entry.act_id, strings),
            memo: entry.memo.as_str().into(),
            activity_id: strings.share(&entry.activity_id),
            scene_id: strings.share(&entry.scene_id),
            reference: entry.reference.as_str().into(),
            token: if entry.kind() == EntryKind::RedPacket {
                KeptToken::keep(&entry.token, &token_fields(entry))
            } else {
                KeptToken::text_of(&entry.token)
            },
        }
    }

    /// The entry as it was written; `id` is its key in the books.
    pub(super) fn entry(&self, id: &str) -> LedgerEntry {
        let mut entry = LedgerEntry {
            id: id.into(),
            kind: self.kind,
            debit_account: self.debit_account().into_owned(),
            credit_account: self.credit_account().into_owned(),
            amount_cents: self.amount_cents,
            time_ms: self.time_ms,
            act_id: self.act_id,
            memo: self.memo.as_ref().into(),
            activity_id: self.activity_id.as_ref().into(),
            scene_id: self.scene_id.as_ref().into(),
            reference: self.reference.as_ref().into(),
            token: String::new(),
        };
        entry.token = self.token.text(&token_fields(&entry));
        entry
    }

    pub(super) fn amount_cents(&self) -> i64 {
        self.amount_cents
    }

    pub(super) fn act_id(&self) -> i64 {
        self.act_id
    }

    pub(super) fn debit_account(&self) -> Cow<'_, str> {
        self.debit_account.name(self.act_id)
    }

    pub(super) fn credit_account(&self) -> Cow<'_, str> {
        self.credit_account.name(self.act_id)
    }
}

/// The fields of a red packet entry its token repeats (see `LedgerEntry::red_packet`).
fn token_fields(entry: &LedgerEntry) -> TokenFields<'_> {
    TokenFields {
        act_id: entry.act_id,
        activity_id: &entry.activity_id,
        scene_id: &entry.scene_id,
        amount_cents: entry.amount_cents,
        order_no: &entry.reference,
        open_time_ms: entry.time_ms,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::issuer::Issuer;
    use crate::issuer::pb::RedPacketToken;
    use crate::ledger::{Credit, budget_account};

    fn any_entry() -> impl Strategy<Value = LedgerEntry> {
        (
            (0u32..8, "[a-z/0-9]{0,20}", "[a-z/0-9]{0,20}", any::<i64>(), any::<u64>(), any::<i64>()),
            (".{0,30}", "[a-z-]{0,12}", "[a-z-]{0,8}", "[a-z_0-9]{0,30}", ".{0,80}", "[a-z]{0,20}"),
        )
            .prop_map(
                |(
                    (kind, debit, credit, amount_cents, time_ms, act_id),
                    (memo, activity, scene, reference, token, id),
                )| {
                    LedgerEntry {
                        id,
                        kind,
                        debit_account: debit,
                        credit_account: credit,
                        amount_cents,
                        time_ms,
                        act_id,
                        memo,
                        activity_id: activity,
                        scene_id: scene,
                        reference,
                        token,
                    }
                },
            )
    }

    proptest! {
        // Proves any entry comes back exactly as it was kept, whatever its kind and strings.
        #[test]
        fn any_entry_comes_back_exactly(mut entry in any_entry(), wallet_debit in any::<bool>()) {
            if wallet_debit {
                entry.debit_account = wallet_account(entry.act_id);
            }
            let mut strings = SharedStrings::default();
            let kept = KeptEntry::keep(&entry, &mut strings);
            prop_assert_eq!(kept.entry(&entry.id), entry.clone());
            prop_assert_eq!(kept.debit_account(), entry.debit_account.as_str());
            prop_assert_eq!(kept.credit_account(), entry.credit_account.as_str());
        }
    }

    // Proves a credited red packet comes back with its token whole, and that what an entry
    // shares with others (activity, scene, budget) is one allocation among them.
    #[test]
    fn red_packets_come_back_whole_and_share_their_activity() {
        let issuer = Issuer::ephemeral();
        let mut strings = SharedStrings::default();
        let kept: Vec<(LedgerEntry, KeptEntry)> = (1..=3)
            .map(|act_id| {
                let order_no = crate::grant::order_no(act_id, "rain", 1, "cash", 0);
                let mut token = RedPacketToken {
                    app_id: 1128,
                    act_id,
                    activity_id: "spring".into(),
                    scene_id: "rain".into(),
                    amount_cents: 88,
                    order_no: order_no.clone(),
                    open_time_ms: 1_700_000_000_000,
                    rain_id: 1,
                    status: 1,
                    award_type: "cash".into(),
                    ..Default::default()
                };
                let credit = Credit {
                    activity_id: "spring".into(),
                    order_no,
                    scene_id: "rain".into(),
                    act_id,
                    amount_cents: 88,
                    open_time_ms: 1_700_000_000_000,
                    memo: "红包".into(),
                    token: issuer.mint(&mut token),
                };
                let entry = LedgerEntry::red_packet(&credit);
                let kept = KeptEntry::keep(&entry, &mut strings);
                (entry, kept)
            })
            .collect();
        for (entry, kept) in &kept {
            assert!(kept.token.is_signed());
            assert_eq!(kept.entry(&entry.id), *entry);
            assert!(matches!(kept.credit_account, Account::Wallet));
            assert_eq!(kept.debit_account(), budget_account("spring"));
        }
        assert!(Arc::ptr_eq(&kept[0].1.activity_id, &kept[2].1.activity_id));
        assert_eq!(strings.len(), 3, "activity, scene and budget account, once each");
    }

    // Proves a wallet-like account of another user, or written another way, is kept as named.
    #[test]
    fn only_the_entrys_own_wallet_is_derived() {
        assert!(is_wallet_of("wallet/7", 7));
        assert!(!is_wallet_of("wallet/7", 8));
        assert!(!is_wallet_of("wallet/07", 7));
        assert!(!is_wallet_of("wallet/+7", 7));
        assert!(!is_wallet_of("budget/7", 7));
    }
}
