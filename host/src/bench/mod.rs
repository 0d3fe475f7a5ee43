//! Benchmarks that run against real hosts: the red packet rain load generator, its yardsticks,
//! and the suite `just bench` runs (with the payment steward against a fixed-rate writer on a
//! slowed ledger, `steward`); the host's instructions per grant under callgrind
//! (`instructions`); the embedded deployment's memory per token by part (`footprint`); and the ledger alone over 1, 2 and 3 shards.

pub mod footprint;
pub mod grabs;
pub mod histogram;
pub mod instructions;
pub mod languages;
pub mod rain;
pub mod shards;
pub mod steward;
pub mod suite;
pub mod yardstick;
