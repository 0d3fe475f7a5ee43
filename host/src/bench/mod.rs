//! Benchmarks that run against real hosts: the red packet rain load generator, its yardsticks,
//! and the suite `just bench` runs.

pub mod grabs;
pub mod rain;
pub mod suite;
pub mod yardstick;
