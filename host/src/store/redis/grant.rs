//! Grants and restores: `scripts/grant.lua`, with the stock reserved across buckets
//! (`reserve.rs`) when the user's own bucket cannot cover a grant.

use redis::Value;

use super::reply::{value_string, value_u64};
use super::reserve::share;
use super::scripts::GrantArgs;
use super::stored::{decode_value, record_bytes};
use super::{RedisStore, member, unavailable};
use crate::store::{
    GrantCommit, GrantRecord, LedgerCheck, RestoreOutcome, StockLimits, StockOut, StoreError, TokenStatus, UserRate,
};

/// Why the grant script runs.
#[derive(Debug, Clone, Copy)]
enum GrantMode {
    Grant(LedgerCheck),
    Restore { credited: bool },
}

impl GrantMode {
    /// The script's `mode` argument.
    fn mode(self) -> &'static str {
        match self {
            GrantMode::Grant(_) => "grant",
            GrantMode::Restore { credited: false } => "restore",
            GrantMode::Restore { credited: true } => "restore-credited",
        }
    }

    /// The script's `ledger check` argument.
    fn ledger_check(self) -> &'static str {
        match self {
            GrantMode::Grant(LedgerCheck::Skipped) => "skipped",
            GrantMode::Grant(LedgerCheck::New) => "new",
            GrantMode::Grant(LedgerCheck::Done { activity_clean: true }) => "clean",
            _ => "checked",
        }
    }
}

/// What the grant script answered.
#[derive(Debug)]
enum Written {
    Granted(u64),
    Replayed(GrantRecord),
    Present,
    RateLimited,
    Stock(StockOut),
    CheckLedger,
    CheckRetired,
}

impl Written {
    /// A replay of this very grant (the same signed token) is this attempt's own write, seen
    /// again because the script ran twice (a retry after a lost reply): it counts as granted.
    fn own_write(self, record: &GrantRecord) -> Written {
        match self {
            Written::Replayed(original) if original.token == record.token => Written::Granted(original.seq),
            other => other,
        }
    }

    fn into_commit(self, mut record: GrantRecord) -> GrantCommit {
        match self {
            Written::Granted(seq) => {
                record.seq = seq;
                record.status = TokenStatus::Pending.code();
                GrantCommit::Granted(record)
            }
            Written::Replayed(original) => GrantCommit::Replayed(original),
            Written::RateLimited => GrantCommit::UserRateLimited,
            Written::Stock(out) => GrantCommit::OutOfStock(out),
            Written::CheckLedger => GrantCommit::CheckLedger,
            Written::CheckRetired => GrantCommit::CheckRetired,
            // Only a restore answers "present".
            Written::Present => GrantCommit::Replayed(record),
        }
    }

    fn parse(reply: &[Value]) -> Result<Written, StoreError> {
        let kind = value_string(reply.first())?;
        match kind.as_str() {
            "ok" => Ok(Written::Granted(value_u64(reply.get(1))?)),
            "replay" => decode_value(reply.get(1)).map(Written::Replayed),
            "present" => Ok(Written::Present),
            "rate" => Ok(Written::RateLimited),
            "check" => Ok(Written::CheckLedger),
            "retired" => Ok(Written::CheckRetired),
            "stock" => Ok(Written::Stock(match value_string(reply.get(1))?.as_str() {
                "scene_count" => StockOut::SceneCount,
                "scene_budget" => StockOut::SceneBudget,
                _ => StockOut::ActivityBudget,
            })),
            other => Err(unavailable(format!("grant script answered `{other}`"))),
        }
    }
}

/// The first stock bound in `[scene count, scene cents, activity cents]` that nothing covered.
fn stock_out(missing: [i64; 3]) -> StockOut {
    if missing[0] > 0 {
        StockOut::SceneCount
    } else if missing[1] > 0 {
        StockOut::SceneBudget
    } else {
        StockOut::ActivityBudget
    }
}

impl RedisStore {
    /// Stores a new grant (see [`crate::store::Store::commit_grant`]).
    pub async fn commit_grant(
        &self,
        record: GrantRecord,
        limits: StockLimits,
        user_rate: Option<UserRate>,
        check: LedgerCheck,
    ) -> Result<GrantCommit, StoreError> {
        let shard = self.shard_of_user(record.act_id);
        let mode = GrantMode::Grant(check);
        let first = self.run_grant_script(&record, shard, Some(&limits), user_rate, false, mode).await?;
        if !matches!(first, Written::Stock(_)) {
            return Ok(first.own_write(&record).into_commit(record));
        }
        // The shard's own bucket cannot cover this grant: reserve it across all buckets.
        let reservation = self.reserve_walk(&record, shard, &limits).await?;
        if reservation.missing != [0, 0, 0] {
            self.release(&record, &reservation).await;
            return Ok(GrantCommit::OutOfStock(stock_out(reservation.missing)));
        }
        match self.run_grant_script(&record, shard, Some(&limits), user_rate, true, mode).await {
            Ok(written) => match written.own_write(&record) {
                Written::Granted(seq) => {
                    self.forget_reservation(&record, &reservation);
                    Ok(Written::Granted(seq).into_commit(record))
                }
                other => {
                    self.release(&record, &reservation).await;
                    Ok(other.into_commit(record))
                }
            },
            // Unknown whether the grant was written: keep the reservation (never oversell).
            Err(error) => Err(error),
        }
    }

    /// Stores a token a client kept, if the server no longer has it; counted against stock in
    /// the user's shard, never refused for it.
    ///
    /// `limits` are the scene's current bounds: the restored amount is spread over the buckets
    /// within their shares, as a grant would be, and only what no bucket has room for is put
    /// over its own bucket's share. A bucket over its share while others still have room would
    /// let them grant past the limit.
    pub async fn restore(
        &self,
        record: GrantRecord,
        credited: bool,
        limits: StockLimits,
    ) -> Result<RestoreOutcome, StoreError> {
        let shard = self.shard_of_user(record.act_id);
        if self.lookup(&record.activity_id, &record.order_no).await?.is_some() {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        // A credited token of a user with retired records of the activity was retired: the
        // ledger has it and the stock counts it (see the embedded store's restore).
        if credited && self.has_retired(&record.activity_id, record.act_id).await? {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        let reservation = self.reserve_walk(&record, shard, &limits).await?;
        // Every bucket is full: the rest goes over the own bucket's share (never refused).
        let forced = match reservation.missing {
            [0, 0, 0] => None,
            missing => match self.reserve_over_share(&record, shard, missing, &reservation).await {
                Ok(forced) => Some(forced),
                Err(error) => {
                    self.release(&record, &reservation).await;
                    return Err(error);
                }
            },
        };
        let mode = GrantMode::Restore { credited };
        let written = self.run_grant_script(&record, shard, None, None, true, mode).await;
        // "Present" here is a concurrent restore of the same token or this script run twice
        // (a retry after a lost reply); which one cannot be told apart, so the stock stays
        // counted: at worst counted twice, never given away twice.
        if written.is_ok() {
            self.forget_reservation(&record, &reservation);
            if let Some(forced) = &forced {
                self.forget_reservation(&record, forced);
            }
        }
        match written? {
            Written::Present => Ok(RestoreOutcome::AlreadyPresent),
            Written::Granted(_) => Ok(RestoreOutcome::Restored),
            other => Err(unavailable(format!("restore answered {other:?}"))),
        }
    }

    /// Runs the grant script. `reserved`: the stock was already taken from the buckets.
    async fn run_grant_script(
        &self,
        record: &GrantRecord,
        shard: u32,
        limits: Option<&StockLimits>,
        user_rate: Option<UserRate>,
        reserved: bool,
        mode: GrantMode,
    ) -> Result<Written, StoreError> {
        let keys = self.keys(shard);
        let shards = self.shards();
        let member = member(&record.activity_id, &record.order_no);
        if record.scene_id.contains('|') {
            // Config checks every scene id; the stored record's header could not hold this one.
            return Err(unavailable(format!("scene id `{}` holds `|`", record.scene_id)));
        }
        let (rate, rate_max, rate_window_ms) = match (mode, user_rate) {
            (GrantMode::Grant(_), Some(rate)) if rate.max > 0 && rate.window_ms > 0 => {
                let window_start_ms = record.open_time_ms - record.open_time_ms % rate.window_ms;
                let key = keys.rate(&record.activity_id, &record.scene_id, record.act_id, window_start_ms);
                (key, rate.max, rate.window_ms)
            }
            _ => (keys.no_rate(), 0, 0),
        };
        let shares = match limits {
            Some(limits) => share_of(limits, shard, shards),
            None => [-1, -1, -1],
        };
        let args = GrantArgs {
            record_key: keys.record(&member),
            user_tokens: keys.user_tokens(record.act_id),
            queue: keys.queue(),
            seq: keys.seq(),
            stock: keys.stock(&record.activity_id),
            activity_grants: keys.activity_grants(&record.activity_id),
            rate,
            vouched: keys.vouched(&record.activity_id),
            retired_users: keys.retired_users(&record.activity_id, record.act_id, shards),
            credited: keys.credited(),
            record: record_bytes(record),
            act_id: record.act_id,
            member: &member,
            flow_id: record.flow_id(),
            open_time_ms: record.open_time_ms,
            amount_cents: record.amount_cents,
            scene_id: &record.scene_id,
            shards,
            shard,
            reserved,
            shares,
            rate_max,
            rate_window_ms,
            mode: mode.mode(),
            ledger_check: mode.ledger_check(),
        };
        let mut conn = self.conn();
        let reply: Vec<Value> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        Written::parse(&reply)
    }
}

/// Bucket `shard`'s shares of `[scene count, scene cents, activity cents]`; -1: unbounded.
pub(super) fn share_of(limits: &StockLimits, shard: u32, shards: u32) -> [i64; 3] {
    [
        limits.scene_count_max.map_or(-1, |max| share(max.min(i64::MAX as u64) as i64, shard, shards)),
        limits.scene_budget_cents.map_or(-1, |max| share(max, shard, shards)),
        share(limits.activity_budget_cents, shard, shards),
    ]
}
