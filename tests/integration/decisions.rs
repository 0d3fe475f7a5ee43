//! Exact replay of a night's plugin decisions: a host recording a scene's plugin calls
//! (`serve --record-decisions`), and `hongbao plugin replay` running them again on the same and
//! on a changed plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::plugins::{WAIT_LIMIT, campaign, generous, random, scene};
use crate::support::{Server, plugin_block, plugin_wasm, wait_for};

/// Grants recorded by the test.
const GRANTS: i64 = 20;

/// The decision log's files and how many records they hold.
pub(crate) fn log_files(server: &Server) -> (Vec<PathBuf>, usize) {
    let dir = server.data.join("decisions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|entry| entry.path()).collect())
        .unwrap_or_default();
    files.sort();
    let records = files.iter().map(|file| std::fs::read_to_string(file).unwrap_or_default().lines().count()).sum();
    (files, records)
}

/// `hongbao plugin replay FILES --plugin WASM --json`: its exit code and report.
pub(crate) fn replay(files: &[PathBuf], wasm: &Path) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_hongbao"))
        .args(["plugin", "replay"])
        .args(files)
        .arg("--plugin")
        .arg(wasm)
        .args(["--json", "--diffs", "3"])
        .env("HONGBAO_LOG", "error")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), report)
}

// Proves a recorded rain replays exactly: on the same bill-copy, inventory and rate-limit
// plugins every decision is the same (their host calls — counters, stock — answered from the
// recording, their time and randomness from the recorded context); on a changed bill-copy
// plugin every bill-copy decision differs, each diff showing both answers, and the exit code
// says so.
#[test]
fn recorded_decisions_replay_exactly() {
    let block = |capability: &str, wasm: &str, settings: &[(&str, &str)]| {
        plugin_block(capability, &plugin_wasm(wasm), "fail_closed", &generous(settings))
    };
    let plugins = [
        block("bill_copy", "hb_bill_copy", &[]),
        block("inventory", "hb_inventory", &[]),
        block("rate_limit", "hb_rate_limit", &[("user_max", "1"), ("window_ms", "600000")]),
    ];
    let bounds = "              inventory:\n                count_max: 1000\n                budget_cents: 100000\n";
    let yaml = campaign("rec", 100_000_000, &[scene("rain", "Rain", &random(1, 500), bounds, &plugins)]);
    let server = Server::start_with(&[("rec.yaml", &yaml)], &["--record-decisions", "rec/rain"]);
    for act_id in 1..=GRANTS {
        let body = json!({ "app_id": 1128, "act_id": act_id, "activity_id": "rec", "scene_id": "rain",
                           "rain_id": 1, "award_type": "cash", "stage": 0 });
        let (status, answer) = server.post("/v1/grants", &body);
        assert_eq!(status, 200, "{answer}");
    }
    let calls = 3 * GRANTS as usize;
    let files = wait_for(WAIT_LIMIT, || {
        let (files, records) = log_files(&server);
        (records >= calls).then_some(files)
    });

    for (wasm, capability) in
        [("hb_bill_copy", "bill-copy"), ("hb_inventory", "inventory"), ("hb_rate_limit", "rate-limit")]
    {
        let (code, report) = replay(&files, &plugin_wasm(wasm));
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["replayed"][capability], GRANTS, "{report}");
        assert_eq!(report["differ"].as_object().map(|differ| differ.len()), Some(0), "{report}");
        assert_eq!(report["skipped_other_capability"], 2 * GRANTS, "{report}");
    }

    let (code, report) = replay(&files, &plugin_wasm("fx_bill_copy_alt"));
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["differ"]["bill-copy"], GRANTS, "{report}");
    let diffs = report["diffs"].as_array().unwrap();
    assert_eq!(diffs.len(), 3, "{report}");
    assert!(diffs[0]["replayed"]["result"]["text"].as_str().unwrap().starts_with("v2"), "{report}");
    assert!(!diffs[0]["recorded"]["result"]["text"].as_str().unwrap().starts_with("v2"), "{report}");
}
