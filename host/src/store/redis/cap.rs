//! The fleet's credit window: every host's writer takes its share of the fleet-wide cap of
//! credits per second from one sorted set, on the Redis server's clock, so hosts' clocks do not
//! matter (`scripts/cap_take.lua`, `scripts/cap_settle.lua`).

use std::sync::atomic::Ordering;

use super::scripts::{CapSettleArgs, CapTakeArgs};
use super::{RedisStore, keys};
use crate::store::StoreError;

/// The window the cap counts credits over: the cap is per second.
const CAP_WINDOW_MS: u64 = 1_000;

/// How long a writer's reservation in the fleet's credit window counts while its batch is in
/// flight: longer than a ledger batch may take (the PostgreSQL ledger gives up after 5 s), so
/// a slow batch never lets the window overfill, and short enough that the allowance of a host
/// that died mid-batch comes back.
const CAP_LEASE_MS: u64 = 15_000;

/// How soon a writer looks again when the window is full only because of batches in flight:
/// they usually settle within milliseconds.
const CAP_IN_FLIGHT_POLL_MS: u64 = 20;

/// How long the window's key lives after a write: longer than a lease, so that an in-flight
/// ticket never vanishes with the key, and an idle deployment's window is gone soon after.
const CAP_WINDOW_TTL_MS: u64 = CAP_LEASE_MS + 5_000;

/// What [`RedisStore::cap_take`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapTake {
    /// Credits may start; settle the ticket after the ledger commit.
    Taken {
        /// How many.
        taken: u64,
        /// Names the reservation in the window.
        ticket: String,
    },
    /// The window is full.
    Wait {
        /// Until some allowance comes back.
        wait_ms: u64,
    },
}

impl RedisStore {
    /// Takes up to `want` credits from the fleet's window of `cap` credits per second. Returns
    /// the credits taken and a ticket for [`RedisStore::cap_settle`], or nothing taken and the
    /// milliseconds until some allowance comes back.
    pub async fn cap_take(&self, cap: u64, want: u64) -> Result<CapTake, StoreError> {
        let ticket = self.inner.next_ticket.fetch_add(1, Ordering::Relaxed);
        let ticket = format!("{}:{ticket}", self.inner.consumer);
        let args = CapTakeArgs {
            window: keys::cap_window(&self.inner.config.prefix),
            want,
            cap,
            ticket: &ticket,
            lease_ms: CAP_LEASE_MS,
            window_ms: CAP_WINDOW_MS,
            in_flight_poll_ms: CAP_IN_FLIGHT_POLL_MS,
            ttl_ms: CAP_WINDOW_TTL_MS,
        };
        let mut conn = self.conn();
        let (taken, wait_ms): (u64, u64) = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        Ok(if taken > 0 { CapTake::Taken { taken, ticket } } else { CapTake::Wait { wait_ms: wait_ms.max(1) } })
    }

    /// Restamps a ticket at the ledger's commit time with the credits really made, so the cap
    /// bounds credits by when they reach the ledger.
    pub async fn cap_settle(&self, ticket: &str, credits: u64) -> Result<(), StoreError> {
        let args = CapSettleArgs {
            window: keys::cap_window(&self.inner.config.prefix),
            ticket,
            credits,
            ttl_ms: CAP_WINDOW_TTL_MS,
        };
        let mut conn = self.conn();
        self.timed(args.invocation().invoke_async::<i64>(&mut conn)).await.map(|_| ())
    }
}
