//! Exact replay of a night's plugin decisions.
//!
//! With `serve --record-decisions SCENES`, every call of those scenes' plugins is written to a
//! decision log: the call's context (its time and random seed included: the only time and
//! randomness a guest sees), the capability's input, every host-function answer in the order the
//! guest asked (counters, stock), and the answer or the failure. `hongbao plugin replay LOG
//! --plugin NEW.wasm` runs each recorded call again on another plugin version, answering its
//! host calls from the recording instead of live state, and reports every decision that
//! differs. A plugin replayed against its own log gives the same decisions: nothing else reaches
//! it.
//!
//! The log is JSON lines (one [`DecisionRecord`] each) in `DATA/decisions/`, written by a thread
//! of its own behind a bounded queue, so recording never blocks a grant: when the queue is full
//! a record is dropped and counted. Files rotate at [`DECISION_FILE_BYTES_MAX`] and the oldest
//! go past [`DECISION_FILES_MAX`].

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde_json::Value;

use super::bindings::host::HostError;
use super::bindings::types::Stock;

/// The directory of the decision log, inside the data directory.
pub const DECISIONS_SUBDIR: &str = "decisions";

/// Bytes per log file before the next one starts: a few hundred thousand calls each.
pub const DECISION_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Log files kept: the oldest beyond go (half a gigabyte at most).
pub const DECISION_FILES_MAX: usize = 8;

/// Records waiting for the writer. Past it a record is dropped and counted, never waited for:
/// the grant path does not slow down for its own audit trail.
pub const DECISION_QUEUE_MAX: usize = 65_536;

/// The longest line `plugin replay` reads (a record is a few hundred bytes).
pub const DECISION_LINE_BYTES_MAX: usize = 1024 * 1024;

/// Host calls one record keeps; a plugin that calls the host more in one call is recorded up to
/// here, and its replay reports the rest as a divergence.
pub const HOST_CALLS_PER_RECORD_MAX: usize = 256;

/// One host function call and the host's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCall {
    /// `counter-get`.
    CounterGet {
        /// The counter.
        name: String,
        /// Its value, or the error.
        answer: Result<i64, RecordedHostError>,
    },
    /// `counter-add`.
    CounterAdd {
        /// The counter.
        name: String,
        /// Added.
        delta: i64,
        /// Its window.
        window_ms: Option<u64>,
        /// The new value, or the error.
        answer: Result<i64, RecordedHostError>,
    },
    /// `stock-remaining`.
    Stock {
        /// What was left, or why the store could not tell (the call trapped).
        answer: Result<RecordedStock, String>,
    },
}

/// A host error as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedHostError {
    /// `invalid-name`.
    InvalidName(String),
    /// `too-many-counters`.
    TooManyCounters,
    /// `unavailable`.
    Unavailable(String),
}

impl From<&HostError> for RecordedHostError {
    fn from(error: &HostError) -> Self {
        match error {
            HostError::InvalidName(message) => RecordedHostError::InvalidName(message.clone()),
            HostError::TooManyCounters => RecordedHostError::TooManyCounters,
            HostError::Unavailable(message) => RecordedHostError::Unavailable(message.clone()),
        }
    }
}

impl From<RecordedHostError> for HostError {
    fn from(error: RecordedHostError) -> Self {
        match error {
            RecordedHostError::InvalidName(message) => HostError::InvalidName(message),
            RecordedHostError::TooManyCounters => HostError::TooManyCounters,
            RecordedHostError::Unavailable(message) => HostError::Unavailable(message),
        }
    }
}

/// Stock as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedStock {
    /// `count-remaining`.
    pub count_remaining: Option<u64>,
    /// `budget-remaining-cents`.
    pub budget_remaining_cents: Option<i64>,
}

impl From<Stock> for RecordedStock {
    fn from(stock: Stock) -> Self {
        RecordedStock { count_remaining: stock.count_remaining, budget_remaining_cents: stock.budget_remaining_cents }
    }
}

impl From<RecordedStock> for Stock {
    fn from(stock: RecordedStock) -> Self {
        Stock { count_remaining: stock.count_remaining, budget_remaining_cents: stock.budget_remaining_cents }
    }
}

/// Where an instance's host calls go during one call.
#[derive(Debug, Default)]
pub enum HostTape {
    /// Live state, nothing kept (a call not recorded).
    #[default]
    Off,
    /// Live state, every call and answer kept.
    Recording(Vec<HostCall>),
    /// Answers from a recording, in order; a call that is not the next recorded one diverges.
    Replaying {
        /// The recorded calls not yet asked for.
        calls: VecDeque<HostCall>,
        /// How the guest's calls differed from the recording.
        diverged: Vec<String>,
    },
}

impl HostTape {
    /// Keeps `call` when recording (up to [`HOST_CALLS_PER_RECORD_MAX`]).
    pub fn record(&mut self, call: HostCall) {
        if let HostTape::Recording(calls) = self
            && calls.len() < HOST_CALLS_PER_RECORD_MAX
        {
            calls.push(call);
        }
    }

    /// When replaying, the recorded answer to the next call if `matches` it (else a divergence
    /// noted with `what`); `None` when not replaying (ask the live state).
    pub fn replay<T>(&mut self, what: &str, answer: impl FnOnce(&HostCall) -> Option<T>) -> Option<Option<T>> {
        let HostTape::Replaying { calls, diverged } = self else { return None };
        let found = calls.pop_front().and_then(|call| answer(&call));
        if found.is_none() {
            diverged.push(format!("the plugin asked {what}, which the recording does not have next"));
        }
        Some(found)
    }

    /// Ends the call: the calls recorded, or the divergences of a replay (with the recorded
    /// calls the plugin never asked for).
    pub fn finish(&mut self) -> (Vec<HostCall>, Vec<String>) {
        match std::mem::take(self) {
            HostTape::Off => (Vec::new(), Vec::new()),
            HostTape::Recording(calls) => (calls, Vec::new()),
            HostTape::Replaying { calls, mut diverged } => {
                if !calls.is_empty() {
                    diverged.push(format!("the plugin did not ask for {} recorded host call(s)", calls.len()));
                }
                (Vec::new(), diverged)
            }
        }
    }
}

/// One recorded plugin call: what `hongbao plugin run` takes as input (`capability`, `context`,
/// `input`, `stock`), with the host calls and the answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecisionRecord {
    /// The capability (`bill-copy`, …).
    pub capability: String,
    /// The plugin's sha256 when recorded.
    pub plugin_sha256: String,
    /// The call context, as `plugin run` reads it.
    pub context: Value,
    /// The capability's input, as `plugin run` reads it.
    pub input: Value,
    /// The host calls in order, with their answers.
    pub host: Vec<HostCall>,
    /// `{"result": …}` or `{"failure": {"code", "message"}}`, as `plugin run` prints them.
    pub output: Value,
}

/// The decision log: a writer thread behind a bounded queue.
pub struct DecisionLog {
    queue: SyncSender<String>,
    /// Records dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Records queued.
    pub written: AtomicU64,
    /// Scenes recorded: `activity/scene`, or `*` for every scene.
    scenes: Vec<String>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").field("scenes", &self.scenes).finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// A log in `data_dir/decisions/` recording `scenes` (`activity/scene` or `*`).
    ///
    /// # Errors
    ///
    /// The directory cannot be made, or the writer thread cannot start.
    pub fn open(data_dir: &Path, scenes: Vec<String>) -> std::io::Result<DecisionLog> {
        let dir = data_dir.join(DECISIONS_SUBDIR);
        std::fs::create_dir_all(&dir)?;
        let (queue, lines) = std::sync::mpsc::sync_channel::<String>(DECISION_QUEUE_MAX);
        let dropped = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new().name("decision-log".into()).spawn(move || {
            let mut writer = Rotating::new(dir);
            for line in lines {
                if let Err(error) = writer.write(&line) {
                    tracing::error!(%error, "decision log write failed; the record is lost");
                }
            }
        })?;
        Ok(DecisionLog { queue, dropped, written: AtomicU64::new(0), scenes })
    }

    /// Whether calls of `activity_id`/`scene_id` are recorded.
    pub fn records(&self, activity_id: &str, scene_id: &str) -> bool {
        self.scenes.iter().any(|scene| scene == "*" || *scene == format!("{activity_id}/{scene_id}"))
    }

    /// Queues `record`; a full queue drops it (counted).
    pub fn write(&self, record: &DecisionRecord) {
        let Ok(line) = serde_json::to_string(record) else { return };
        match self.queue.try_send(line) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The log's files: `decisions-<start ms>-<n>.jsonl`, a new one past the size bound.
struct Rotating {
    dir: PathBuf,
    started_ms: u128,
    index: u64,
    file: Option<std::io::BufWriter<std::fs::File>>,
    bytes: u64,
}

impl Rotating {
    fn new(dir: PathBuf) -> Rotating {
        let started_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis());
        Rotating { dir, started_ms, index: 0, file: None, bytes: 0 }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.file.is_none() || self.bytes >= DECISION_FILE_BYTES_MAX {
            self.rotate()?;
        }
        let file = self.file.as_mut().expect("opened by rotate");
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        // Each record reaches the file at once: the log is read while the host runs.
        file.flush()?;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.index += 1;
        let path = self.dir.join(format!("decisions-{}-{:04}.jsonl", self.started_ms, self.index));
        self.file = Some(std::io::BufWriter::new(std::fs::File::create(&path)?));
        self.bytes = 0;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "jsonl"))
            .collect();
        // Names sort by start time, then index.
        files.sort();
        while files.len() > DECISION_FILES_MAX {
            let oldest = files.remove(0);
            let _ = std::fs::remove_file(oldest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a replay answers the guest's host calls from the recording in order, and reports a
    // call the recording does not have next, and recorded calls never asked for.
    #[test]
    fn a_replay_answers_from_the_recording_and_reports_divergences() {
        let recorded = vec![
            HostCall::CounterAdd { name: "u/1".into(), delta: 1, window_ms: Some(1_000), answer: Ok(3) },
            HostCall::Stock { answer: Ok(RecordedStock { count_remaining: Some(9), budget_remaining_cents: None }) },
        ];
        let mut tape = HostTape::Replaying { calls: recorded.clone().into(), diverged: Vec::new() };
        let added = tape.replay("counter-add `u/1`", |call| match call {
            HostCall::CounterAdd { name, answer, .. } if name == "u/1" => Some(answer.clone()),
            _ => None,
        });
        assert_eq!(added, Some(Some(Ok(3))));
        let (calls, diverged) = tape.finish();
        assert!(calls.is_empty());
        assert_eq!(diverged, ["the plugin did not ask for 1 recorded host call(s)"]);

        let mut tape = HostTape::Replaying { calls: recorded.into(), diverged: Vec::new() };
        let wrong = tape.replay("counter-get `other`", |call| match call {
            HostCall::CounterGet { answer, .. } => Some(answer.clone()),
            _ => None,
        });
        assert_eq!(wrong, Some(None));
        assert_eq!(tape.finish().1.len(), 2);
        assert!(HostTape::Off.replay("x", |_| Some(1)).is_none());
    }

    // Proves the log rotates past its size and keeps at most its number of files.
    #[test]
    fn the_log_rotates_and_keeps_its_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Rotating::new(dir.path().to_path_buf());
        let line = "x".repeat(1024);
        for _ in 0..(DECISION_FILES_MAX + 3) {
            writer.write(&line).unwrap();
            writer.bytes = DECISION_FILE_BYTES_MAX;
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, DECISION_FILES_MAX);
    }
}
