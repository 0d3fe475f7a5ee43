//! The scene registry: serves the activities of a scene directory and hot-reloads it.
//!
//! Requests read an immutable [`Snapshot`] through an [`ArcSwap`], so a lookup never takes a
//! lock and a request keeps the snapshot it started with even while a reload publishes a new
//! one. A reload re-parses only the files whose bytes changed and treats every file on its
//! own: a broken edit keeps the file's last good version serving, and nothing that happens to
//! one file changes what another file serves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::attach::attach_plugins;
use super::error::ConfigError;
use super::limits::SCENE_FILES_PER_DIR_MAX;
use super::load::{duplicate_activity, list_scene_files, parse_bytes, read_scene_file, too_many_files};
use super::model::{Activity, Scene};
use super::validate::Parsed;
use crate::plugin::PluginRuntime;

/// An immutable view of what is being served: the live activities and the state of every
/// scene file.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Served activities by id.
    activities: BTreeMap<String, Arc<Activity>>,
    /// Every scene file of the directory, by path.
    files: BTreeMap<PathBuf, FileState>,
}

impl Snapshot {
    /// Looks up a served activity by id.
    pub fn activity(&self, id: &str) -> Option<&Arc<Activity>> {
        self.activities.get(id)
    }

    /// Looks up a served scene, the lookup done for every grant request.
    pub fn scene(&self, activity_id: &str, scene_id: &str) -> Option<&Arc<Scene>> {
        self.activities.get(activity_id)?.scenes.get(scene_id)
    }

    /// The served activities, sorted by id.
    pub fn activities(&self) -> impl Iterator<Item = &Arc<Activity>> {
        self.activities.values()
    }

    /// Every scene file with its state, sorted by path, for operator tools and health checks.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &FileState)> {
        self.files.iter().map(|(path, state)| (path.as_path(), state))
    }

    /// Tells whether two snapshots serve the same activities and report the same file states.
    fn same_as(&self, other: &Snapshot) -> bool {
        self.files == other.files
            && self.activities.len() == other.activities.len()
            && self
                .activities
                .iter()
                .zip(&other.activities)
                .all(|((a_id, a), (b_id, b))| a_id == b_id && Arc::ptr_eq(a, b))
    }
}

/// What the registry knows about one scene file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileState {
    /// Id of the activity the file serves (its last good version), if any.
    pub activity_id: Option<String>,
    /// Version of the served content (see [`Activity::version`]), if any.
    pub version: Option<String>,
    /// Problems of the newest content; empty when the newest content is what is served.
    pub errors: Vec<ConfigError>,
    /// The version of valid newer content waiting for its plugins to compile, while `version`
    /// keeps serving.
    pub pending_version: Option<String>,
}

/// Serves the activities of one scene directory and reloads it on demand.
pub struct SceneRegistry {
    /// The scene directory.
    dir: PathBuf,
    /// The published snapshot.
    current: ArcSwap<Snapshot>,
    /// Per-file bookkeeping; the lock also serialises reloads.
    tracked: Mutex<BTreeMap<PathBuf, Tracked>>,
    /// Loads the scenes' plugins.
    plugins: Arc<PluginRuntime>,
}

impl std::fmt::Debug for SceneRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneRegistry").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Bookkeeping for one file between reloads.
#[derive(Default)]
struct Tracked {
    /// SHA-256 of the newest bytes read; `None` when the file could not be read, so that the
    /// next reload tries again.
    hash: Option<[u8; 32]>,
    /// The last good version, which is what the file serves.
    serving: Option<Arc<Activity>>,
    /// Newest content that is valid but whose activity id another file serves; it is served
    /// as soon as that id becomes free.
    waiting: Option<Parsed>,
    /// Problems of the newest content.
    errors: Vec<ConfigError>,
    /// The plugin files the newest content names, with their size, mtime and inode when last
    /// read: a plugin replaced on disk reloads its scene file even if the YAML is unchanged.
    plugin_files: Vec<(PathBuf, Option<FileStamp>)>,
}

/// Enough of a file's metadata to notice it was replaced or rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified_ns: i128,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: meta.len(),
        modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        inode: meta.ino(),
    })
}

impl Tracked {
    /// Replaces the recorded problems, logging them when they are new.
    fn set_errors(&mut self, errors: Vec<ConfigError>) {
        if self.errors != errors {
            for error in &errors {
                tracing::warn!(
                    file = %error.file.display(),
                    line = error.line,
                    path = %error.path,
                    "scene config rejected: {}",
                    error.message
                );
            }
            self.errors = errors;
        }
    }

    /// The public state of the file.
    fn state(&self) -> FileState {
        FileState {
            activity_id: self.serving.as_ref().map(|a| a.id.clone()),
            version: self.serving.as_ref().map(|a| a.version.clone()),
            errors: self.errors.clone(),
            pending_version: self
                .waiting
                .as_ref()
                .filter(|parsed| !plugins_ready(&parsed.activity))
                .map(|parsed| parsed.activity.version.clone()),
        }
    }
}

impl SceneRegistry {
    /// Loads every scene file of `dir`.
    ///
    /// Valid files serve; invalid files are recorded in [`FileState::errors`] and do not stop
    /// the others.
    ///
    /// # Errors
    ///
    /// Only an unreadable directory is an error.
    pub fn load(dir: &Path, plugins: Arc<PluginRuntime>) -> std::io::Result<SceneRegistry> {
        let registry = SceneRegistry {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            tracked: Mutex::new(BTreeMap::new()),
            plugins,
        };
        registry.reload()?;
        Ok(registry)
    }

    /// The scene directory this registry serves.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot. Cheap (one atomic load); keep the `Arc` for the whole request so
    /// that a concurrent reload cannot change the configuration under it.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Rescans the directory and publishes a new snapshot if anything changed.
    ///
    /// Only files whose bytes changed (by SHA-256) are parsed again. A new file adds its
    /// activity; a deleted file's activity stops serving; invalid new content keeps the
    /// file's last good version serving and records (and logs) the problems. An activity id
    /// already served by another file is refused for the later claimant. Returns whether the
    /// snapshot changed, including changes of recorded errors. Reloads are serialised.
    ///
    /// # Errors
    ///
    /// An unreadable directory is an error and leaves the served snapshot untouched.
    pub fn reload(&self) -> std::io::Result<bool> {
        let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        let listed = list_scene_files(&self.dir)?;
        let present: BTreeSet<&PathBuf> = listed.iter().collect();
        tracked.retain(|path, entry| {
            let keep = present.contains(path);
            if !keep && let Some(activity) = &entry.serving {
                tracing::info!(file = %path.display(), activity = %activity.id, "scene file removed");
            }
            keep
        });

        for (index, path) in listed.iter().enumerate() {
            let entry = tracked.entry(path.clone()).or_default();
            if index >= SCENE_FILES_PER_DIR_MAX {
                entry.hash = None;
                entry.waiting = None;
                entry.set_errors(vec![too_many_files(path, listed.len())]);
                continue;
            }
            let bytes = match read_scene_file(path) {
                Ok(bytes) => bytes,
                Err(errors) => {
                    entry.hash = None;
                    entry.waiting = None;
                    entry.set_errors(errors);
                    continue;
                }
            };
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            let plugins_unchanged = entry.plugin_files.iter().all(|(file, seen)| stamp(file) == *seen);
            if entry.hash == Some(hash) && plugins_unchanged {
                continue;
            }
            entry.hash = Some(hash);
            entry.plugin_files.clear();
            match parse_bytes(path, &bytes) {
                Ok(mut parsed) => {
                    // Stamped before reading, so a write during the load is seen next time.
                    entry.plugin_files = parsed
                        .activity
                        .scenes
                        .values()
                        .flat_map(|scene| scene.plugins.specs.iter().map(|spec| spec.path.clone()))
                        .map(|file| {
                            let seen = stamp(&file);
                            (file, seen)
                        })
                        .collect();
                    match attach_plugins(&mut parsed.activity, &self.plugins) {
                        Ok(()) => entry.waiting = Some(parsed),
                        Err(errors) => {
                            entry.waiting = None;
                            entry.set_errors(errors);
                        }
                    }
                }
                Err(errors) => {
                    entry.waiting = None;
                    entry.set_errors(errors);
                }
            }
        }

        claim_activity_ids(&mut tracked);

        let next = Snapshot {
            activities: tracked
                .values()
                .filter_map(|entry| entry.serving.clone())
                .map(|activity| (activity.id.clone(), activity))
                .collect(),
            files: tracked.iter().map(|(path, entry)| (path.clone(), entry.state())).collect(),
        };
        if self.current.load().same_as(&next) {
            return Ok(false);
        }
        self.current.store(Arc::new(next));
        Ok(true)
    }
}

/// Whether every plugin of `activity`'s scenes is compiled (or failed to), none warming.
fn plugins_ready(activity: &Activity) -> bool {
    activity.scenes.values().all(|scene| {
        scene.plugins.specs.iter().all(|spec| scene.plugins.get(spec.capability).is_none_or(|plugin| plugin.is_ready()))
    })
}

/// Serves every waiting valid version whose activity id is free (or already its own).
///
/// Files are visited in name order and the pass repeats while it makes progress, because a
/// file that switches to a new id frees its old one for a file visited earlier.
fn claim_activity_ids(tracked: &mut BTreeMap<PathBuf, Tracked>) {
    loop {
        let mut owners: HashMap<String, PathBuf> = tracked
            .iter()
            .filter_map(|(path, entry)| Some((entry.serving.as_ref()?.id.clone(), path.clone())))
            .collect();
        let mut progress = false;
        for (path, entry) in tracked.iter_mut() {
            let Some(parsed) = entry.waiting.take() else {
                continue;
            };
            // A new version of a file that serves waits until its plugins are compiled (in the
            // background): the version being served keeps answering, and the switch happens on
            // the first reload after they are ready. A file that serves nothing yet serves at
            // once, its warming plugins answering with their scenes' failure policies.
            if entry.serving.is_some() && !plugins_ready(&parsed.activity) {
                entry.waiting = Some(parsed);
                continue;
            }
            match owners.get(&parsed.activity.id) {
                Some(owner) if owner != path => {
                    let error = duplicate_activity(&parsed, owner);
                    entry.set_errors(vec![error]);
                    entry.waiting = Some(parsed);
                }
                _ => {
                    if let Some(old) = &entry.serving {
                        owners.remove(&old.id);
                    }
                    owners.insert(parsed.activity.id.clone(), path.clone());
                    tracing::info!(
                        file = %path.display(),
                        activity = %parsed.activity.id,
                        version = %parsed.activity.version,
                        "scene config loaded"
                    );
                    entry.serving = Some(Arc::new(parsed.activity));
                    entry.set_errors(Vec::new());
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AmountRule;

    /// A valid one-scene activity whose scene pays up to `max_cents`.
    fn activity_yaml(id: &str, max_cents: i64) -> String {
        format!(
            "activity:
  id: {id}
  name: 测试活动
  budget_cents: 100000000
  award_types:
    - id: cash
      name: 现金红包
      awards:
        - id: rain-cash
          name: 红包雨现金
          scenes:
            - id: eve-rain
              name: 除夕红包雨
              app_ids: [1128]
              amount:
                kind: random
                min_cents: 1
                max_cents: {max_cents}
"
        )
    }

    /// Writes a scene file into the test directory.
    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write scene file");
    }

    /// The `max_cents` of the `eve-rain` scene of an activity, if served.
    fn max_cents(snapshot: &Snapshot, activity_id: &str) -> Option<i64> {
        match snapshot.scene(activity_id, "eve-rain")?.amount {
            AmountRule::Random { max_cents, .. } => Some(max_cents),
            _ => None,
        }
    }

    /// The state of one file in a snapshot.
    fn state<'s>(snapshot: &'s Snapshot, dir: &Path, name: &str) -> &'s FileState {
        let path = dir.join(name);
        snapshot.files().find(|(p, _)| *p == path.as_path()).map(|(_, s)| s).expect("file state")
    }

    /// Proves that an invalid edit keeps the last good version serving while recording the
    /// errors, and that fixing the file serves the fix and clears the errors.
    #[test]
    fn invalid_edit_keeps_old_version_and_fix_clears_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", &activity_yaml("spring", 888));
        let registry = SceneRegistry::load(dir.path(), PluginRuntime::new(None).expect("runtime")).expect("load");
        let good = registry.snapshot();
        let good_version = good.activity("spring").expect("served").version.clone();
        assert!(state(&good, dir.path(), "a.yaml").errors.is_empty());

        write(dir.path(), "a.yaml", &activity_yaml("spring", 0));
        assert!(registry.reload().expect("reload"));
        let broken = registry.snapshot();
        assert_eq!(max_cents(&broken, "spring"), Some(888));
        let file = state(&broken, dir.path(), "a.yaml");
        assert_eq!(file.activity_id.as_deref(), Some("spring"));
        assert_eq!(file.version.as_ref(), Some(&good_version));
        assert_eq!(file.errors.len(), 1);
        assert_eq!(file.errors[0].line, 18);
        assert_eq!(file.errors[0].path, "activity.award_types[0].awards[0].scenes[0].amount.max_cents");
        assert!(!registry.reload().expect("reload"), "unchanged bytes must not change anything");

        write(dir.path(), "a.yaml", &activity_yaml("spring", 999));
        assert!(registry.reload().expect("reload"));
        let fixed = registry.snapshot();
        assert_eq!(max_cents(&fixed, "spring"), Some(999));
        let file = state(&fixed, dir.path(), "a.yaml");
        assert!(file.errors.is_empty());
        assert_ne!(file.version.as_ref(), Some(&good_version));
    }

    /// Proves that a file invalid from the start is recorded without being fatal and without
    /// affecting the other files.
    #[test]
    fn invalid_file_on_load_is_recorded_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", &activity_yaml("spring", 888));
        write(dir.path(), "b.yaml", "activity:\n  id: bad_id\n");
        let registry = SceneRegistry::load(dir.path(), PluginRuntime::new(None).expect("runtime")).expect("load");
        let snapshot = registry.snapshot();
        let ids: Vec<&str> = snapshot.activities().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["spring"]);
        let b = state(&snapshot, dir.path(), "b.yaml");
        assert_eq!(b.activity_id, None);
        assert_eq!(b.version, None);
        assert!(b.errors.iter().any(|e| e.line == 2 && e.path == "activity.id"));
        assert!(SceneRegistry::load(&dir.path().join("missing"), PluginRuntime::new(None).expect("runtime")).is_err());
    }

    /// Proves that deleting a file stops its activity and a new file adds one, leaving the
    /// other files' activities untouched.
    #[test]
    fn deleted_file_stops_serving_and_new_file_adds() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", &activity_yaml("spring", 888));
        write(dir.path(), "b.yaml", &activity_yaml("lantern", 288));
        let registry = SceneRegistry::load(dir.path(), PluginRuntime::new(None).expect("runtime")).expect("load");
        let spring = Arc::clone(registry.snapshot().activity("spring").expect("served"));

        std::fs::remove_file(dir.path().join("b.yaml")).expect("remove");
        assert!(registry.reload().expect("reload"));
        let snapshot = registry.snapshot();
        assert!(snapshot.activity("lantern").is_none());
        assert!(snapshot.scene("lantern", "eve-rain").is_none());
        assert_eq!(snapshot.files().count(), 1);
        assert!(Arc::ptr_eq(snapshot.activity("spring").expect("served"), &spring));

        write(dir.path(), "c.yml", &activity_yaml("dragon-boat", 520));
        assert!(registry.reload().expect("reload"));
        let snapshot = registry.snapshot();
        let ids: Vec<&str> = snapshot.activities().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["dragon-boat", "spring"]);
        assert_eq!(max_cents(&snapshot, "dragon-boat"), Some(520));
        assert!(Arc::ptr_eq(snapshot.activity("spring").expect("served"), &spring));
    }

    /// Proves that a second file declaring an already served activity id is rejected with an
    /// error, and takes the id over once the first file is gone.
    #[test]
    fn duplicate_activity_id_is_rejected_for_the_second_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", &activity_yaml("spring", 888));
        let registry = SceneRegistry::load(dir.path(), PluginRuntime::new(None).expect("runtime")).expect("load");
        write(dir.path(), "0-early.yaml", &activity_yaml("spring", 1));
        assert!(registry.reload().expect("reload"));

        let snapshot = registry.snapshot();
        assert_eq!(max_cents(&snapshot, "spring"), Some(888), "the first loader keeps the id");
        let second = state(&snapshot, dir.path(), "0-early.yaml");
        assert_eq!(second.activity_id, None);
        assert_eq!(second.errors.len(), 1);
        assert_eq!((second.errors[0].line, second.errors[0].path.as_str()), (2, "activity.id"));
        assert_eq!(second.errors[0].message, "activity id `spring` is already declared in `a.yaml`");
        assert!(!registry.reload().expect("reload"));

        std::fs::remove_file(dir.path().join("a.yaml")).expect("remove");
        assert!(registry.reload().expect("reload"));
        let snapshot = registry.snapshot();
        assert_eq!(max_cents(&snapshot, "spring"), Some(1));
        assert!(state(&snapshot, dir.path(), "0-early.yaml").errors.is_empty());
    }

    /// Proves that a snapshot held across a reload keeps showing exactly what it showed
    /// before, while new snapshots show the reloaded content.
    #[test]
    fn held_snapshot_is_unchanged_by_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yaml", &activity_yaml("spring", 888));
        let registry = SceneRegistry::load(dir.path(), PluginRuntime::new(None).expect("runtime")).expect("load");
        let held = registry.snapshot();
        let held_scene = Arc::clone(held.scene("spring", "eve-rain").expect("scene"));

        write(dir.path(), "a.yaml", &activity_yaml("spring", 666));
        write(dir.path(), "b.yaml", "activity: [");
        assert!(registry.reload().expect("reload"));

        assert_eq!(max_cents(&held, "spring"), Some(888));
        assert_eq!(held.files().count(), 1);
        assert!(Arc::ptr_eq(held.scene("spring", "eve-rain").expect("scene"), &held_scene));
        let now = registry.snapshot();
        assert_eq!(max_cents(&now, "spring"), Some(666));
        assert_eq!(now.files().count(), 2);
    }
}
