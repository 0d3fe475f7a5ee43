//! `hongbao reconcile --activity ID [--repair]`: an activity's books from a running host, as a
//! table per scene and the findings under it; a spinner on a terminal while the host works (none
//! with `--json` or when stderr is not a terminal). Exit codes: 0 clean books, 1 findings, 2 the
//! host could not be asked or refused.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::access::client::ClientCredentials;

/// The command's options.
pub struct Options {
    /// The activity.
    pub activity: String,
    /// Apply the proposed repairs.
    pub repair: bool,
    /// The host's report as JSON.
    pub json: bool,
    /// `http://HOST:PORT`.
    pub url: String,
    /// The data directory with `keys/admin.token`.
    pub data: PathBuf,
}

/// Exit code when the books have findings.
const FINDINGS: u8 = 1;
/// Exit code when the host could not be asked or refused.
const FAILED: u8 = 2;

/// Runs the command; prints the table (or JSON) on stdout, problems on stderr.
pub fn run(options: &Options) -> ExitCode {
    match ask(options) {
        Ok(report) => {
            if options.json {
                println!("{report:#}");
            } else {
                print!("{}", table(&report));
            }
            if finding_count(&report) > 0 { ExitCode::from(FINDINGS) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(FAILED)
        }
    }
}

/// The host's report, with a spinner while it is being made.
fn ask(options: &Options) -> anyhow::Result<Value> {
    let activity = &options.activity;
    let (method, path) = if options.repair {
        ("POST", format!("/v1/activities/{activity}/reconciliation:repair"))
    } else {
        ("GET", format!("/v1/activities/{activity}/reconciliation"))
    };
    let body = if options.repair { "{}".to_owned() } else { String::new() };
    let credentials = ClientCredentials::load(&options.data, None)?;
    let authorization = credentials.authorization(method, &path, body.as_bytes(), super::now_ms() / 1000);
    anyhow::ensure!(
        authorization.is_some(),
        "no admin credential in {}",
        options.data.join("keys/admin.token").display()
    );
    let spinner = if options.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner().with_message(format!("reconciling {activity}"))
    };
    spinner.enable_steady_tick(Duration::from_millis(100));
    let answer = super::send(method, &path, body, &options.url, authorization);
    spinner.finish_and_clear();
    let (status, bytes) = answer?;
    let report: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    anyhow::ensure!(
        status == 200,
        "the host answered {status}: {}",
        report["message"].as_str().map_or_else(|| report.to_string(), str::to_owned)
    );
    Ok(report)
}

fn finding_count(report: &Value) -> usize {
    scenes(report).map(|scene| scene["findings"].as_array().map_or(0, Vec::len)).sum()
}

fn scenes(report: &Value) -> impl Iterator<Item = &Value> {
    report["scenes"].as_array().into_iter().flatten()
}

/// Count and yuan of a `…_count` / `…_cents` pair.
fn figure(scene: &Value, what: &str) -> String {
    let count = scene[format!("{what}_count")].as_u64().unwrap_or(0);
    let cents = scene[format!("{what}_cents")].as_i64().unwrap_or(0);
    format!("{count} / ¥{}.{:02}", cents / 100, (cents % 100).abs())
}

/// The per-scene table, the findings under it and the repairs made.
fn table(report: &Value) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "activity {}", report["activity_id"].as_str().unwrap_or("?"));
    let header = ["scene", "issued", "credited", "in flight", "retired", "parked", "findings"];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for scene in scenes(report) {
        rows.push([
            scene["scene_id"].as_str().unwrap_or("?").to_owned(),
            figure(scene, "issued"),
            figure(scene, "credited"),
            figure(scene, "in_flight"),
            figure(scene, "retired"),
            scene["parked_count"].as_u64().unwrap_or(0).to_string(),
            scene["findings"].as_array().map_or(0, Vec::len).to_string(),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    for scene in scenes(report) {
        for finding in scene["findings"].as_array().into_iter().flatten() {
            let _ = writeln!(
                text,
                "{}: {} {} ({}): {} — repair: {}",
                scene["scene_id"].as_str().unwrap_or("?"),
                finding["severity"].as_str().unwrap_or("?"),
                finding["code"].as_str().unwrap_or("?"),
                finding["source"].as_str().unwrap_or("?"),
                finding["message"].as_str().unwrap_or(""),
                finding["repair"].as_str().unwrap_or(""),
            );
        }
    }
    for repair in report["repairs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "repaired {}: {} → {}",
            repair["scene_id"].as_str().unwrap_or("?"),
            repair["code"].as_str().unwrap_or("?"),
            repair["result"]
        );
    }
    let findings = finding_count(report);
    let _ = writeln!(
        text,
        "{}",
        if findings == 0 { "books balance: no findings".to_owned() } else { format!("{findings} finding(s)") }
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the table lines up each scene's figures and lists every finding under it.
    #[test]
    fn the_table_shows_each_scene_and_its_findings() {
        let report = serde_json::json!({
            "activity_id": "plug",
            "scenes": [
                { "scene_id": "books", "issued_count": 2, "issued_cents": 1050, "credited_count": 1, "credited_cents": 10,
                  "in_flight_count": 1, "in_flight_cents": 1040, "retired_count": 0, "retired_cents": 0, "parked_count": 0,
                  "findings": [{ "severity": "warning", "code": "credit_lag", "source": "plugin", "message": "1 grant lags", "repair": "credit it" }] },
                { "scene_id": "rain", "issued_count": 0, "issued_cents": 0, "credited_count": 0, "credited_cents": 0,
                  "in_flight_count": 0, "in_flight_cents": 0, "retired_count": 0, "retired_cents": 0, "parked_count": 0, "findings": [] },
            ],
        });
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "activity plug");
        assert!(lines[1].starts_with("scene  issued"), "{text}");
        assert!(lines[2].starts_with("books  2 / ¥10.50  1 / ¥0.10"), "{text}");
        assert!(text.contains("books: warning credit_lag (plugin): 1 grant lags — repair: credit it"), "{text}");
        assert!(text.ends_with("1 finding(s)\n"), "{text}");
        assert_eq!(finding_count(&report), 1);
    }
}
