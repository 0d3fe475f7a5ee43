//! Built-in bill copy: the scene's template, rendered once at grant time and kept with the
//! token and the ledger entry, so the user's bill never changes after the fact.

use crate::config::{BillVars, Scene};

/// The text for a grant of `amount_cents` in `scene`; empty when the scene has no bill copy.
pub fn render(scene: &Scene, locale: Option<&str>, amount_cents: i64, rain_id: i32, stage: u32) -> String {
    let Some(bill_copy) = &scene.bill_copy else { return String::new() };
    bill_copy.render(
        locale,
        &BillVars { amount_cents, rain_id, stage, scene_name: &scene.name, activity_name: &scene.activity_name },
    )
}
