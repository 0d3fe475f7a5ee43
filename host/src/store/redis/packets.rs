//! Group red packets on Redis (see `store/packets.rs` for the steps): every key of one packet
//! shares the hash tag `{pk.ID}`, so a claim and a close are one script on one slot; the
//! packets awaiting their refund are one sorted set, `P:{pko}:open`, scored by expiry.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use redis::Value;

use super::keys::{PacketKeys, packets_open};
use super::reply::{value_string, value_u64};
use super::scripts::{PacketClaimArgs, PacketCloseArgs, PacketCreateArgs, PacketTakeDueArgs};
use super::{RedisStore, unavailable};
use crate::store::{Claim, PACKETS_DUE_READ_MAX, PacketDef, PacketState, StoreError};

/// How many packet definitions a host keeps in memory.
pub const PACKET_DEFS_KEPT_MAX: usize = 65_536;

/// How long a refunded packet's keys stay in Redis (for reads of it; after that a read rebuilds
/// it from the ledger): a day.
pub const PACKET_KEPT_AFTER_REFUND_MS: u64 = 86_400_000;

/// A packet's three keys as read: definition, state, claims.
type PacketRead = (Option<Vec<u8>>, HashMap<String, String>, HashMap<i64, u32>);

impl RedisStore {
    fn packet_keys(&self, packet_id: &str) -> PacketKeys {
        PacketKeys::new(&self.inner.config.prefix, packet_id)
    }

    /// See [`crate::store::Store::packet_expect`].
    pub async fn packet_expect(&self, packet_id: &str, expires_at_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let open = packets_open(&self.inner.config.prefix);
        let state = self.packet_keys(packet_id).state();
        let packet_id = packet_id.to_owned();
        self.timed(async move {
            let _: i64 =
                redis::cmd("HSETNX").arg(state).arg("expect").arg(expires_at_ms).query_async(&mut conn).await?;
            redis::cmd("ZADD").arg(open).arg("NX").arg(expires_at_ms).arg(packet_id).query_async::<i64>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// See [`crate::store::Store::packet_expected_expiry`].
    pub async fn packet_expected_expiry(&self, packet_id: &str) -> Result<Option<u64>, StoreError> {
        let state = self.packet_keys(packet_id).state();
        let mut conn = self.conn();
        self.timed(async move { redis::cmd("HGET").arg(state).arg("expect").query_async(&mut conn).await }).await
    }

    /// See [`crate::store::Store::packet_def`]; definitions never change, so each host keeps
    /// up to [`PACKET_DEFS_KEPT_MAX`] of those it read (dropping all at once when full).
    pub async fn packet_def(&self, packet_id: &str) -> Result<Option<Arc<PacketDef>>, StoreError> {
        if let Some(def) = self.inner.packet_defs.lock().get(packet_id) {
            return Ok(Some(def.clone()));
        }
        let key = self.packet_keys(packet_id).def();
        let mut conn = self.conn();
        let bytes: Option<Vec<u8>> =
            self.timed(async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }).await?;
        let Some(bytes) = bytes else { return Ok(None) };
        let def = Arc::new(PacketDef::decode(bytes.as_slice()).map_err(unavailable)?);
        let mut kept = self.inner.packet_defs.lock();
        if kept.len() >= PACKET_DEFS_KEPT_MAX {
            kept.clear();
        }
        kept.insert(packet_id.to_owned(), def.clone());
        Ok(Some(def))
    }

    /// See [`crate::store::Store::packet_create`].
    pub async fn packet_create(&self, def: PacketDef, claims: Vec<i64>) -> Result<PacketDef, StoreError> {
        let keys = self.packet_keys(&def.packet_id);
        let args =
            PacketCreateArgs { def: keys.def(), claims: keys.claims(), bytes: def.encode_to_vec(), claimers: claims };
        let (open, expires_at_ms, packet_id) =
            (packets_open(&self.inner.config.prefix), def.expires_at_ms, def.packet_id.clone());
        let mut conn = self.conn();
        let stored: Vec<u8> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        // The expiry index names it (again, if expected) with its real expiry.
        let mut conn = self.conn();
        self.timed(async move {
            redis::cmd("ZADD").arg(open).arg(expires_at_ms).arg(&packet_id).query_async::<i64>(&mut conn).await
        })
        .await?;
        PacketDef::decode(stored.as_slice()).map_err(unavailable)
    }

    /// See [`crate::store::Store::packet`].
    pub async fn packet(&self, packet_id: &str) -> Result<Option<PacketState>, StoreError> {
        let keys = self.packet_keys(packet_id);
        let mut conn = self.conn();
        let (def, state, claims): PacketRead = self
            .timed(async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(keys.def())
                    .cmd("HGETALL")
                    .arg(keys.state())
                    .cmd("HGETALL")
                    .arg(keys.claims())
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some(def) = def else { return Ok(None) };
        let def = PacketDef::decode(def.as_slice()).map_err(unavailable)?;
        let mut claims: Vec<(i64, u32)> = claims.into_iter().collect();
        claims.sort_by_key(|&(_, index)| index);
        let refunded_cents = state.get("refund").map(|cents| cents.parse::<i64>().map_err(unavailable)).transpose()?;
        Ok(Some(PacketState {
            def,
            claims,
            closed: state.get("closed").is_some_and(|closed| closed == "1"),
            refunded_cents,
        }))
    }

    /// See [`crate::store::Store::packet_claim`].
    pub async fn packet_claim(&self, def: &PacketDef, act_id: i64) -> Result<Claim, StoreError> {
        let keys = self.packet_keys(&def.packet_id);
        let args = PacketClaimArgs {
            state: keys.state(),
            claims: keys.claims(),
            act_id,
            expires_at_ms: def.expires_at_ms,
            shares: def.shares.len(),
        };
        let mut conn = self.conn();
        let reply: Vec<Value> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        let index = || value_u64(reply.get(1)).and_then(|index| u32::try_from(index).map_err(unavailable));
        match value_string(reply.first())?.as_str() {
            "new" => Ok(Claim::New(index()?)),
            "again" => Ok(Claim::Again(index()?)),
            "expired" => Ok(Claim::Expired),
            "empty" => Ok(Claim::Empty),
            other => Err(unavailable(format!("packet claim script answered `{other}`"))),
        }
    }

    /// See [`crate::store::Store::packet_close`].
    pub async fn packet_close(&self, packet_id: &str) -> Result<Vec<(i64, u32)>, StoreError> {
        let keys = self.packet_keys(packet_id);
        let args = PacketCloseArgs { state: keys.state(), claims: keys.claims() };
        let mut conn = self.conn();
        let flat: Vec<i64> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        let mut claims: Vec<(i64, u32)> =
            flat.chunks_exact(2).map(|pair| (pair[0], u32::try_from(pair[1]).unwrap_or(u32::MAX))).collect();
        claims.sort_by_key(|&(_, index)| index);
        Ok(claims)
    }

    /// See [`crate::store::Store::packet_refunded`].
    pub async fn packet_refunded(&self, packet_id: &str, refund_cents: i64) -> Result<(), StoreError> {
        let keys = self.packet_keys(packet_id);
        let open = packets_open(&self.inner.config.prefix);
        let packet_id = packet_id.to_owned();
        let mut conn = self.conn();
        self.timed(async move {
            let _: i64 = redis::cmd("HSET")
                .arg(keys.state())
                .arg("closed")
                .arg("1")
                .arg("refund")
                .arg(refund_cents)
                .query_async(&mut conn)
                .await?;
            // Done: kept a while for reads, then gone (a later read rebuilds it from the ledger).
            let mut expire = redis::pipe();
            for key in [keys.def(), keys.state(), keys.claims()] {
                expire.cmd("PEXPIRE").arg(key).arg(PACKET_KEPT_AFTER_REFUND_MS).ignore();
            }
            let _: () = expire.query_async(&mut conn).await?;
            redis::cmd("ZREM").arg(open).arg(packet_id).query_async::<i64>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// See [`crate::store::Store::packets_take_due`].
    pub async fn packets_take_due(&self, lease_ms: u64) -> Result<Vec<String>, StoreError> {
        let args =
            PacketTakeDueArgs { open: packets_open(&self.inner.config.prefix), max: PACKETS_DUE_READ_MAX, lease_ms };
        let mut conn = self.conn();
        self.timed(args.invocation().invoke_async(&mut conn)).await
    }

    /// See [`crate::store::Store::packet_forget`]: a stored packet stays in the sweep.
    pub async fn packet_forget(&self, packet_id: &str) -> Result<(), StoreError> {
        let open = packets_open(&self.inner.config.prefix);
        let (def, state) = (self.packet_keys(packet_id).def(), self.packet_keys(packet_id).state());
        let packet_id = packet_id.to_owned();
        let mut conn = self.conn();
        self.timed(async move {
            // Two slots, so not one script: a packet stored between the check and the removal is
            // named to the sweep again by its own `packet_create`, which writes the index last.
            if redis::cmd("EXISTS").arg(def).query_async::<i64>(&mut conn).await? == 1 {
                return Ok(0);
            }
            let _: i64 = redis::cmd("DEL").arg(state).query_async(&mut conn).await?;
            redis::cmd("ZREM").arg(open).arg(packet_id).query_async::<i64>(&mut conn).await
        })
        .await
        .map(|_| ())
    }
}
