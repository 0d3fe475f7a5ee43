//! The stock types shared by the token store, the plugin host and the scene configuration: the
//! bounds a grant is checked against, what a scene or activity has used, and the trait through
//! which plugins read that use.
//!
//! A leaf: it imports nothing else from the crate, so the store, the plugin runtime, the
//! configuration and the capabilities can all use it without importing one another.

/// The stock bounds a grant is checked against, taken from the scene version the request
/// started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StockLimits {
    /// The activity's whole budget: the sum of all its grants never exceeds it.
    pub activity_budget_cents: i64,
    /// The scene's count of grants, when its inventory counts.
    pub scene_count_max: Option<u64>,
    /// The scene's budget, when its inventory has one.
    pub scene_budget_cents: Option<i64>,
}

/// Used units of a scene's or an activity's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct StockUsed {
    /// Grants made.
    pub count: u64,
    /// Cents granted.
    pub cents: i64,
}

/// Reads how much of a scene's stock is used (the token store implements it for plugins).
pub trait StockSource: Send + Sync {
    /// Grants and cents used by `scene_id` (or the whole activity when `None`).
    ///
    /// # Errors
    ///
    /// The store could not be read; the message says why.
    fn used(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, String>;
}
