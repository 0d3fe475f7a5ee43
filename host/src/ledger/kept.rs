//! An entry as the embedded ledger keeps it in memory.
//!
//! The books hold every entry for as long as the ledger lives, so each byte of one is a byte per
//! grant. A [`LedgerEntry`] is eight strings; [`KeptEntry`] is 64 bytes of fixed fields and one
//! allocation of its own texts, and gives the same entry back ([`KeptEntry::entry`]):
//!
//! - the strings many entries repeat (activity, scene, budget and other shared accounts) are kept
//!   once and named by their number ([`Interned`]);
//! - the user's wallet account, `wallet/{act_id}`, is not kept: the user's id gives it back;
//! - the id is not kept when it is `rp/{activity}/{reference}` (every red packet's), which the
//!   entry's fields give back;
//! - the memo, the reference, the id when kept and the token are one allocation, each text after
//!   its length;
//! - a red packet's token is kept by what the entry's fields cannot give back (`issuer::kept`).
//!
//! Measured with `hongbao bench footprint` (BENCHMARKS.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::rules::ReadBack;
use super::{EntryKind, LedgerEntry, wallet_account};
use crate::issuer::kept::{KeptToken, TokenFields};

/// The account number that stands for the entry's user's wallet.
const WALLET: u32 = u32::MAX;

/// Strings many entries repeat (activities, scenes, shared accounts), each kept once and named
/// by its number. Never let go: the entries that name them stay as long as the books.
#[derive(Default)]
pub(super) struct Interned {
    numbers: HashMap<Arc<str>, u32>,
    texts: Vec<Arc<str>>,
}

impl Interned {
    /// The number of `text`, given on first use.
    pub(super) fn number(&mut self, text: &str) -> u32 {
        if let Some(&number) = self.numbers.get(text) {
            return number;
        }
        let number = u32::try_from(self.texts.len()).ok().filter(|&n| n < WALLET).expect("fewer than 2^32 - 1 strings");
        let shared: Arc<str> = Arc::from(text);
        self.texts.push(shared.clone());
        self.numbers.insert(shared, number);
        number
    }

    /// The text numbered `number`.
    pub(super) fn text(&self, number: u32) -> &str {
        &self.texts[number as usize]
    }

    /// How many strings are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.texts.len()
    }
}

/// Whether `name` is `wallet/{act_id}`, written as [`wallet_account`] writes it.
fn is_wallet_of(name: &str, act_id: i64) -> bool {
    wallet_user(name) == Some(act_id)
}

/// The user whose wallet `name` is, if it is a wallet account written as [`wallet_account`]
/// writes it (no sign but a minus, no leading zero), without allocating.
pub(super) fn wallet_user(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("wallet/")?;
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    let canonical = !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && (unsigned == "0" || !unsigned.starts_with('0'))
        && digits != "-0";
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

/// A [`LedgerEntry`] as the books keep it (see the module docs).
pub(super) struct KeptEntry {
    amount_cents: i64,
    time_ms: u64,
    act_id: i64,
    /// The memo, the reference, the id (when not derived) and the token (see [`Texts`]).
    texts: Box<[u8]>,
    kind: u32,
    activity: u32,
    scene: u32,
    /// [`WALLET`] or an interned account.
    debit: u32,
    credit: u32,
}

/// The texts of a kept entry, as bytes of valid UTF-8 (the token's are `issuer::kept`'s).
struct Texts<'a> {
    memo: &'a [u8],
    reference: &'a [u8],
    /// `None` when the id is `rp/{activity}/{reference}`.
    id: Option<&'a [u8]>,
    token: &'a [u8],
}

impl Texts<'_> {
    /// Writes the texts after their lengths: the id's is its length + 1, 0 when it is derived.
    fn pack(memo: &str, reference: &str, id: Option<&str>, token: &[u8]) -> Box<[u8]> {
        let id_bytes = id.map_or(0, str::len);
        let mut packed = Vec::with_capacity(memo.len() + reference.len() + id_bytes + token.len() + 6);
        prost::encoding::encode_varint(memo.len() as u64, &mut packed);
        packed.extend_from_slice(memo.as_bytes());
        prost::encoding::encode_varint(reference.len() as u64, &mut packed);
        packed.extend_from_slice(reference.as_bytes());
        prost::encoding::encode_varint(id.map_or(0, |id| id.len() as u64 + 1), &mut packed);
        packed.extend_from_slice(id.unwrap_or_default().as_bytes());
        packed.extend_from_slice(token);
        packed.into_boxed_slice()
    }
}

/// Splits `length` bytes off the front of `rest`, after their varint length.
fn take<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let length = prost::encoding::decode_varint(rest).expect("packed by Texts::pack") as usize;
    let (text, after) = rest.split_at(length);
    *rest = after;
    text
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("packed from strings")
}

/// Whether the texts `chunks` written one after another begin with `prefix`.
fn chunks_start_with(chunks: &[&[u8]], mut prefix: &[u8]) -> bool {
    for chunk in chunks {
        let n = chunk.len().min(prefix.len());
        if chunk[..n] != prefix[..n] {
            return false;
        }
        prefix = &prefix[n..];
    }
    prefix.is_empty()
}

impl KeptEntry {
    /// Keeps `entry`, numbering its repeated strings in `strings`.
    pub(super) fn keep(entry: &LedgerEntry, strings: &mut Interned) -> KeptEntry {
        let derived = entry
            .id
            .strip_prefix("rp/")
            .and_then(|rest| rest.strip_prefix(entry.activity_id.as_str()))
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest == entry.reference);
        let token = if entry.kind() == EntryKind::RedPacket {
            KeptToken::keep(&entry.token, &token_fields(entry))
        } else {
            KeptToken::text_of(&entry.token)
        };
        let account = |name: &str, strings: &mut Interned| {
            if is_wallet_of(name, entry.act_id) { WALLET } else { strings.number(name) }
        };
        KeptEntry {
            amount_cents: entry.amount_cents,
            time_ms: entry.time_ms,
            act_id: entry.act_id,
            texts: Texts::pack(&entry.memo, &entry.reference, (!derived).then_some(&entry.id), token.as_bytes()),
            kind: entry.kind,
            activity: strings.number(&entry.activity_id),
            scene: strings.number(&entry.scene_id),
            debit: account(&entry.debit_account, strings),
            credit: account(&entry.credit_account, strings),
        }
    }

    fn texts(&self) -> Texts<'_> {
        let mut rest = &self.texts[..];
        let memo = take(&mut rest);
        let reference = take(&mut rest);
        let id_length = prost::encoding::decode_varint(&mut rest).expect("packed by Texts::pack") as usize;
        let id = id_length.checked_sub(1).map(|length| {
            let (id, after) = rest.split_at(length);
            rest = after;
            id
        });
        Texts { memo, reference, id, token: rest }
    }

    /// The id's parts, written one after another: `rp/`, the activity, `/` and the reference
    /// when it is derived.
    fn id_chunks<'a>(&'a self, strings: &'a Interned) -> [&'a [u8]; 4] {
        let texts = self.texts();
        match texts.id {
            Some(id) => [id, b"", b"", b""],
            None => [b"rp/", strings.text(self.activity).as_bytes(), b"/", texts.reference],
        }
    }

    /// The entry's id.
    pub(super) fn id(&self, strings: &Interned) -> Cow<'_, str> {
        match self.texts().id {
            Some(id) => Cow::Borrowed(text(id)),
            None => {
                let mut id = String::new();
                self.write_id(strings, &mut id);
                Cow::Owned(id)
            }
        }
    }

    /// Writes the entry's id at the end of `out`.
    pub(super) fn write_id(&self, strings: &Interned, out: &mut String) {
        for chunk in self.id_chunks(strings) {
            out.push_str(text(chunk));
        }
    }

    /// Whether the entry's id is `id`, without allocating.
    pub(super) fn id_is(&self, strings: &Interned, id: &str) -> bool {
        let chunks = self.id_chunks(strings);
        chunks.iter().map(|chunk| chunk.len()).sum::<usize>() == id.len() && chunks_start_with(&chunks, id.as_bytes())
    }

    /// Whether the entry's id begins with `prefix`, without allocating.
    pub(super) fn id_starts_with(&self, strings: &Interned, prefix: &str) -> bool {
        chunks_start_with(&self.id_chunks(strings), prefix.as_bytes())
    }

    /// The entry as it was written.
    pub(super) fn entry(&self, strings: &Interned) -> LedgerEntry {
        let texts = self.texts();
        let mut entry = LedgerEntry {
            id: self.id(strings).into_owned(),
            kind: self.kind,
            debit_account: self.debit_account(strings).into_owned(),
            credit_account: self.credit_account(strings).into_owned(),
            amount_cents: self.amount_cents,
            time_ms: self.time_ms,
            act_id: self.act_id,
            memo: text(texts.memo).into(),
            activity_id: strings.text(self.activity).into(),
            scene_id: strings.text(self.scene).into(),
            reference: text(texts.reference).into(),
            token: String::new(),
        };
        entry.token = KeptToken::text_of_bytes(texts.token, &token_fields(&entry));
        entry
    }

    /// The accounts and amount, as a write's read-back checks them.
    pub(super) fn read_back<'a>(&'a self, strings: &'a Interned) -> ReadBack<'a> {
        ReadBack {
            debit_account: self.debit_account(strings),
            credit_account: self.credit_account(strings),
            amount_cents: self.amount_cents,
        }
    }

    pub(super) fn amount_cents(&self) -> i64 {
        self.amount_cents
    }

    pub(super) fn act_id(&self) -> i64 {
        self.act_id
    }

    pub(super) fn time_ms(&self) -> u64 {
        self.time_ms
    }

    fn account<'a>(&self, number: u32, strings: &'a Interned) -> Cow<'a, str> {
        match number {
            WALLET => Cow::Owned(wallet_account(self.act_id)),
            number => Cow::Borrowed(strings.text(number)),
        }
    }

    pub(super) fn debit_account<'a>(&self, strings: &'a Interned) -> Cow<'a, str> {
        self.account(self.debit, strings)
    }

    pub(super) fn credit_account<'a>(&self, strings: &'a Interned) -> Cow<'a, str> {
        self.account(self.credit, strings)
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
        // Proves any entry comes back exactly as it was kept, whatever its kind and strings, with
        // its id kept or derived, and that the id is compared without being rebuilt.
        #[test]
        fn any_entry_comes_back_exactly(
            mut entry in any_entry(),
            wallet_debit in any::<bool>(),
            derived_id in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            if wallet_debit {
                entry.debit_account = wallet_account(entry.act_id);
            }
            if derived_id {
                entry.id = format!("rp/{}/{}", entry.activity_id, entry.reference);
            }
            let mut strings = Interned::default();
            let kept = KeptEntry::keep(&entry, &mut strings);
            prop_assert_eq!(kept.texts().id.is_none(), derived_id);
            prop_assert_eq!(kept.entry(&strings), entry.clone());
            prop_assert_eq!(kept.debit_account(&strings), entry.debit_account.as_str());
            prop_assert_eq!(kept.credit_account(&strings), entry.credit_account.as_str());
            prop_assert_eq!(kept.id(&strings), entry.id.as_str());
            prop_assert!(kept.id_is(&strings, &entry.id));
            let longer = format!("{}x", entry.id);
            prop_assert!(!kept.id_is(&strings, &longer));
            let prefix = &entry.id[..entry.id.floor_char_boundary(cut.index(entry.id.len() + 1))];
            prop_assert!(kept.id_starts_with(&strings, prefix));
            prop_assert!(prefix.len() == entry.id.len() || !kept.id_is(&strings, prefix));
            prop_assert!(!kept.id_starts_with(&strings, &longer));
        }
    }

    // Proves a credited red packet comes back with its token whole, kept by its signature, its id
    // derived, and that what an entry shares with others (activity, scene, budget) is kept once.
    #[test]
    fn red_packets_come_back_whole_and_share_their_activity() {
        let issuer = Issuer::ephemeral();
        let mut strings = Interned::default();
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
            assert!(kept.texts().id.is_none(), "the id is derived");
            assert!(kept.texts().token.len() < 100 && entry.token.len() > 200, "kept by its signature");
            assert_eq!(kept.entry(&strings), *entry);
            assert_eq!(kept.credit, WALLET);
            assert_eq!(kept.debit_account(&strings), budget_account("spring"));
        }
        assert_eq!(kept[0].1.activity, kept[2].1.activity);
        assert_eq!(strings.len(), 3, "activity, scene and budget account, once each");
        assert_eq!(std::mem::size_of::<KeptEntry>(), 64);
    }

    // Proves only a wallet written as `wallet_account` writes it is a user's, so its name comes
    // back as it was written; another user's or one written another way is kept as named.
    #[test]
    fn only_the_entrys_own_wallet_is_derived() {
        assert!(is_wallet_of("wallet/7", 7));
        assert!(!is_wallet_of("wallet/7", 8));
        assert!(!is_wallet_of("wallet/07", 7));
        assert!(!is_wallet_of("wallet/+7", 7));
        assert!(!is_wallet_of("budget/7", 7));
        for act_id in [0, 7, -7, i64::MAX, i64::MIN] {
            assert_eq!(wallet_user(&wallet_account(act_id)), Some(act_id));
        }
        for name in
            ["wallet/", "wallet/-", "wallet/-0", "wallet/00", "wallet/-07", "wallet/7x", "wallet/9223372036854775808"]
        {
            assert_eq!(wallet_user(name), None, "{name}");
        }
    }
}
