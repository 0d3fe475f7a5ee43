//! hongbao: a red packet (红包) platform for Spring Festival scale.
//!
//! A campaign is a tree in YAML — activity → award types → awards → scenes — and each scene
//! switches on capabilities (bill copy, compensation, rate limiting, inventory, reconciliation).
//! App backends ask for grants over HTTP. Each grant mints a signed token at once; a throttled
//! writer credits tokens to the ledger later, at the pace the ledger can take; the wallet shows
//! credited + pending at every moment, and a withdrawal credits the user's pending tokens first.
//!
//! # Layout
//!
//! - [`config`]: scene YAML → validated tree; the registry that hot-reloads it.
//! - [`capability`]: the five capabilities' native built-ins.
//! - [`issuer`]: the protobuf token, ed25519 keys, mint and verify.
//! - [`store`]: the token store — grants, statuses, user lists, the crediting queue, stock.
//! - [`ledger`]: double-entry accounts and entries, one entry per order number.
//! - [`plugin`]: the WebAssembly plugin runtime (sandbox, pools, failure policy).
//! - [`writer`]: the throttled ledger writer (status 1 → 2 → 8).
//! - [`journal`]: the append-only files that make the embedded store's and ledger's memory
//!   durable.
//! - [`grant`]: the grant path; [`wallet`]: balance, flow, withdrawals, restore.
//! - [`api`]: HTTP; [`cli`]: the `hongbao` command; [`app`]: wiring; [`clock`]: time.
//! - [`bench`]: the rain load generator, its yardsticks and the benchmark suite.
//!
//! # Data flow
//!
//! ```text
//! POST /v1/grants ─► rate limit ─► amount ─► order number ─► token (sign) ─► store (group commit)
//!                                                                            │ queue (status 1)
//!               ledger writer: claim (1→2) ─► ledger batch ─► complete (2→8) ◄┘
//! GET /v1/wallets/{act_id} = ledger balance + store tokens the ledger does not have yet
//! ```

pub mod api;
pub mod app;
pub mod bench;
pub mod capability;
pub mod cli;
pub mod clock;
pub mod config;
pub mod grant;
pub mod issuer;
pub mod journal;
pub mod ledger;
pub mod plugin;
pub mod stock;
pub mod store;
pub mod wallet;
pub mod writer;
