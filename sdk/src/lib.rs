//! `hongbao-sdk`: write hongbao scene plugins as WebAssembly components.
//!
//! A scene hands any of its five capabilities — bill copy, compensation, rate limiting,
//! inventory, reconciliation — to a plugin. Plugins are stateless policy: the host passes a call
//! context (including time and randomness) and keeps all state in its own stores.
//!
//! This crate also carries the public token contract, `proto/hongbao/token/v1/token.proto`,
//! which app backends use to decode the tokens hongbao grants.
//!
//! Status: the WIT contract, bindings and helpers arrive with the plugin runtime; until then each
//! capability is served by the host's native built-in (see the host crate's `capability` module).
#![deny(missing_docs)]

/// The protobuf source of the token contract, for tools that want to compile it themselves.
pub const TOKEN_PROTO: &str = include_str!("../proto/hongbao/token/v1/token.proto");
