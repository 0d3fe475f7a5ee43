//! Campaign configuration: one YAML file per activity, parsed, validated and served.
//!
//! A campaign is a tree: activity → award types → awards → scenes. Operators edit it as YAML
//! (`scenes/*.yaml`, one file per activity); the server only ever sees it through the
//! validated model types of this module ([`Activity`], [`Scene`], ...), which nothing but the
//! validator creates. Parsing happens in two steps:
//!
//! 1. serde reads the text into private `Raw*` types that mirror the YAML and remember source
//!    lines. A YAML syntax error, a wrong type or an unknown key stops here with one error.
//! 2. the validator checks every semantic rule and reports *every* problem it finds, each with
//!    the file, the 1-based line, the key path and a message quoting the offending value, so
//!    that an operator can fix a file in one round trip.
//!
//! [`SceneRegistry`] serves the activities of a directory and hot-reloads it without ever
//! letting a broken edit take down what is already being served.
//!
//! The parts: `model` (the validated tree), `limits` (the bounds a file is held to),
//! `bill_template` (bill copy templates and their rendering), `raw` (serde's view of the YAML),
//! `validate` (raw → model, every problem reported), `error` ([`ConfigError`]), `load` (reading
//! and checking files and directories), `attach` (loading the scenes' plugins) and `registry`
//! (serving and hot-reloading a directory).

mod attach;
mod bill_template;
mod error;
mod limits;
mod load;
mod model;
mod raw;
mod registry;
mod validate;

pub use bill_template::{BILL_PLACEHOLDERS, BillCopy, BillVars};
pub use error::ConfigError;
pub use limits::{
    BUDGET_CENTS_MAX, ID_CHARS_MAX, MAX_GRANT_CENTS, NAME_CHARS_MAX, RETRY_MAX_MS_MAX, SCENE_FILE_BYTES_MAX,
    SCENE_FILES_PER_DIR_MAX, SCENES_PER_ACTIVITY_MAX, TEMPLATE_CHARS_MAX, USER_WINDOW_SECONDS_MAX,
};
pub use load::{parse_activity, validate_dir};
pub use model::{
    Activity, AmountRule, Award, AwardType, Compensation, Inventory, RateLimit, Reconciliation, Scene, ScenePlugins,
};
pub use registry::{FileState, SceneRegistry, Snapshot};
pub use validate::is_valid_id;
