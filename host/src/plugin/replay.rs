//! `hongbao plugin replay LOG… --plugin NEW.wasm`: runs every recorded call of the decision log
//! (see [`super::decisions`]) again on another plugin version, its host calls answered from the
//! recording, and reports each decision that differs from the recorded one.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::authoring::{Called, call_capability, parse_call};
use super::decisions::{DECISION_LINE_BYTES_MAX, DecisionRecord};
use super::{Capability, PluginRuntime, hex};

/// What a replay found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// The plugin replayed.
    pub plugin: String,
    /// Its sha256.
    pub sha256: String,
    /// Its capability.
    pub capability: String,
    /// Records replayed, by capability.
    pub replayed: BTreeMap<String, u64>,
    /// Of them, decisions that differ, by capability.
    pub differ: BTreeMap<String, u64>,
    /// Records of another capability than the plugin's, not replayed.
    pub skipped_other_capability: u64,
    /// The first differing decisions (at most the `--diffs` asked for).
    pub diffs: Vec<Value>,
}

impl ReplayReport {
    /// Decisions that differ in all.
    pub fn differing(&self) -> u64 {
        self.differ.values().sum()
    }
}

/// Replays the records of `logs` on the plugin at `wasm`, keeping the first `diffs_max` diffs.
///
/// # Errors
///
/// The plugin cannot be loaded, or a log cannot be read or holds a line that is not a record.
pub fn replay(logs: &[PathBuf], wasm: &Path, diffs_max: usize) -> anyhow::Result<ReplayReport> {
    let runtime = PluginRuntime::new(None)?;
    let (plugin, sha256) = runtime.load_standalone(wasm, Vec::new(), None).map_err(anyhow::Error::new)?;
    let capability = plugin.spec().capability;
    let mut report = ReplayReport {
        plugin: wasm.display().to_string(),
        sha256: hex(&sha256),
        capability: capability.kind().to_owned(),
        ..ReplayReport::default()
    };
    for log in logs {
        let file = std::fs::File::open(log).with_context(|| format!("opening `{}`", log.display()))?;
        let mut lines = std::io::BufReader::new(file);
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let read = (&mut lines).take(DECISION_LINE_BYTES_MAX as u64 + 1).read_line(&mut line)?;
            if read == 0 {
                break;
            }
            number += 1;
            anyhow::ensure!(
                read <= DECISION_LINE_BYTES_MAX,
                "{}:{number}: a line over {DECISION_LINE_BYTES_MAX} bytes",
                log.display()
            );
            if line.trim().is_empty() {
                continue;
            }
            let record: DecisionRecord = serde_json::from_str(&line)
                .with_context(|| format!("{}:{number}: not a decision record", log.display()))?;
            if Capability::parse(&record.capability) != Some(capability) {
                report.skipped_other_capability += 1;
                continue;
            }
            let input = json!({ "context": record.context, "input": record.input });
            let (ctx, payload, stock) = parse_call(&input)?;
            plugin.replay_next(record.host.clone());
            let (result, call_report): Called = call_capability(&plugin, capability, &ctx, &payload, stock)?;
            let replayed = super::json::outcome(&result);
            *report.replayed.entry(record.capability.clone()).or_default() += 1;
            let same = same_decision(&record.output, &replayed) && call_report.host_diverged.is_empty();
            if !same {
                *report.differ.entry(record.capability.clone()).or_default() += 1;
                if report.diffs.len() < diffs_max {
                    report.diffs.push(json!({
                        "log": log.display().to_string(), "line": number,
                        "scene": format!("{}/{}", record.context["activity_id"].as_str().unwrap_or(""), record.context["scene_id"].as_str().unwrap_or("")),
                        "act_id": record.context["act_id"], "recorded": record.output, "replayed": replayed,
                        "host_diverged": call_report.host_diverged,
                    }));
                }
            }
        }
    }
    Ok(report)
}

/// Whether two outcomes are the same decision: the same answer, or failures with the same code
/// (a failure's message may name times and sizes of the run).
fn same_decision(recorded: &Value, replayed: &Value) -> bool {
    match (recorded.get("failure"), replayed.get("failure")) {
        (Some(recorded), Some(replayed)) => recorded["code"] == replayed["code"],
        _ => recorded == replayed,
    }
}

/// The report for people: counts per capability, then the first diffs.
pub fn summary(report: &ReplayReport) -> String {
    let mut text = format!("replayed on {} ({}, sha256 {}):\n", report.plugin, report.capability, report.sha256);
    for (capability, count) in &report.replayed {
        let differ = report.differ.get(capability).copied().unwrap_or(0);
        text.push_str(&format!("  {capability}: {count} decisions, {differ} differ\n"));
    }
    if report.skipped_other_capability > 0 {
        text.push_str(&format!("  {} records of other capabilities skipped\n", report.skipped_other_capability));
    }
    for diff in &report.diffs {
        text.push_str(&format!(
            "  {}:{} {} act_id {}: recorded {} replayed {}\n",
            diff["log"].as_str().unwrap_or(""),
            diff["line"],
            diff["scene"].as_str().unwrap_or(""),
            diff["act_id"],
            diff["recorded"],
            diff["replayed"]
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves two outcomes are the same decision when their answers are equal or they fail with
    // the same code, whatever the failures' messages say.
    #[test]
    fn decisions_compare_by_answer_or_failure_code() {
        let answer = |text: &str| json!({ "result": { "text": text } });
        let failure = |code: &str, message: &str| json!({ "failure": { "code": code, "message": message } });
        assert!(same_decision(&answer("a"), &answer("a")));
        assert!(!same_decision(&answer("a"), &answer("b")));
        assert!(same_decision(&failure("plugin_deadline", "10 ms"), &failure("plugin_deadline", "20 ms")));
        assert!(!same_decision(&failure("plugin_trap", "x"), &answer("a")));
    }
}
