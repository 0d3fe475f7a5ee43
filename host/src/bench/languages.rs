//! `hongbao bench languages` (in `just bench`): what a plugin costs in each language — the
//! reference bill-copy and inventory plugins in Rust, JavaScript and Python, each loaded and
//! called as `hongbao plugin run --calls N` does: compile time, instantiation, first call, warm
//! calls (p50, p99), instructions and peak memory, and the component's size.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

/// Warm calls per plugin: enough for a stable p99.
pub const WARM_CALLS: u32 = 2_000;

/// The plugins measured: (language, capability, file under the plugins' `target/`).
const PLUGINS: [(&str, &str, &str); 6] = [
    ("Rust", "bill-copy", "wasm32-wasip2/release/hb_bill_copy.wasm"),
    ("JavaScript", "bill-copy", "js/bill-copy.wasm"),
    ("Python", "bill-copy", "python/bill-copy.wasm"),
    ("Rust", "inventory", "wasm32-wasip2/release/hb_inventory.wasm"),
    ("JavaScript", "inventory", "js/inventory.wasm"),
    ("Python", "inventory", "python/inventory.wasm"),
];

/// One plugin's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LanguageFigures {
    /// The language.
    pub language: &'static str,
    /// The capability.
    pub capability: &'static str,
    /// The component's size.
    pub bytes: u64,
    /// The whole `plugin run` report.
    pub report: Value,
}

/// The input of one call of `capability`, as `plugin run` takes it.
fn input(capability: &str) -> Value {
    let context = json!({ "activity_id": "spring-festival-2027", "scene_id": "eve-rain", "award_type": "cash",
                          "app_id": 1128, "act_id": 10001, "rain_id": 3, "stage": 1, "now_ms": 1_800_000_000_000u64,
                          "random_seed": 42, "locale": "zh-CN", "settings": {} });
    match capability {
        "bill-copy" => json!({ "context": context, "input": { "amount_cents": 188, "scene_name": "除夕红包雨",
                                                                "activity_name": "2027 春节红包" } }),
        _ => json!({ "context": context, "input": { "min_cents": 1, "max_cents": 888 },
                     "stock": { "count_remaining": 100000, "budget_remaining_cents": 10000000 } }),
    }
}

/// Measures every plugin found under `plugins_target` (`plugins/target`).
///
/// # Errors
///
/// A plugin that is there fails to load or to run.
pub fn run(plugins_target: &Path, calls: u32) -> anyhow::Result<Vec<LanguageFigures>> {
    let mut figures = Vec::new();
    for (language, capability, file) in PLUGINS {
        let path: PathBuf = plugins_target.join(file);
        if !path.is_file() {
            eprintln!("{language} {capability}: {} is missing (build it with `just plugins polyglot`)", path.display());
            continue;
        }
        eprintln!("{language} {capability}: compiling and calling {calls} times");
        let (report, _) = crate::plugin::authoring::run(&path, &input(capability), calls)
            .with_context(|| format!("running {}", path.display()))?;
        figures.push(LanguageFigures { language, capability, bytes: std::fs::metadata(&path)?.len(), report });
    }
    Ok(figures)
}

/// The figures as a Markdown table.
pub fn table(figures: &[LanguageFigures]) -> String {
    let mut md = String::from(
        "| plugin | size | compile | instantiate | first call | warm call p50 / p99 | instructions first / warm | peak memory |\n|---|---|---|---|---|---|---|---|\n",
    );
    for figure in figures {
        let report = &figure.report;
        let us = |value: &Value| value.as_f64().map_or("–".to_owned(), |us| format!("{us:.1} µs"));
        let _ = writeln!(
            md,
            "| {} {} | {:.2} MB | {:.1} s | {} | {} | {} / {} | {} / {} | {:.1} MiB |",
            figure.language,
            figure.capability,
            figure.bytes as f64 / 1e6,
            report["time_us"]["compile"].as_f64().unwrap_or(0.0) / 1e6,
            us(&report["time_us"]["instantiate"]),
            us(&report["time_us"]["call"]),
            us(&report["warm"]["time_us"]["p50"]),
            us(&report["warm"]["time_us"]["p99"]),
            report["instructions"],
            report["warm"]["instructions_max"],
            report["warm"]["peak_memory_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
        );
    }
    md
}
