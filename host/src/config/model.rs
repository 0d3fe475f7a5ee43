//! The validated campaign tree: activity → award types → awards → scenes, and each scene's
//! capability settings. Only the validator builds these types; the server reads nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::bill_template::BillCopy;
use crate::plugin::{Capability, Plugin, PluginSpec};
use crate::stock::StockLimits;

/// One campaign activity: the validated content of one scene file.
///
/// It is immutable once built and shared behind an `Arc`, so a reload replaces whole
/// activities and never mutates one that a request is still using.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// Unique activity id; the first component of every order number.
    pub id: String,
    /// Display name, used in bill copy (`{activity_name}`).
    pub name: String,
    /// Total spend the activity may ever make, in cents.
    pub budget_cents: i64,
    /// Whether clients may hand back tokens the server lost (`restore: false` switches it off,
    /// as the seed asks of a token scheme that might be broken: degrade, do not pay forgeries).
    pub restore_enabled: bool,
    /// The award types, in file order.
    pub award_types: Vec<AwardType>,
    /// Every scene of the activity, by scene id, for the lookup done on each grant request.
    pub scenes: BTreeMap<String, Arc<Scene>>,
    /// First 16 hex characters of the SHA-256 of the file bytes; tells which edit is live.
    pub version: String,
    /// The file the activity was loaded from, for error messages and operator tools.
    pub file: PathBuf,
}

/// A kind of award within an activity (e.g. cash, cards, fireworks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwardType {
    /// Unique award type id within the activity; part of every order number.
    pub id: String,
    /// Display name for operator tools.
    pub name: String,
    /// The awards of this type, in file order.
    pub awards: Vec<Award>,
}

/// One award (e.g. "the cash of the red-packet rains"), grouping the scenes that grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Award {
    /// Unique award id within the activity.
    pub id: String,
    /// Display name for operator tools.
    pub name: String,
    /// Ids of the award's scenes, in file order; the scenes themselves are in
    /// [`Activity::scenes`].
    pub scene_ids: Vec<String>,
}

/// A scene: the unit a grant request names, with everything needed to serve it.
///
/// The scene repeats its activity and award ids and names so that a request handler holding
/// only an `Arc<Scene>` can build order numbers and bill copy without a second lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Id of the activity the scene belongs to.
    pub activity_id: String,
    /// Display name of that activity.
    pub activity_name: String,
    /// Id of the award type the scene belongs to.
    pub award_type: String,
    /// Id of the award the scene belongs to.
    pub award_id: String,
    /// Scene id, unique within the activity.
    pub id: String,
    /// Display name, used in bill copy (`{scene_name}`).
    pub name: String,
    /// The apps allowed to request grants for this scene, in file order.
    pub app_ids: Vec<i64>,
    /// How much one grant pays.
    pub amount: AmountRule,
    /// Bill text shown to the user; `None` when the capability is off.
    pub bill_copy: Option<BillCopy>,
    /// Request throttling; `None` when the capability is off.
    pub rate_limit: Option<RateLimit>,
    /// Scene stock; `None` when off (the activity budget still bounds spend).
    pub inventory: Option<Inventory>,
    /// Retry schedule for failed crediting steps; `None` when off.
    pub compensation: Option<Compensation>,
    /// Ledger reconciliation settings; `None` when off.
    pub reconciliation: Option<Reconciliation>,
    /// WebAssembly plugins that take over capabilities, with their failure policies.
    pub plugins: ScenePlugins,
    /// Version of the activity file this scene was loaded from (see [`Activity::version`]).
    pub version: String,
}

/// A scene's plugins: what the YAML declares, and once the registry has loaded them, the
/// loaded plugins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenePlugins {
    /// The declarations, in capability order.
    pub specs: Vec<PluginSpec>,
    /// `plugins.bill_copy`, loaded.
    pub bill_copy: Option<Arc<Plugin>>,
    /// `plugins.rate_limit`, loaded.
    pub rate_limit: Option<Arc<Plugin>>,
    /// `plugins.inventory`, loaded.
    pub inventory: Option<Arc<Plugin>>,
    /// `plugins.compensation`, loaded.
    pub compensation: Option<Arc<Plugin>>,
    /// `plugins.reconciliation`, loaded.
    pub reconciliation: Option<Arc<Plugin>>,
}

impl ScenePlugins {
    /// The loaded plugin for `capability`.
    pub fn get(&self, capability: Capability) -> Option<&Arc<Plugin>> {
        match capability {
            Capability::BillCopy => self.bill_copy.as_ref(),
            Capability::RateLimit => self.rate_limit.as_ref(),
            Capability::Inventory => self.inventory.as_ref(),
            Capability::Compensation => self.compensation.as_ref(),
            Capability::Reconciliation => self.reconciliation.as_ref(),
        }
    }

    pub(super) fn slot(&mut self, capability: Capability) -> &mut Option<Arc<Plugin>> {
        match capability {
            Capability::BillCopy => &mut self.bill_copy,
            Capability::RateLimit => &mut self.rate_limit,
            Capability::Inventory => &mut self.inventory,
            Capability::Compensation => &mut self.compensation,
            Capability::Reconciliation => &mut self.reconciliation,
        }
    }
}

impl Scene {
    /// Tells whether `app_id` may request grants for this scene; requests from any other app
    /// are refused before any money moves.
    #[must_use]
    pub fn allows_app(&self, app_id: i64) -> bool {
        self.app_ids.contains(&app_id)
    }

    /// The bounds the store enforces for a grant in this scene of an activity with
    /// `activity_budget_cents`: the activity's budget, and the scene's inventory when it has one.
    #[must_use]
    pub fn stock_limits(&self, activity_budget_cents: i64) -> StockLimits {
        StockLimits {
            activity_budget_cents,
            scene_count_max: self.inventory.as_ref().and_then(|inventory| inventory.count_max),
            scene_budget_cents: self.inventory.as_ref().and_then(|inventory| inventory.budget_cents),
        }
    }
}

/// How the amount of one grant is decided. Every amount is in cents, positive and at most
/// [`MAX_GRANT_CENTS`](super::limits::MAX_GRANT_CENTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountRule {
    /// Every grant pays exactly `cents`.
    Fixed {
        /// The amount of each grant.
        cents: i64,
    },
    /// The server draws the amount uniformly from `min_cents..=max_cents`.
    Random {
        /// Smallest amount drawn.
        min_cents: i64,
        /// Largest amount drawn.
        max_cents: i64,
    },
    /// The calling service chooses `amount_cents`, which must lie in `min_cents..=max_cents`.
    Caller {
        /// Smallest amount the caller may ask for.
        min_cents: i64,
        /// Largest amount the caller may ask for.
        max_cents: i64,
    },
}

/// Token-bucket throttling of one scene plus a per-user grant limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added to the scene bucket per second (> 0).
    pub scene_per_second: u32,
    /// Capacity of the scene bucket, i.e. the largest burst (>= 1).
    pub scene_burst: u32,
    /// Grants one user may receive per window (>= 1).
    pub user_max: u32,
    /// Length of the per-user window in seconds (1..=86400).
    pub user_window_seconds: u32,
}

/// The stock of a scene; at least one of the two bounds is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inventory {
    /// The most grants the scene may ever make.
    pub count_max: Option<u64>,
    /// The most cents the scene may ever pay out (at most the activity budget).
    pub budget_cents: Option<i64>,
}

/// Exponential back-off for retrying a failed crediting step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compensation {
    /// Delay before the first retry, in milliseconds (>= 1).
    pub retry_initial_ms: u64,
    /// Cap on the delay between retries, in milliseconds (at most one hour).
    pub retry_max_ms: u64,
}

/// Settings for reconciling the scene's grants against the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// Largest difference, in cents, accepted without raising an alert (>= 0).
    pub tolerance_cents: i64,
}
