//! Stock taken across buckets: when a grant's own bucket cannot cover it, `scripts/reserve.lua`
//! takes what each bucket can spare, under a name of the attempt's, and `scripts/release.lua`
//! gives it back if the grant is not made (see "Stock in buckets" in the module docs).

use super::RedisStore;
use super::grant::share_of;
use super::scripts::{ReleaseArgs, ReserveArgs};
use super::unavailable;
use crate::store::{GrantRecord, StockLimits, StoreError};

/// Bucket `shard`'s share of `limit`: `limit / shards`, plus one of the remainder for the first
/// `limit % shards` buckets, so that the shares sum to the limit exactly.
pub(super) fn share(limit: i64, shard: u32, shards: u32) -> i64 {
    let shards = i64::from(shards);
    let shard = i64::from(shard);
    limit / shards + i64::from(shard < limit % shards)
}

/// What one attempt reserved across buckets.
#[derive(Debug)]
pub(super) struct Reservation {
    /// Names the reservation in every bucket, so that a script run twice (a retry after a lost
    /// reply) reserves and releases once, and two requests for one order never mix theirs.
    pub attempt: String,
    /// The buckets that hold part of it.
    pub buckets: Vec<u32>,
    /// What no bucket had room for: `[scene count, scene cents, activity cents]`.
    pub missing: [i64; 3],
}

impl RedisStore {
    /// Reserves one grant's stock from the buckets, starting at the grant's own shard and
    /// taking from each what it can within its share. Nothing is given back here, but on an
    /// error what was taken is given back.
    pub(super) async fn reserve_walk(
        &self,
        record: &GrantRecord,
        shard: u32,
        limits: &StockLimits,
    ) -> Result<Reservation, StoreError> {
        let shards = self.shards();
        let amount = record.amount_cents;
        let mut reservation = Reservation {
            attempt: format!("{:016x}", fastrand::u64(..)),
            buckets: Vec::new(),
            missing: [1, amount, amount],
        };
        for step in 0..shards {
            if reservation.missing == [0, 0, 0] {
                break;
            }
            let bucket = (shard + step) % shards;
            let shares = share_of(limits, bucket, shards);
            reservation.buckets.push(bucket);
            match self.reserve_in(record, bucket, reservation.missing, shares, &reservation.attempt).await {
                Ok(taken) => {
                    if taken == [0, 0, 0] {
                        reservation.buckets.pop();
                    }
                    for (wanted, got) in reservation.missing.iter_mut().zip(taken) {
                        *wanted -= got;
                    }
                }
                Err(error) => {
                    self.release(record, &reservation).await;
                    return Err(error);
                }
            }
        }
        Ok(reservation)
    }

    /// Takes `missing` from bucket `shard` whatever its share (a restore is never refused), as
    /// a reservation of its own beside `beside`.
    pub(super) async fn reserve_over_share(
        &self,
        record: &GrantRecord,
        shard: u32,
        missing: [i64; 3],
        beside: &Reservation,
    ) -> Result<Reservation, StoreError> {
        let attempt = format!("{}f", beside.attempt);
        self.reserve_in(record, shard, missing, [-1, -1, -1], &attempt).await?;
        Ok(Reservation { attempt, buckets: vec![shard], missing: [0, 0, 0] })
    }

    /// Takes what it can of `want` from one bucket within `shares` (`-1`: unbounded).
    async fn reserve_in(
        &self,
        record: &GrantRecord,
        bucket: u32,
        want: [i64; 3],
        shares: [i64; 3],
        attempt: &str,
    ) -> Result<[i64; 3], StoreError> {
        let args = ReserveArgs {
            stock: self.keys(bucket).stock(&record.activity_id),
            scene_id: &record.scene_id,
            want,
            shares,
            attempt,
        };
        let mut conn = self.conn();
        let taken: Vec<i64> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        match taken.as_slice() {
            [count, scene_cents, activity_cents] => Ok([*count, *scene_cents, *activity_cents]),
            _ => Err(unavailable("reserve script answered out of shape")),
        }
    }

    /// Gives back what a reservation holds; a failure is logged (the stock stays used, never
    /// oversold).
    pub(super) async fn release(&self, record: &GrantRecord, reservation: &Reservation) {
        for bucket in &reservation.buckets {
            let args = ReleaseArgs {
                stock: self.keys(*bucket).stock(&record.activity_id),
                scene_id: &record.scene_id,
                attempt: &reservation.attempt,
            };
            let mut conn = self.conn();
            let released: Result<i64, StoreError> = self.timed(args.invocation().invoke_async(&mut conn)).await;
            if let Err(error) = released {
                tracing::error!(%error, bucket, activity = %record.activity_id, scene = %record.scene_id,
                    "stock reservation could not be given back; it stays used");
            }
        }
    }

    /// Drops the names of a reservation that became a grant (the stock stays used), in the
    /// background: the grant is answered without waiting for it.
    pub(super) fn forget_reservation(&self, record: &GrantRecord, reservation: &Reservation) {
        let keys: Vec<String> =
            reservation.buckets.iter().map(|bucket| self.keys(*bucket).stock(&record.activity_id)).collect();
        let field = format!("rv:{}", reservation.attempt);
        let store = self.clone();
        tokio::spawn(async move {
            for key in keys {
                let mut conn = store.conn();
                let field = field.clone();
                let forgot = store
                    .timed(async move { redis::cmd("HDEL").arg(key).arg(field).query_async::<i64>(&mut conn).await })
                    .await;
                if let Err(error) = forgot {
                    tracing::warn!(%error, "a kept stock reservation's name stays in its bucket");
                }
            }
        });
    }
}
