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

    /// The component for `bytes` (whose sha256 is `sha256`), compiling it if no cache has it.
    pub(super) fn component(&self, engine: &Engine, sha256: &[u8; 32], bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(component) = self.memory.lock().get(sha256) {
            return Ok(component.clone());
        }
        let file = self.dir.as_ref().map(|dir| dir.join(format!("{}.cwasm", hex(sha256))));
        let cached = file.as_deref().filter(|file| file.is_file()).and_then(|file| match load(engine, file) {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "cached plugin artifact unusable; compiling again");
                None
            }
        });
        let component = match cached {
            Some(component) => component,
            None => {
                // `from_binary`, not `new`: bytes that are not wasm must say so, not fail as WAT.
                let component = Component::from_binary(engine, bytes)?;
                if let Some(file) = &file
                    && let Err(error) = store(&component, file)
                {
                    tracing::warn!(file = %file.display(), %error, "could not cache the compiled plugin");
                }
                component
            }
        };
        self.memory.lock().insert(*sha256, component.clone());
        Ok(component)
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
