//! The black-box test suite: one binary, a module per topic. Most tests start the real `hongbao`
//! binary on 127.0.0.1:0 and talk HTTP to it; the writer-cap and money-property tests drive the
//! library in-process over the real embedded stores, because they need a hand-moved clock and
//! crashes between the writer's steps.

mod access;
mod backends;
mod cli;
mod crash;
mod dashboard;
mod decisions;
mod degraded;
mod deployment;
mod fleet;
mod grants;
mod identities;
mod languages;
mod ledger_shards;
mod metrics;
mod money_properties;
mod packets;
mod plugins;
mod readme;
mod reload;
mod retention;
mod steward;
mod stock;
mod support;
mod wallet;
mod warming;
mod writer_cap;
