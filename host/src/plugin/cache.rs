//! Components compiled once per content hash: in memory for the process, and on disk under the
//! data directory so a restart does not compile again.
//!
//! The disk files are native code that wasmtime maps and runs as-is, so the host only ever
//! loads files it wrote itself: an owner-only directory named after the wasmtime version, one
//! file per sha256 of the `.wasm`, written to a temporary name and renamed, never modified.
//! wasmtime checks each file's header against its version and engine settings; a file that
//! fails to load is compiled again and replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::limits::CACHE_ARTIFACTS_MAX;

/// The directory name inside the data directory; the wasmtime version is part of it because
/// artifacts are only valid for the version that wrote them.
const CACHE_SUBDIR: &str = "plugin-cache/wasmtime-48.0.8";

/// Compiled components by the sha256 of their `.wasm`.
pub(super) struct ComponentCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<[u8; 32], Component>>,
}

impl ComponentCache {
    /// A cache that also keeps files under `data_dir` when given.
    pub(super) fn new(data_dir: Option<&Path>) -> ComponentCache {
        ComponentCache { dir: data_dir.map(|dir| dir.join(CACHE_SUBDIR)), memory: Mutex::default() }
    }

    fn file(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(format!("{}.cwasm", hex(sha256))))
    }

    /// The component for `sha256` if a cache has it, without compiling: in memory, or mapped
    /// from the disk cache (milliseconds). A use marks the file as recently used.
    pub(super) fn cached(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        if let Some(component) = self.memory.lock().get(sha256) {
            return Some(component.clone());
        }
        let file = self.file(sha256).filter(|file| file.is_file())?;
        match load(engine, &file) {
            Ok(component) => {
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&file)
                    .and_then(|handle| handle.set_modified(std::time::SystemTime::now()));
                self.memory.lock().insert(*sha256, component.clone());
                Some(component)
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "cached plugin artifact unusable; compiling again");
                None
            }
        }
    }

    /// The component for `bytes` (whose sha256 is `sha256`), compiling it if no cache has it,
    /// and keeping the disk cache to [`CACHE_ARTIFACTS_MAX`] artifacts.
    pub(super) fn component(&self, engine: &Engine, sha256: &[u8; 32], bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(component) = self.cached(engine, sha256) {
            return Ok(component);
        }
        // `from_binary`, not `new`: bytes that are not wasm must say so, not fail as WAT.
        let component = Component::from_binary(engine, bytes)?;
        if let Some(file) = self.file(sha256) {
            match store(&component, &file) {
                Ok(()) => prune(&file, CACHE_ARTIFACTS_MAX),
                Err(error) => tracing::warn!(file = %file.display(), %error, "could not cache the compiled plugin"),
            }
        }
        self.memory.lock().insert(*sha256, component.clone());
        Ok(component)
    }
}

/// Removes the least recently used artifacts beside `kept` (just written) past `artifacts_max`.
fn prune(kept: &Path, artifacts_max: usize) {
    let Some(dir) = kept.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut artifacts: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "cwasm") && path != kept)
        .filter_map(|path| Some((std::fs::metadata(&path).ok()?.modified().ok()?, path)))
        .collect();
    if artifacts.len() < artifacts_max {
        return;
    }
    artifacts.sort();
    let excess = artifacts.len() + 1 - artifacts_max;
    for (_, path) in artifacts.into_iter().take(excess) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "pruned a compiled plugin from the cache"),
            Err(error) => tracing::warn!(file = %path.display(), %error, "could not prune the plugin cache"),
        }
    }
}

/// Maps a cached artifact.
#[allow(unsafe_code)]
fn load(engine: &Engine, file: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` runs the file's native code as-is. The file is one this host
    // wrote with `Component::serialize` into its own owner-only cache directory (see `store`),
    // named by the sha256 of the `.wasm` it was compiled from and never modified after the
    // rename that published it; wasmtime checks its header against this engine's version and
    // configuration and refuses a mismatch.
    unsafe { Component::deserialize_file(engine, file) }
}

/// Writes `component` to `file` atomically, in an owner-only directory.
fn store(component: &Component, file: &Path) -> anyhow::Result<()> {
    let dir = file.parent().ok_or_else(|| anyhow::anyhow!("cache file has no directory"))?;
    create_private_dir(dir)?;
    let bytes = component.serialize()?;
    let temporary = dir.join(format!(".{}.{}.tmp", std::process::id(), fastrand::u64(..)));
    std::fs::write(&temporary, &bytes)?;
    std::fs::rename(&temporary, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the disk cache keeps at most its bound of artifacts, the one just written and the
    // most recently used among the rest, and leaves other files alone.
    #[test]
    fn pruning_keeps_the_newest_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for n in 0..5u64 {
            let file = dir.path().join(format!("{n}.cwasm"));
            std::fs::write(&file, b"x").unwrap();
            let handle = std::fs::File::options().append(true).open(&file).unwrap();
            handle.set_modified(start + std::time::Duration::from_secs(n * 60)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
        let kept = dir.path().join("new.cwasm");
        std::fs::write(&kept, b"x").unwrap();
        prune(&kept, 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["3.cwasm", "4.cwasm", "new.cwasm", "notes.txt"]);
    }
}
