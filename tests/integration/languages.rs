//! Plugins in JavaScript and Python as first-class as Rust: the reference bill-copy and inventory
//! plugins, written in each language (`plugins/js`, `plugins/python`, built by `just polyglot`),
//! make the same decisions as the Rust ones, and a scene switches to a JavaScript plugin under
//! load without a failed request while its 12 MB component compiles; `hongbao plugin new --lang
//! js|python` writes, for every capability, a project that builds and decides as the Rust example.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::decisions::{log_files, replay};
use crate::plugins::{GENEROUS_DEADLINE, WAIT_LIMIT, campaign, fixed, generous, plugin_run_calls, random, scene};
use crate::support::{
    Server, plugin_block, plugin_wasm, polyglot_wasm, request, sha256_of, wait_for, write_atomically,
};

/// How long a JavaScript or Python component may take to compile on a loaded machine.
const COMPILE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// JavaScript and Python plugins start their language's runtime in a fresh instance: tens of
/// milliseconds on a loaded machine, and a Python one holds about 13 MiB.
const POLYGLOT_BOUNDS: &str = "                  deadline_ms: 10000\n                  memory_mb: 64\n";

// Proves the JavaScript and Python reference plugins decide exactly as the Rust ones: a rain
// over two scenes (random amounts against stock, a reserve setting, locales, rain rounds and
// stages, so seeds and inputs vary) is recorded with the Rust plugins, and replaying it on the
// bill-copy and inventory plugins of each language differs nowhere, host calls included.
#[test]
fn the_reference_plugins_decide_alike_in_every_language() {
    let rust = |capability: &str, wasm: &str, settings: &[(&str, &str)]| {
        plugin_block(capability, &plugin_wasm(wasm), "fail_closed", &generous(settings))
    };
    let stock = "              inventory:\n                count_max: 1000\n                budget_cents: 40000\n";
    let scenes = [
        scene(
            "rain",
            "除夕红包雨",
            &random(1, 500),
            stock,
            &[rust("bill_copy", "hb_bill_copy", &[]), rust("inventory", "hb_inventory", &[])],
        ),
        scene(
            "reserve",
            "Reserve",
            &random(1, 300),
            stock,
            &[
                rust("bill_copy", "hb_bill_copy", &[("default_locale", "en")]),
                rust("inventory", "hb_inventory", &[("reserve_cents", "39000")]),
            ],
        ),
    ];
    let yaml = campaign("poly", 100_000_000, &scenes);
    let server = Server::start_with(&[("poly.yaml", &yaml)], &["--record-decisions", "*"]);
    let mut calls = 0;
    for act_id in 1..=24i64 {
        for scene_id in ["rain", "reserve"] {
            let mut body = json!({ "app_id": 1128, "act_id": act_id, "activity_id": "poly", "scene_id": scene_id,
                                   "rain_id": act_id % 4, "award_type": "cash", "stage": act_id % 3 });
            if act_id % 5 == 0 {
                body["locale"] = json!("en");
            }
            let (status, answer) = server.post("/v1/grants", &body);
            assert!(status == 200 || answer["code"] == "out_of_stock", "{answer}");
            calls += 2;
        }
    }
    let files = wait_for(WAIT_LIMIT, || {
        let (files, records) = log_files(&server);
        (records >= calls).then_some(files)
    });

    for language in ["js", "python"] {
        for (name, capability) in [("bill-copy", "bill-copy"), ("inventory", "inventory")] {
            let (code, report) = replay(&files, &polyglot_wasm(language, name));
            assert_eq!(code, Some(0), "{language} {name}: {report}");
            assert_eq!(report["replayed"][capability], calls / 2, "{language} {name}: {report}");
            assert_eq!(report["differ"].as_object().map(|differ| differ.len()), Some(0), "{language} {name}: {report}");
        }
    }
}

// Proves a scene switches from its Rust bill-copy plugin to the JavaScript one under load with no
// failed request: the 12 MB component compiles in the background while the Rust plugin keeps
// answering, and the switch happens when it is ready.
#[test]
fn a_scene_switches_to_a_javascript_plugin_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("copy.wasm");
    std::fs::copy(plugin_wasm("hb_bill_copy"), &wasm).unwrap();
    let yaml = |bounds: &str| {
        let block = plugin_block("bill_copy", &wasm, "fail_closed", bounds);
        campaign("poly", 100_000_000, &[scene("swap", "Swap", &fixed(100), "", &[block])])
    };
    let server = Server::start_with(&[("poly.yaml", &yaml(GENEROUS_DEADLINE))], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2i64)
        .map(|client| {
            let (addr, stop, answered) = (server.addr.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({ "app_id": 1128, "act_id": client * 1_000_000 + n, "activity_id": "poly",
                                       "scene_id": "swap", "rain_id": 1, "award_type": "cash", "stage": 0 });
                    match request(&addr, "POST", "/v1/grants", Some(&body)) {
                        (200, _) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        (status, answer) => failures.push(format!("{status} {answer}")),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                failures
            })
        })
        .collect();
    wait_for(WAIT_LIMIT, || (answered.load(Ordering::Relaxed) >= 20).then_some(()));

    let javascript = polyglot_wasm("js", "bill-copy");
    let staged = dir.path().join("copy.wasm.new");
    std::fs::copy(&javascript, &staged).unwrap();
    std::fs::rename(&staged, &wasm).unwrap();
    write_atomically(&server.scenes.join("poly.yaml"), &yaml(POLYGLOT_BOUNDS));
    let javascript_sha = sha256_of(&javascript);
    wait_for(COMPILE_LIMIT, || {
        let (_, listed) = server.get("/v1/plugins");
        let plugin = listed["plugins"].as_array()?.first()?.clone();
        (plugin["sha256"] == javascript_sha.as_str() && plugin["state"] == "ready").then_some(())
    });
    let switched = answered.load(Ordering::Relaxed);
    wait_for(WAIT_LIMIT, || (answered.load(Ordering::Relaxed) >= switched + 20).then_some(()));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let failures = client.join().unwrap();
        assert!(failures.is_empty(), "requests failed across the switch: {failures:?}");
    }
    let (_, listed) = server.get("/v1/plugins");
    assert!(listed["plugins"][0]["stats"]["ok"].as_u64().is_some_and(|ok| ok >= 20), "{listed}");
}

/// The five capabilities, as `hongbao plugin new` names them.
const KINDS: [&str; 5] = ["bill-copy", "rate-limit", "inventory", "compensation", "reconciliation"];

/// A folder of the repository's `target/`.
fn repo_target(path: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(path)
}

/// Runs `command`, failing the test with its output when it fails.
fn run(what: &str, command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `hongbao plugin new KIND my-KIND --lang LANGUAGE` into `dir`.
fn plugin_new(kind: &str, language: &str, dir: &std::path::Path) {
    run(
        &format!("plugin new {kind} --lang {language}"),
        Command::new(env!("CARGO_BIN_EXE_hongbao")).args(["plugin", "new", kind, &format!("my-{kind}")]).args([
            "--lang".as_ref(),
            language.as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ]),
    );
}

/// The scaffold's sample input for `kind`, and inputs that take the example's other branches.
fn inputs(kind: &str, sample: &Value) -> Vec<Value> {
    let variant = |change: &dyn Fn(&mut Value)| {
        let mut input = sample.clone();
        change(&mut input);
        input
    };
    let mut inputs = vec![sample.clone()];
    match kind {
        "bill-copy" => {
            inputs.push(variant(&|i| i["context"]["locale"] = json!("en")));
            inputs.push(variant(&|i| {
                i["context"]["locale"] = Value::Null;
                i["context"]["settings"] = json!({ "default_locale": "en" });
                i["input"]["amount_cents"] = json!(100_005);
            }));
        }
        "rate-limit" => {
            inputs.push(variant(&|i| i["counters"] = json!({ "user/10001": 1 })));
            inputs.push(variant(&|i| {
                i["counters"] = json!({ "user/10001": 5 });
                i["context"]["settings"] = json!({ "max": "2", "window_ms": "500" });
            }));
        }
        "inventory" => {
            inputs.push(variant(&|i| i["stock"]["budget_remaining_cents"] = json!(0)));
            inputs.push(variant(&|i| i["context"]["random_seed"] = json!(18_446_744_073_709_551_557u64)));
        }
        "compensation" => {
            inputs.push(variant(&|i| {
                i["input"]["attempt"] = json!(4);
                i["input"]["step"] = json!("store-grant");
            }));
            inputs.push(variant(&|i| {
                i["input"]["attempt"] = json!(6);
                i["context"]["settings"] = json!({ "max_attempts": "5", "retry_ms": "20" });
            }));
        }
        "reconciliation" => {
            inputs.push(variant(&|i| {
                i["input"]["credited_cents"] = json!(1200);
                i["input"]["oldest_in_flight_ms"] = Value::Null;
            }));
        }
        other => panic!("unknown kind {other}"),
    }
    inputs
}

/// Runs a scaffold's build on its sample input and on inputs that take the example's other
/// branches, and checks it decides as the SDK's Rust example of the same capability (built by
/// `just plugins`) does with each: the same answers and the same host counters.
fn decides_as_rust(kind: &str, wasm: &std::path::Path, project: &std::path::Path) {
    let example = repo_target("wasm32-wasip2/release/examples").join(format!("{}.wasm", kind.replace('-', "_")));
    assert!(example.is_file(), "{} is missing: build the SDK examples with `just plugins`", example.display());
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(project.join("input.json")).unwrap()).unwrap();
    let inputs = inputs(kind, &sample);
    // Three calls each: the first and two warm ones.
    let expected = plugin_run_calls(&example, &Value::Array(inputs.clone()), 3);
    let reports = plugin_run_calls(wasm, &Value::Array(inputs.clone()), 3);
    let (Some(expected), Some(reports)) = (expected.as_array(), reports.as_array()) else {
        panic!("{kind}: not arrays: {reports}\nRust: {expected}");
    };
    assert_eq!(reports.len(), inputs.len(), "{kind}: {reports:?}");
    let mut answers = std::collections::BTreeSet::new();
    for ((report, rust), input) in reports.iter().zip(expected).zip(&inputs) {
        assert_eq!(report["capability"], kind, "{report}");
        assert!(report.get("result").is_some(), "{kind} {input}: {report}");
        assert_eq!(report.get("result"), rust.get("result"), "{kind} {input}: {report}\nRust: {rust}");
        assert_eq!(report["counters"], rust["counters"], "{kind} {input}: {report}\nRust: {rust}");
        assert_eq!(report["warm"]["calls"], 2, "{report}");
        answers.insert(report["result"].to_string());
    }
    // Each input took a branch of its own: the comparison covers more than one answer.
    assert_eq!(answers.len(), inputs.len(), "{kind}: the inputs gave the same answer twice: {answers:?}");
}

// Proves `hongbao plugin new KIND NAME --lang js` writes, for every capability, a project that
// installs its toolchain from its lock file (offline, from the cache `just polyglot` filled) and
// builds with `npm run build`, and whose component decides as the Rust example does.
#[test]
fn javascript_scaffolds_build_and_decide_as_rust() {
    let root = tempfile::tempdir().unwrap();
    let cache = repo_target("plugin-tools/npm-cache");
    let mut modules: Option<PathBuf> = None;
    for kind in KINDS {
        let project = root.path().join(kind);
        plugin_new(kind, "js", &project);
        match &modules {
            // The first project installs exactly what its lock pins; the others share that
            // install (each is 390 MB) and run their own build script.
            None => {
                run(
                    "npm ci (offline, from target/plugin-tools/npm-cache: run `just polyglot` to fill it)",
                    Command::new("npm")
                        .args(["ci", "--offline", "--no-audit", "--no-fund", "--loglevel=error"])
                        .env("npm_config_cache", &cache)
                        .current_dir(&project),
                );
                modules = Some(project.join("node_modules"));
            }
            Some(installed) => std::os::unix::fs::symlink(installed, project.join("node_modules")).unwrap(),
        }
        run(&format!("npm run build ({kind})"), Command::new("npm").args(["run", "build"]).current_dir(&project));
        decides_as_rust(kind, &project.join(format!("my-{kind}.wasm")), &project);
    }
}

// Proves `hongbao plugin new KIND NAME --lang python` writes, for every capability, a project
// that builds with `./build.sh` (here on the venv `just polyglot` made) and whose component
// decides as the Rust example does.
#[test]
fn python_scaffolds_build_and_decide_as_rust() {
    let root = tempfile::tempdir().unwrap();
    let venv = repo_target("plugin-tools/python/venv");
    for kind in KINDS {
        let project = root.path().join(kind);
        plugin_new(kind, "python", &project);
        run(
            &format!("./build.sh ({kind})"),
            Command::new("./build.sh").env("PYTHON_VENV", &venv).current_dir(&project),
        );
        decides_as_rust(kind, &project.join(format!("my-{kind}.wasm")), &project);
    }
}
