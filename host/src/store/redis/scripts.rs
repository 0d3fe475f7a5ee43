//! The store's Lua scripts and their arguments.
//!
//! Each script lives in `scripts/NAME.lua`, opening with its KEYS/ARGV table. The struct
//! beside it here is the only place those positions exist: callers fill in fields by name and
//! [`invocation`](GrantArgs::invocation) lays them out in the order the script's table gives.
//! Bounds a script applies are fields too, set from named Rust constants, so that no number
//! hides inside the Lua (`scripts/batch.lua`'s 512 is Lua's own limit, not a policy).
//! `scripts/record.lua`, `scripts/queue.lua` and `scripts/batch.lua` are prepended to every
//! script: how they read a grant's record, drop the crediting queue's acknowledged entries, and
//! run one command over a batch's items.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)*) => {
        $(
            $(#[$doc])*
            static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(concat!(
                    include_str!("scripts/record.lua"),
                    include_str!("scripts/queue.lua"),
                    include_str!("scripts/batch.lua"),
                    include_str!(concat!("scripts/", $file))
                )));
        )*
    };
}

scripts! {
    /// Grants or restores one token.
    GRANT = "grant.lua";
    /// Takes part of a grant's stock from one bucket.
    RESERVE = "reserve.lua";
    /// Gives back what [`RESERVE`] took for an attempt.
    RELEASE = "release.lua";
    /// Claims a shard's queue entries for a writer.
    CLAIM = "claim.lua";
    /// Claims named tokens for a forced credit.
    CLAIM_KEYS = "claim_keys.lua";
    /// Marks tokens credited.
    COMPLETE = "complete.lua";
    /// Parks tokens the ledger refused.
    PARK = "park.lua";
    /// Puts named parked tokens back in the queue.
    REQUEUE = "requeue.lua";
    /// Puts all of a shard's parked tokens back in the queue.
    REQUEUE_ALL = "requeue_all.lua";
    /// A user's unsettled tokens.
    UNSETTLED = "unsettled.lua";
    /// A page of a user's tokens for the wallet flow.
    USER_TOKENS = "user_tokens.lua";
    /// A chunk of an activity's grants in one shard, from earlier versions' index.
    GRANTS_OF = "grants_of.lua";
    /// A chunk of an activity's grants in one shard.
    GRANTS_SINCE = "grants_since.lua";
    /// Takes credits from the fleet's window.
    CAP_TAKE = "cap_take.lua";
    /// Settles a ticket of the fleet's window.
    CAP_SETTLE = "cap_settle.lua";
    /// Stores a group red packet (with claims known already).
    PACKET_CREATE = "packet_create.lua";
    /// Claims a share of a group red packet.
    PACKET_CLAIM = "packet_claim.lua";
    /// Closes a group red packet for its refund.
    PACKET_CLOSE = "packet_close.lua";
    /// Takes the packets due for a refund sweep.
    PACKET_TAKE_DUE = "packet_take_due.lua";
    /// Retires a shard's records whose retention passed.
    RETIRE = "retire.lua";
    /// One grant's record.
    LOOKUP = "lookup.lua";
}

/// `scripts/lookup.lua`.
pub(super) struct LookupArgs {
    pub record: String,
}

impl LookupArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = LOOKUP.prepare_invoke();
        invocation.key(&self.record);
        invocation
    }
}

/// `scripts/packet_create.lua`.
pub(super) struct PacketCreateArgs {
    pub def: String,
    pub claims: String,
    /// The protobuf definition.
    pub bytes: Vec<u8>,
    /// Who holds shares `0..claimers.len()`.
    pub claimers: Vec<i64>,
}

impl PacketCreateArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = PACKET_CREATE.prepare_invoke();
        invocation.key(&self.def).key(&self.claims).arg(&self.bytes);
        for act_id in &self.claimers {
            invocation.arg(*act_id);
        }
        invocation
    }
}

/// `scripts/packet_claim.lua`.
pub(super) struct PacketClaimArgs {
    pub state: String,
    pub claims: String,
    pub act_id: i64,
    pub expires_at_ms: u64,
    pub shares: usize,
}

impl PacketClaimArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = PACKET_CLAIM.prepare_invoke();
        invocation.key(&self.state).key(&self.claims).arg(self.act_id).arg(self.expires_at_ms).arg(self.shares);
        invocation
    }
}

/// `scripts/packet_take_due.lua`.
pub(super) struct PacketTakeDueArgs {
    pub open: String,
    pub max: usize,
    pub lease_ms: u64,
}

impl PacketTakeDueArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = PACKET_TAKE_DUE.prepare_invoke();
        invocation.key(&self.open).arg(self.max).arg(self.lease_ms);
        invocation
    }
}

/// `scripts/packet_close.lua`.
pub(super) struct PacketCloseArgs {
    pub state: String,
    pub claims: String,
}

impl PacketCloseArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = PACKET_CLOSE.prepare_invoke();
        invocation.key(&self.state).key(&self.claims);
        invocation
    }
}

/// `scripts/grant.lua`.
pub(super) struct GrantArgs<'a> {
    pub record_key: String,
    pub user_tokens: String,
    pub queue: String,
    pub seq: String,
    pub stock: String,
    pub activity_grants: String,
    pub rate: String,
    pub vouched: String,
    pub retired_users: String,
    pub credited: String,
    /// The protobuf part of the stored record (`stored::record_bytes`).
    pub record: Vec<u8>,
    pub act_id: i64,
    pub member: &'a str,
    pub flow_id: String,
    pub open_time_ms: u64,
    pub amount_cents: i64,
    pub scene_id: &'a str,
    pub shards: u32,
    pub shard: u32,
    /// The stock was already reserved across buckets.
    pub reserved: bool,
    /// This bucket's shares of `[scene count, scene cents, activity cents]`; -1: unbounded.
    pub shares: [i64; 3],
    /// 0: no per-user window.
    pub rate_max: u32,
    pub rate_window_ms: u64,
    /// `grant`, `restore` or `restore-credited`.
    pub mode: &'static str,
    /// `skipped`, `new`, `clean` or `checked`.
    pub ledger_check: &'static str,
}

impl GrantArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = GRANT.prepare_invoke();
        invocation
            .key(&self.record_key)
            .key(&self.user_tokens)
            .key(&self.queue)
            .key(&self.seq)
            .key(&self.stock)
            .key(&self.activity_grants)
            .key(&self.rate)
            .key(&self.vouched)
            .key(&self.retired_users)
            .key(&self.credited)
            .arg(&self.record)
            .arg(self.act_id)
            .arg(self.member)
            .arg(&self.flow_id)
            .arg(self.open_time_ms)
            .arg(self.amount_cents)
            .arg(self.scene_id)
            .arg(self.shards)
            .arg(self.shard)
            .arg(if self.reserved { "1" } else { "0" })
            .arg(self.shares[0])
            .arg(self.shares[1])
            .arg(self.shares[2])
            .arg(self.rate_max)
            .arg(self.rate_window_ms)
            .arg(self.mode)
            .arg(self.ledger_check);
        invocation
    }
}

/// `scripts/reserve.lua`.
pub(super) struct ReserveArgs<'a> {
    pub stock: String,
    pub scene_id: &'a str,
    /// `[scene count, scene cents, activity cents]` wanted.
    pub want: [i64; 3],
    /// The bucket's shares of the same; -1: unbounded.
    pub shares: [i64; 3],
    pub attempt: &'a str,
}

impl ReserveArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = RESERVE.prepare_invoke();
        invocation
            .key(&self.stock)
            .arg(self.scene_id)
            .arg(self.want[0])
            .arg(self.want[1])
            .arg(self.want[2])
            .arg(self.shares[0])
            .arg(self.shares[1])
            .arg(self.shares[2])
            .arg(self.attempt);
        invocation
    }
}

/// `scripts/release.lua`.
pub(super) struct ReleaseArgs<'a> {
    pub stock: String,
    pub scene_id: &'a str,
    pub attempt: &'a str,
}

impl ReleaseArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(&self.stock).arg(self.scene_id).arg(self.attempt);
        invocation
    }
}

/// `scripts/claim.lua`.
pub(super) struct ClaimArgs<'a> {
    pub queue: String,
    pub parked: String,
    pub group: &'a str,
    pub consumer: &'a str,
    pub want: usize,
    pub reclaim_after_ms: u64,
    pub record_prefix: String,
}

impl ClaimArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(&self.queue)
            .key(&self.parked)
            .arg(self.group)
            .arg(self.consumer)
            .arg(self.want)
            .arg(self.reclaim_after_ms)
            .arg(&self.record_prefix);
        invocation
    }
}

/// `scripts/claim_keys.lua`.
pub(super) struct ClaimKeysArgs {
    pub queue: String,
    pub record_prefix: String,
    /// `(member, queue id)` pairs.
    pub tokens: Vec<(String, String)>,
}

impl ClaimKeysArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = CLAIM_KEYS.prepare_invoke();
        invocation.key(&self.queue).arg(&self.record_prefix);
        for (member, queue_id) in &self.tokens {
            invocation.arg(member).arg(queue_id);
        }
        invocation
    }
}

/// The scripts that take a shard's queue entries by name: `scripts/complete.lua`,
/// `scripts/park.lua` and `scripts/requeue.lua` share one argument layout.
#[derive(Debug, Clone, Copy)]
pub(super) enum EntriesScript {
    Complete,
    Park,
    Requeue,
}

/// The arguments of an [`EntriesScript`].
pub(super) struct EntriesArgs<'a> {
    pub queue: String,
    pub parked: String,
    pub group: &'a str,
    pub tag: &'a str,
    /// `(member, seq, queue id)` triples.
    pub entries: Vec<(String, u64, &'a str)>,
}

impl EntriesArgs<'_> {
    pub fn invocation(&self, script: EntriesScript) -> ScriptInvocation<'static> {
        let script: &'static Script = match script {
            EntriesScript::Complete => &COMPLETE,
            EntriesScript::Park => &PARK,
            EntriesScript::Requeue => &REQUEUE,
        };
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.queue).key(&self.parked).arg(self.group).arg(self.tag);
        for (member, seq, queue_id) in &self.entries {
            invocation.arg(member).arg(*seq).arg(*queue_id);
        }
        invocation
    }
}

/// `scripts/requeue_all.lua`.
pub(super) struct QueueArgs {
    pub queue: String,
    pub parked: String,
}

impl QueueArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = REQUEUE_ALL.prepare_invoke();
        invocation.key(&self.queue).key(&self.parked);
        invocation
    }
}

/// `scripts/unsettled.lua`.
pub(super) struct UnsettledArgs {
    pub user_tokens: String,
    pub record_prefix: String,
    /// The read bound; the script answers up to one more.
    pub max: usize,
}

impl UnsettledArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = UNSETTLED.prepare_invoke();
        invocation.key(&self.user_tokens).arg(&self.record_prefix).arg(self.max);
        invocation
    }
}

/// `scripts/user_tokens.lua`.
pub(super) struct UserTokensArgs {
    pub user_tokens: String,
    pub record_prefix: String,
    /// Open time, ms; `None` for the newest.
    pub before_ms: Option<u64>,
    pub limit: usize,
}

impl UserTokensArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = USER_TOKENS.prepare_invoke();
        invocation
            .key(&self.user_tokens)
            .arg(&self.record_prefix)
            .arg(self.before_ms.map_or(String::new(), |time_ms| time_ms.to_string()))
            .arg(self.limit);
        invocation
    }
}

/// `scripts/grants_of.lua`.
pub(super) struct GrantsOfArgs {
    pub legacy_grants: String,
    pub parked: String,
    pub record_prefix: String,
    pub first: usize,
    /// Inclusive.
    pub last: usize,
}

impl GrantsOfArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = GRANTS_OF.prepare_invoke();
        invocation.key(&self.legacy_grants).key(&self.parked).arg(&self.record_prefix).arg(self.first).arg(self.last);
        invocation
    }
}

/// `scripts/grants_since.lua`.
pub(super) struct GrantsSinceArgs {
    pub activity_grants: String,
    pub parked: String,
    pub record_prefix: String,
    /// The entry id to read after; empty for the first.
    pub after: String,
    pub count: usize,
    /// `ACTIVITY/`, what the stream's order numbers are prefixed with to name their records.
    pub member_prefix: String,
}

impl GrantsSinceArgs {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = GRANTS_SINCE.prepare_invoke();
        invocation
            .key(&self.activity_grants)
            .key(&self.parked)
            .arg(&self.record_prefix)
            .arg(&self.after)
            .arg(self.count)
            .arg(&self.member_prefix);
        invocation
    }
}

/// `scripts/cap_take.lua`.
pub(super) struct CapTakeArgs<'a> {
    pub window: String,
    pub want: u64,
    pub cap: u64,
    pub ticket: &'a str,
    pub lease_ms: u64,
    pub window_ms: u64,
    pub in_flight_poll_ms: u64,
    pub ttl_ms: u64,
}

impl CapTakeArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = CAP_TAKE.prepare_invoke();
        invocation
            .key(&self.window)
            .arg(self.want)
            .arg(self.cap)
            .arg(self.ticket)
            .arg(self.lease_ms)
            .arg(self.window_ms)
            .arg(self.in_flight_poll_ms)
            .arg(self.ttl_ms);
        invocation
    }
}

/// `scripts/cap_settle.lua`.
pub(super) struct CapSettleArgs<'a> {
    pub window: String,
    pub ticket: &'a str,
    pub credits: u64,
    pub ttl_ms: u64,
}

impl CapSettleArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = CAP_SETTLE.prepare_invoke();
        invocation.key(&self.window).arg(self.ticket).arg(self.credits).arg(self.ttl_ms);
        invocation
    }
}

/// `scripts/retire.lua`.
pub(super) struct RetireArgs<'a> {
    pub credited: String,
    pub tag: &'a str,
    pub retain_ms: u64,
    pub max: usize,
    pub shards: u32,
    pub buckets: u64,
}

impl RetireArgs<'_> {
    pub fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = RETIRE.prepare_invoke();
        invocation
            .key(&self.credited)
            .arg(self.tag)
            .arg(self.retain_ms)
            .arg(self.max)
            .arg(self.shards)
            .arg(self.buckets);
        invocation
    }
}
