//! Nothing to use: this crate exists for the features its dependencies turn on (see its
//! `Cargo.toml`).
