//! The bounds a scene file is held to: amounts, sizes, counts and lengths, each with the reason
//! for its value. The validator checks them; the ledger takes its entry bound from
//! [`BUDGET_CENTS_MAX`].

/// The largest amount, in cents, that a single red packet may carry (¥200,000).
///
/// This is a platform-wide safety cap independent of any budget: a typo such as an extra zero
/// in `max_cents` must not be able to pay out a fortune in one grant, and every amount rule is
/// checked against it when the file is loaded.
pub const MAX_GRANT_CENTS: i64 = 20_000_000;

/// The largest accepted scene file, in bytes (1 MiB).
///
/// A real campaign with thousands of scenes stays far below this; the cap keeps a runaway or
/// malicious file from making the loader allocate without bound.
pub const SCENE_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The most scenes one activity may declare.
///
/// Every scene is held in memory and looked up per grant request; the cap bounds both and
/// catches generated files that went wrong.
pub const SCENES_PER_ACTIVITY_MAX: usize = 10_000;

/// The most scene files loaded from one directory; files beyond it (in name order) are
/// reported and not loaded, so that a mis-pointed directory cannot exhaust the server.
pub const SCENE_FILES_PER_DIR_MAX: usize = 1000;

/// The longest display name, in characters, of an activity, award type, award or scene; names
/// end up in bills and operator tools, where longer text is truncated anyway.
pub const NAME_CHARS_MAX: usize = 128;

/// The longest id, in characters. Ids are embedded in order numbers, whose total length the
/// ledger bounds.
pub const ID_CHARS_MAX: usize = 64;

/// The largest activity budget, in cents (10^15 cents = ¥10 trillion): far above any real
/// campaign, yet small enough that sums of budgets cannot overflow an `i64`.
pub const BUDGET_CENTS_MAX: i64 = 1_000_000_000_000_000;

/// The longest bill copy template, in characters; the rendered text is shown in a wallet's
/// bill list, which has little room.
pub const TEMPLATE_CHARS_MAX: usize = 256;

/// The longest rate-limit window, in seconds (one day); per-user counters are kept for one
/// window, so a longer window would mean unbounded memory for idle users.
pub const USER_WINDOW_SECONDS_MAX: i64 = 86_400;

/// The longest compensation back-off, in milliseconds (one hour); a failed crediting step
/// must be retried at least this often or the user waits too long for the money.
pub const RETRY_MAX_MS_MAX: i64 = 3_600_000;
