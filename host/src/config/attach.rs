//! Attaching plugins: loads the WebAssembly plugins a parsed activity's scenes declare into
//! those scenes, and reports the ones that did not load.

use std::sync::Arc;

use super::error::ConfigError;
use super::model::Activity;
use crate::plugin::{LoadError, PluginRuntime};

/// Loads the plugins `activity`'s scenes declare into them.
///
/// # Errors
///
/// A plugin whose file is missing or whose sha256 is not the pinned one refuses the file (and
/// so its scenes), reported at the plugin block's line.
pub(super) fn attach_plugins(activity: &mut Activity, runtime: &Arc<PluginRuntime>) -> Result<(), Vec<ConfigError>> {
    let mut errors = Vec::new();
    for scene in activity.scenes.values_mut() {
        if scene.plugins.specs.is_empty() {
            continue;
        }
        // Not shared yet, so this does not clone.
        let scene = Arc::make_mut(scene);
        let limits = scene.stock_limits(activity.budget_cents);
        for spec in scene.plugins.specs.clone() {
            match runtime.load(&spec, &activity.id, &scene.id, limits) {
                Ok(plugin) => *scene.plugins.slot(spec.capability) = Some(plugin),
                Err(error) => errors.push(ConfigError {
                    file: activity.file.clone(),
                    line: if matches!(error, LoadError::Sha256Mismatch { .. }) { spec.sha256_line } else { spec.line },
                    path: format!(
                        "{}.{}",
                        spec.key_path,
                        if matches!(error, LoadError::Sha256Mismatch { .. }) { "sha256" } else { "path" }
                    ),
                    message: error.to_string(),
                }),
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// The plugins of `activity` that were attached but could not be loaded (the server serves them
/// with their failure policy), one error each at the plugin block's `path`.
pub(super) fn plugin_load_errors(activity: &Activity) -> Vec<ConfigError> {
    activity
        .scenes
        .values()
        .flat_map(|scene| {
            scene.plugins.specs.iter().filter_map(|spec| {
                let error = scene.plugins.get(spec.capability)?.load_error()?;
                Some(ConfigError {
                    file: activity.file.clone(),
                    line: spec.line,
                    path: format!("{}.path", spec.key_path),
                    message: error.to_string(),
                })
            })
        })
        .collect()
}
