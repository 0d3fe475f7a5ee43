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
//! Each module owns one concern; the arrows of `use crate::` between them form no cycle.
//!
//! - [`access`]: who may call what, in front of every handler — app credentials (`apps`),
//!   signed requests (`signature`), user sessions (`session`), the admin credential (`admin`),
//!   and the signing side for `hongbao call` and the benchmarks (`client`).
//! - [`config`]: scene YAML → validated tree (`raw` → `validate` → `model`; `limits`, the
//!   bounds a file is held to; `bill_template`; `load`, files and directories; `attach`, the
//!   scenes' plugins; `error`) and the `registry` that hot-reloads it.
//! - [`stock`]: the stock types (bounds, use, the source plugins read), a leaf every part uses.
//! - [`capability`]: the five capabilities' native built-ins; `reconciliation` also decides
//!   which grants a repair selects.
//! - [`issuer`]: the protobuf token, ed25519 keys (rotated, retired), mint and verify; `watch`,
//!   the forgery watch's counts.
//! - [`store`]: the token store — grants, statuses, user lists, the crediting queue, stock —
//!   behind one enum over `embedded` (memory + journal) and `redis` (`keys`, `grant`,
//!   `reserve`, `queue`, `reads`, `cap`, and `scripts/*.lua` with one argument struct each).
//! - [`ledger`]: double-entry accounts and entries, one entry per order number; `rules` holds
//!   the money rules and the paired assertions both `embedded` and `postgres` apply.
//! - [`plugin`]: the WebAssembly plugin runtime (`runtime`, `scene_plugin`, `pool`, `calls`,
//!   `failure`, `sandbox`, `host_api`, `spec`, `limits`, `cache`, `stats`; `authoring`,
//!   `scaffold`, `decisions` and `replay` for `hongbao plugin run`, `new` and `replay`).
//! - [`writer`]: the throttled ledger writer (status 1 → 2 → 8).
//! - [`journal`]: the append-only files that make the embedded store's and ledger's memory
//!   durable; [`user_index`]: their per-user indexes, small for the many users with few tokens;
//!   [`split_map`]: their large maps, split so that growing one never stops a grant for long.
//! - [`identity`]: (app, app_user_id) → act_id, the phone number winning across apps, kept
//!   beside the ledger (`embedded` journal or `postgres` tables).
//! - [`grant`]: the grant path, in steps (resolve the scene, run the hooks, mint, commit), with
//!   `grant::replay` finding earlier answers; [`wallet`]: balance, flow, withdrawals, restore, and
//!   `wallet::degraded`, the reads that answer from one backend when the other is down.
//! - [`api`]: HTTP (`routes`, each route with the caller it needs; `body`, strict JSON input;
//!   `error`, every error's status and code); [`cli`]: the `hongbao` command; [`app`]:
//!   wiring, in dependency order; [`clock`]: time; [`breaker`]: skipping a failed backend for a
//!   while (the grant path's ledger lookup, the wallet's degraded reads).
//! - [`metrics`]: `GET /metrics` — the grant path's counters and histograms, and the page in
//!   the Prometheus text format (`exposition`, which also reads the writer's, plugins', forgery
//!   watch's and the `process`'s own figures); [`memory`]: the allocator (jemalloc), its bytes in use and giving pages back;
//!   [`retention`]: credited records leaving the hot store; [`dashboard`]: `GET /dashboard`, a
//!   live page for operators, and the figures it polls, sampled once a second.
//! - [`bench`]: the rain load generator, its yardsticks and the benchmark suite.
//!
//! # Data flow
//!
//! ```text
//! request ─► access: signature + nonce (apps), session (users), admin credential; scope
//! POST /v1/grants ─► rate limit ─► amount ─► order number ─► token (sign) ─► store (group commit)
//!                                                                            │ queue (status 1)
//!               ledger writer: claim (1→2) ─► ledger batch ─► complete (2→8) ◄┘
//! GET /v1/wallets/{act_id} = ledger balance + store tokens the ledger does not have yet
//! ```

pub mod access;
pub mod api;
pub mod app;
pub mod bench;
pub mod breaker;
pub mod capability;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod failpoint;
pub mod grant;
pub mod identity;
pub mod issuer;
pub mod journal;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod packet;
pub mod plugin;
pub mod retention;
pub mod shared_strings;
pub mod split_map;
pub mod stock;
pub mod store;
pub mod user_index;
pub mod wallet;
pub mod writer;
