//! Why a plugin could not be loaded or a call failed, and how a wasmtime error becomes one of
//! those failures: the deadline, the memory cap, a trap (with a Rust panic's message), or a
//! `plugin-error` the plugin returned.

use super::bindings::types::PluginError;
use super::sandbox::MemoryCapExceeded;
use super::spec::PluginSpec;

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read `{path}`: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file's sha256 is not the pinned one; the scene is refused.
    #[error("sha256 mismatch for `{path}`: the scene pins {pinned}, the file has {actual}")]
    Sha256Mismatch {
        /// The file.
        path: String,
        /// What the YAML says.
        pinned: String,
        /// What the file hashes to.
        actual: String,
    },
    /// The bytes are not a WebAssembly component wasmtime can compile.
    #[error("`{path}` is not a valid WebAssembly component: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The component does not export the capability's interface (or imports something the
    /// host does not provide).
    #[error("`{path}` does not fit the `{world}` world: {message}")]
    WrongInterface {
        /// The file.
        path: String,
        /// The expected world.
        world: String,
        /// wasmtime's reason.
        message: String,
    },
}

impl LoadError {
    /// Whether the scene must be refused (a pin mismatch or a missing file), rather than
    /// served with its failure policy applied to every call.
    pub fn refuses_scene(&self) -> bool {
        matches!(self, LoadError::Sha256Mismatch { .. } | LoadError::Unreadable { .. })
    }
}

/// Why one call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginFailure {
    /// The plugin could not be loaded; every call fails with this.
    #[error("plugin not loaded: {0}")]
    NotLoaded(String),
    /// The plugin is still being compiled (in the background, off the serving path); calls
    /// meanwhile get the scene's failure policy.
    #[error("plugin still compiling")]
    Warming,
    /// A fresh instance could not be created.
    #[error("plugin instantiation failed: {0}")]
    Instantiate(String),
    /// The call ran past its deadline.
    #[error("plugin ran past its {0} ms deadline")]
    Deadline(u64),
    /// The call ran more instructions than its scene allows.
    #[error("plugin ran past its {0} instructions")]
    Instructions(u64),
    /// The instance grew past its memory cap.
    #[error("plugin exceeded its {0} MiB memory cap")]
    MemoryCap(u64),
    /// The guest trapped (panic, unreachable, out-of-bounds access, …).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin returned a `plugin-error`.
    #[error("plugin refused: {0}")]
    PluginError(String),
    /// The plugin answered something the host cannot accept.
    #[error("plugin answer invalid: {0}")]
    InvalidOutput(String),
}

impl PluginFailure {
    /// A stable code for logs, stats and API answers.
    pub fn code(&self) -> &'static str {
        match self {
            PluginFailure::NotLoaded(_) => "plugin_not_loaded",
            PluginFailure::Warming => "plugin_warming",
            PluginFailure::Instantiate(_) => "plugin_instantiate",
            PluginFailure::Deadline(_) => "plugin_deadline",
            PluginFailure::Instructions(_) => "plugin_instructions",
            PluginFailure::MemoryCap(_) => "plugin_memory",
            PluginFailure::Trap(_) => "plugin_trap",
            PluginFailure::PluginError(_) => "plugin_error",
            PluginFailure::InvalidOutput(_) => "plugin_invalid_output",
        }
    }
}

/// The failure a wasmtime error stands for: the memory cap, the deadline (the epoch or the fuel
/// ran out), or a trap.
pub(super) fn classify(error: &wasmtime::Error, spec: &PluginSpec) -> PluginFailure {
    if error.downcast_ref::<MemoryCapExceeded>().is_some() {
        return PluginFailure::MemoryCap(spec.memory_mb);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PluginFailure::Deadline(spec.deadline_ms),
        Some(wasmtime::Trap::OutOfFuel) => PluginFailure::Instructions(spec.instructions_max),
        // The trap itself, without the wasm backtrace wasmtime attaches.
        Some(trap) => PluginFailure::Trap(trap.to_string()),
        None => PluginFailure::Trap(error_chain(error)),
    }
}

/// The failure of a call that ended in `error`, with `output` what the guest printed: a Rust
/// panic prints its message just before the trap, and the message is kept with it.
pub(super) fn call_failure(error: &wasmtime::Error, spec: &PluginSpec, output: &[u8]) -> PluginFailure {
    match classify(error, spec) {
        PluginFailure::Trap(trap) => match guest_reason(output) {
            Some(panic) => PluginFailure::Trap(format!("{trap} ({panic})")),
            None => PluginFailure::Trap(trap),
        },
        other => other,
    }
}

/// The failure of creating an instance: a trap in its constructors is an instantiation failure.
pub(super) fn instantiate_failure(error: &wasmtime::Error, spec: &PluginSpec) -> PluginFailure {
    match classify(error, spec) {
        PluginFailure::Trap(message) => PluginFailure::Instantiate(message),
        other => other,
    }
}

/// wasmtime's error with its causes, on one line and bounded (some causes are multi-line
/// debug dumps).
pub(super) fn error_chain(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 400 {
        let mut end = 400;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

/// Bytes kept of the reason a guest printed before it trapped.
const GUEST_REASON_CHARS_MAX: usize = 300;

/// What the guest said about why it trapped, from its captured output, for each toolchain's
/// way of dying: a Python exception (componentize-py prints the traceback, whose last line is
/// the exception, then panics), a Rust panic, a JavaScript exception (componentize-js prints the
/// error, then StarlingMonkey aborts). `None` when the output holds none of these.
pub(super) fn guest_reason(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    if let Some((_, traceback)) = text.split_once("Traceback (most recent call last):") {
        let exception = traceback.lines().find(|line| !line.is_empty() && !line.starts_with(char::is_whitespace));
        if let Some(exception) = exception {
            return Some(exception.trim().chars().take(GUEST_REASON_CHARS_MAX).collect());
        }
    }
    if let Some(panic) = panic_line(&text) {
        return Some(panic);
    }
    if text.contains("Redirecting call to abort()") {
        let first = text.lines().map(str::trim).find(|line| !line.is_empty())?;
        return Some(first.chars().take(GUEST_REASON_CHARS_MAX).collect());
    }
    None
}

/// The last line of captured output that looks like a panic message.
fn panic_line(text: &str) -> Option<String> {
    let mut lines = text.lines().rev();
    let line = lines.find(|line| line.contains("panicked at"))?;
    // The message follows on the next line in current Rust; join them.
    let after = text.split(line).nth(1).and_then(|rest| rest.lines().nth(1)).unwrap_or("");
    Some(format!("{} {}", line.trim(), after.trim()).trim().chars().take(GUEST_REASON_CHARS_MAX).collect())
}

/// The text of a `plugin-error` the plugin returned, its kind first.
pub(super) fn plugin_error_text(error: &PluginError) -> String {
    match error {
        PluginError::Unsupported(m) => format!("unsupported: {m}"),
        PluginError::InvalidInput(m) => format!("invalid input: {m}"),
        PluginError::HostFailed(m) => format!("host failed: {m}"),
        PluginError::Other(m) => format!("other: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Capability, FailurePolicy};

    fn spec() -> PluginSpec {
        PluginSpec {
            capability: Capability::BillCopy,
            path: "bill.wasm".into(),
            sha256: [0; 32],
            on_failure: FailurePolicy::FailClosed,
            deadline_ms: 7,
            instructions_max: 11,
            memory_mb: 3,
            settings: Vec::new(),
            line: 1,
            sha256_line: 2,
            key_path: String::new(),
        }
    }

    // Proves the epoch reads as the deadline, the fuel as the instruction bound, the memory
    // meter's error as the memory cap, and anything else as a trap, each carrying the spec's bound.
    #[test]
    fn wasmtime_errors_are_classified_by_cause() {
        let spec = spec();
        let error = |trap: wasmtime::Trap| wasmtime::Error::new(trap);
        assert_eq!(classify(&error(wasmtime::Trap::Interrupt), &spec), PluginFailure::Deadline(7));
        assert_eq!(classify(&error(wasmtime::Trap::OutOfFuel), &spec), PluginFailure::Instructions(11));
        let memory = wasmtime::Error::new(MemoryCapExceeded { cap_bytes: 3 << 20, desired_total_bytes: 4 << 20 });
        assert_eq!(classify(&memory, &spec), PluginFailure::MemoryCap(3));
        let unreachable = classify(&error(wasmtime::Trap::UnreachableCodeReached), &spec);
        assert!(
            matches!(&unreachable, PluginFailure::Trap(message) if message.contains("unreachable")),
            "{unreachable:?}"
        );
        assert_eq!(classify(&wasmtime::Error::msg("boom"), &spec), PluginFailure::Trap("boom".into()));
    }

    // Proves a trap keeps the panic message the guest printed before it, a trap while
    // instantiating is an instantiation failure, and neither rewrites a deadline.
    #[test]
    fn traps_keep_the_panic_and_instantiation_traps_say_so() {
        let spec = spec();
        let trap = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
        let output = b"noise\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nno bill today\n";
        let failure = call_failure(&trap, &spec, output);
        assert!(
            matches!(&failure, PluginFailure::Trap(message) if message.ends_with("(thread '<unnamed>' panicked at src/lib.rs:3:5: no bill today)")),
            "{failure:?}"
        );
        assert!(matches!(call_failure(&trap, &spec, b"quiet"), PluginFailure::Trap(message) if !message.contains('(')));
        // componentize-py: the exception, not the runtime's panic after it.
        let python = b"Traceback (most recent call last):\n  File \"/0/app.py\", line 5, in render\nValueError: boom\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\n";
        assert!(
            matches!(&call_failure(&trap, &spec, python), PluginFailure::Trap(message) if message.ends_with("(ValueError: boom)")),
            "{:?}",
            call_failure(&trap, &spec, python)
        );
        // componentize-js: the error it printed before StarlingMonkey aborted.
        let js = b"invalid variant tag value `undefined` (received `Error: boom`) specified for `PluginError`\nStack:\n  render@x.js:4:7\n\nRedirecting call to abort() to mozalloc_abort\n";
        assert!(
            matches!(&call_failure(&trap, &spec, js), PluginFailure::Trap(message) if message.contains("(received `Error: boom`)")),
            "{:?}",
            call_failure(&trap, &spec, js)
        );
        assert!(matches!(instantiate_failure(&trap, &spec), PluginFailure::Instantiate(_)));
        let deadline = wasmtime::Error::new(wasmtime::Trap::Interrupt);
        assert_eq!(call_failure(&deadline, &spec, output), PluginFailure::Deadline(7));
        assert_eq!(instantiate_failure(&deadline, &spec), PluginFailure::Deadline(7));
    }

    // Proves only a pin mismatch or an unreadable file refuses the scene; a file that is not a
    // component, or not of the capability's world, is served with the failure policy.
    #[test]
    fn only_pin_and_read_errors_refuse_the_scene() {
        let path = String::from("p.wasm");
        let message = String::from("why");
        assert!(LoadError::Unreadable { path: path.clone(), message: message.clone() }.refuses_scene());
        assert!(
            LoadError::Sha256Mismatch { path: path.clone(), pinned: "a".into(), actual: "b".into() }.refuses_scene()
        );
        assert!(!LoadError::Invalid { path: path.clone(), message: message.clone() }.refuses_scene());
        assert!(!LoadError::WrongInterface { path, world: "w".into(), message }.refuses_scene());
    }

    // Proves error text is one line and bounded, cut on a character boundary.
    #[test]
    fn error_chains_are_one_bounded_line() {
        let long = wasmtime::Error::msg(format!("first\n  second {}", "汉".repeat(300)));
        let line = error_chain(&long);
        assert!(line.starts_with("first second "), "{line}");
        assert!(!line.contains('\n'));
        assert!(line.len() <= 400 + '…'.len_utf8() && line.ends_with('…'), "{}", line.len());
    }
}
