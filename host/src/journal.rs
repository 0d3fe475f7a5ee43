//! Append-only journal files: how the embedded token store and the embedded ledger keep their
//! in-memory state durable.
//!
//! A journal is an 8-byte header naming its format, then frames: the payload's length (u32,
//! little-endian), its CRC-32 (u32, little-endian), the payload. A frame is appended by one write
//! and made durable by an fsync before anyone is answered, so a crash can tear only the last
//! frame, whose writers were never answered: opening cuts it off. A frame whose checksum holds
//! but whose content does not decode was written wrong, not torn, and opening fails rather than
//! drop data silently.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::metrics::{JOURNAL_SYNCS, JournalKind};

/// The largest frame accepted when reading: a group of a few thousand records of at most a few
/// KiB each. A larger length can only be corruption.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Appends `payload` to `out` as one frame.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Makes what was appended to the `kind` journal `file` durable (`fdatasync`), timing it into
/// [`JOURNAL_SYNCS`].
pub fn sync(file: &File, kind: JournalKind) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    let synced = file.sync_data();
    JOURNAL_SYNCS[kind as usize].observe(started.elapsed());
    synced
}

/// Opens the journal at `path`, creating it with the `magic` header when missing; hands every
/// whole frame's payload to `each`, in order; cuts a torn last frame; and returns the file
/// positioned for appending. Errors name the file.
pub fn open(path: &Path, magic: &[u8; 8], mut each: impl FnMut(&[u8]) -> Result<(), String>) -> Result<File, String> {
    let shown = path.display();
    let io = |error: std::io::Error| format!("`{shown}`: {error}");
    if !path.exists() {
        rewrite(path, magic, std::iter::empty()).map_err(io)?;
    }
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut file| file.read_to_end(&mut bytes)).map_err(io)?;
    if bytes.len() < magic.len() || &bytes[..magic.len()] != magic {
        return Err(format!("`{shown}` is not a {} journal (bad header)", String::from_utf8_lossy(magic)));
    }
    let mut at = magic.len();
    while bytes.len() - at >= 8 {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if length > FRAME_BYTES_MAX || bytes.len() - at - 8 < length {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + length];
        if crc32fast::hash(payload) != crc {
            break;
        }
        each(payload).map_err(|why| format!("`{shown}` is corrupt at byte {at}: {why}"))?;
        at += 8 + length;
    }
    let file = OpenOptions::new().append(true).open(path).map_err(io)?;
    if at < bytes.len() {
        tracing::warn!(path = %shown, cut_bytes = bytes.len() - at, "journal: cut a torn last frame");
        file.set_len(at as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok(file)
}

/// Replaces the journal at `path` by one holding `payloads`, one frame each: written to a new
/// file, fsynced, renamed over the old one, and the directory fsynced, so a crash leaves either
/// the old journal or the new one.
pub fn rewrite(path: &Path, magic: &[u8; 8], payloads: impl Iterator<Item = Vec<u8>>) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let temporary = path.with_file_name(name);
    let mut file = File::create(&temporary)?;
    let mut out = Vec::with_capacity(1 << 20);
    out.extend_from_slice(magic);
    for payload in payloads {
        frame(&mut out, &payload);
        if out.len() >= 1 << 20 {
            file.write_all(&out)?;
            out.clear();
        }
    }
    file.write_all(&out)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(directory)?.sync_all()
}

/// Refuses to start on a data directory that holds a file of an earlier version's format
/// (`old_name`) and not yet this journal: starting empty would hide the data it holds.
pub fn refuse_old_format(data_dir: &Path, old_name: &str, journal_name: &str) -> Result<(), String> {
    let (old, journal) = (data_dir.join(old_name), data_dir.join(journal_name));
    if old.exists() && !journal.exists() {
        return Err(format!(
            "`{}` is from an earlier hongbao version, which kept this data in a redb file; this \
             version keeps it in `{journal_name}` and cannot read the old file: serve this data \
             directory with the version that wrote it, or move the file away to start empty",
            old.display()
        ));
    }
    Ok(())
}
