//! Scene plugins over HTTP against the real binary: the reference plugins change what users
//! get, failing fixtures get their scene's failure policy while other scenes keep serving, a
//! wrong pin refuses the scene, a `.wasm` replaced under load swaps with no failed request, and
//! `hongbao plugin new` output builds and runs.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, plugin_block, plugin_wasm, request, sha256_of, wait_for, write_atomically};

/// An activity file with one award type and award holding `scenes`.
pub(crate) fn campaign(id: &str, budget_cents: i64, scenes: &[String]) -> String {
    format!(
        "activity:\n  id: {id}\n  name: Plugin test\n  budget_cents: {budget_cents}\n  award_types:\n    - id: cash\n      name: Cash\n      awards:\n        - id: cash-award\n          name: Cash award\n          scenes:\n{}",
        scenes.concat()
    )
}

/// One scene; `amount` and `extra` are YAML lines indented for the scene's keys (14 spaces),
/// `plugins` are [`plugin_block`]s.
pub(crate) fn scene(id: &str, name: &str, amount: &str, extra: &str, plugins: &[String]) -> String {
    let plugins =
        if plugins.is_empty() { String::new() } else { format!("              plugins:\n{}", plugins.concat()) };
    format!(
        "            - id: {id}\n              name: {name}\n              app_ids: [1128]\n              amount:\n{amount}{extra}{plugins}"
    )
}

pub(crate) fn fixed(cents: i64) -> String {
    format!("                kind: fixed\n                cents: {cents}\n")
}

pub(crate) fn random(min: i64, max: i64) -> String {
    format!("                kind: random\n                min_cents: {min}\n                max_cents: {max}\n")
}

/// Settings lines for a plugin block.
fn settings(pairs: &[(&str, &str)]) -> String {
    let mut text = "                  settings:\n".to_owned();
    for (key, value) in pairs {
        text.push_str(&format!("                    {key}: \"{value}\"\n"));
    }
    text
}

/// The deadline of every plugin whose deadline the test does not check: the deadline is
/// wall-clock time, and a machine loaded by a parallel build can deschedule a call (or its
/// first instantiation) for more than 100 ms. Only `fx_loop`, which never finishes, gets a short
/// one.
pub(crate) const GENEROUS_DEADLINE: &str = "                  deadline_ms: 10000\n";

/// [`settings`] of a plugin whose deadline is not under test, with [`GENEROUS_DEADLINE`].
pub(crate) fn generous(pairs: &[(&str, &str)]) -> String {
    let settings = if pairs.is_empty() { String::new() } else { settings(pairs) };
    format!("{GENEROUS_DEADLINE}{settings}")
}

/// How long a test waits for something it polls for: far longer than it takes on a loaded
/// machine, so only a real failure runs into it.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(60);

pub(crate) const BUILTIN_COPY: &str = "              bill_copy:\n                default_locale: zh-CN\n                templates:\n                  zh-CN: \"builtin {amount_yuan}\"\n";

fn grant(
    server: &Server,
    activity: &str,
    scene: &str,
    act_id: i64,
    rain_id: i32,
    stage: u32,
    locale: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({
        "app_id": 1128, "act_id": act_id, "activity_id": activity, "scene_id": scene,
        "rain_id": rain_id, "award_type": "cash", "stage": stage,
    });
    if let Some(locale) = locale {
        body["locale"] = json!(locale);
    }
    server.post("/v1/grants", &body)
}

/// The scenes of `reference_plugins_change_what_users_get`, one per reference plugin.
fn reference_plugin_scenes() -> [String; 5] {
    [
        scene(
            "copy",
            "Copy scene",
            &fixed(188),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &plugin_wasm("hb_bill_copy"), "builtin", &generous(&[]))],
        ),
        scene(
            "tiers",
            "Tiers",
            &fixed(5),
            "",
            &[plugin_block(
                "rate_limit",
                &plugin_wasm("hb_rate_limit"),
                "fail_closed",
                &generous(&[("user_max", "1"), ("vip_max", "2"), ("vip_act_ids", "77,78"), ("window_ms", "600000")]),
            )],
        ),
        scene(
            "split",
            "Split",
            &random(1, 500),
            "              inventory:\n                count_max: 5\n                budget_cents: 500\n",
            &[plugin_block("inventory", &plugin_wasm("hb_inventory"), "fail_closed", &generous(&[]))],
        ),
        scene(
            "reserve",
            "Reserve",
            &fixed(100),
            "              inventory:\n                budget_cents: 300\n",
            &[plugin_block(
                "inventory",
                &plugin_wasm("hb_inventory"),
                "fail_closed",
                &generous(&[("reserve_cents", "100")]),
            )],
        ),
        scene(
            "books",
            "Books",
            &fixed(10),
            "",
            &[plugin_block(
                "reconciliation",
                &plugin_wasm("hb_reconciliation"),
                "fail_closed",
                &generous(&[("lag_ms", "1")]),
            )],
        ),
    ]
}

/// `hongbao reconcile --activity plug` against `server` with its admin credential: the exit code
/// and stdout.
fn reconcile_cli(server: &Server, extra: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hongbao"))
        .args(["reconcile", "--activity", "plug", "--url", &format!("http://{}", server.addr), "--data"])
        .arg(&server.data)
        .args(extra)
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

// Proves each reference plugin changes the outcome it should: bill copy by locale and rain (in
// the answer and the wallet flow), a per-user-tier rate rejection, a random split that hands
// out exactly the scene budget, a stock-out decided by the plugin while the store still has
// room, and a reconciliation finding whose repair credits the lagging grants.
#[test]
fn reference_plugins_change_what_users_get() {
    let scenes = reference_plugin_scenes();
    let server = Server::start_with(&[("plug.yaml", &campaign("plug", 100_000_000, &scenes))], &["--no-writer"]);
    let (status, scenes_view) = server.get("/v1/scenes");
    assert_eq!(status, 200);
    assert_eq!(scenes_view["files"][0]["errors"], json!([]), "{scenes_view}");

    // Bill copy: by locale (with language fallback) and by rain.
    let (status, answer) = grant(&server, "plug", "copy", 1, 3, 1, Some("en-US"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["bill_copy"], "Copy scene rain #3: you got ¥1.88");
    let (_, answer) = grant(&server, "plug", "copy", 2, 0, 1, None);
    assert_eq!(answer["bill_copy"], "Copy scene · 恭喜获得1.88元");
    let (_, flow) = server.get("/v1/wallets/1/flow");
    assert_eq!(flow["items"][0]["bill_copy"], "Copy scene rain #3: you got ¥1.88", "{flow}");

    // Rate limit: standard users get one per window, listed VIPs two.
    assert_eq!(grant(&server, "plug", "tiers", 5, 1, 1, None).0, 200);
    let (status, refused) = grant(&server, "plug", "tiers", 5, 1, 2, None);
    assert_eq!((status, refused["code"].as_str()), (429, Some("rate_limited")), "{refused}");
    assert_eq!(grant(&server, "plug", "tiers", 77, 1, 1, None).0, 200);
    assert_eq!(grant(&server, "plug", "tiers", 77, 1, 2, None).0, 200);
    assert_eq!(grant(&server, "plug", "tiers", 77, 1, 3, None).0, 429);

    // Inventory split: five grants hand out exactly the 500-cent budget, then out of stock.
    let amounts: Vec<i64> = (0..5)
        .map(|n| {
            let (status, answer) = grant(&server, "plug", "split", 100 + n, 1, 1, None);
            assert_eq!(status, 200, "{answer}");
            answer["amount_cents"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(amounts.iter().sum::<i64>(), 500, "{amounts:?}");
    assert!(amounts.iter().all(|a| (1..=500).contains(a)), "{amounts:?}");
    let (status, refused) = grant(&server, "plug", "split", 105, 1, 1, None);
    assert_eq!((status, refused["code"].as_str()), (409, Some("out_of_stock")), "{refused}");

    // Inventory reserve: the plugin holds 100 cents back, so the third grant is refused while
    // the store would still have room for it.
    assert_eq!(grant(&server, "plug", "reserve", 200, 1, 1, None).0, 200);
    assert_eq!(grant(&server, "plug", "reserve", 201, 1, 1, None).0, 200);
    let (status, refused) = grant(&server, "plug", "reserve", 202, 1, 1, None);
    assert_eq!((status, refused["code"].as_str()), (409, Some("out_of_stock")), "{refused}");

    // Reconciliation: with no writer, the grant lags; the plugin says so and its repair
    // credits it.
    assert_eq!(grant(&server, "plug", "books", 300, 1, 1, None).0, 200);
    std::thread::sleep(Duration::from_millis(20));
    let (status, books) = server.get("/v1/activities/plug/reconciliation");
    assert_eq!(status, 200, "{books}");
    let scene_books = books["scenes"].as_array().unwrap().iter().find(|s| s["scene_id"] == "books").unwrap().clone();
    let lag = scene_books["findings"].as_array().unwrap().iter().find(|f| f["code"] == "credit_lag").cloned();
    let lag = lag.unwrap_or_else(|| panic!("no credit_lag finding: {scene_books}"));
    assert_eq!(lag["source"], "plugin");
    assert_eq!(lag["severity"], "warning");
    assert_eq!(lag["repair_action"], json!({ "requeue_in_flight_older_than_ms": 1 }));
    // The same books from the command line: a table, the finding, exit code 1.
    let (code, table) = reconcile_cli(&server, &[]);
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("books: warning credit_lag (plugin)"), "{table}");
    let (code, report) = reconcile_cli(&server, &["--json"]);
    assert_eq!(code, Some(1), "{report}");
    let report: Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(report["activity_id"], "plug", "{report}");
    assert_eq!(server.wallet(300)["pending_cents"], 10);
    let (status, repaired) = server.post("/v1/activities/plug/reconciliation:repair", &json!({}));
    assert_eq!(status, 200, "{repaired}");
    let repair = &repaired["repairs"][0];
    assert_eq!(
        (repair["scene_id"].as_str(), repair["result"]["credited"].as_u64()),
        (Some("books"), Some(1)),
        "{repaired}"
    );
    let wallet = server.wallet(300);
    assert_eq!((wallet["pending_cents"].as_i64(), wallet["credited_cents"].as_i64()), (Some(0), Some(10)), "{wallet}");
    let (code, table) = reconcile_cli(&server, &[]);
    assert_eq!(code, Some(0), "repaired books are clean: {table}");
    assert!(table.contains("books balance: no findings"), "{table}");
}

/// The scenes of `failing_plugins_get_their_scene_policy_while_others_serve`: one per failing
/// fixture and its policy, one that sleeps, and a healthy one.
fn failing_plugin_scenes() -> [String; 11] {
    let not_wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/fixtures/not-wasm.wasm");
    let bill = |fixture: &str| plugin_wasm(fixture);
    [
        scene(
            "loop",
            "Loop",
            &fixed(100),
            BUILTIN_COPY,
            // The deadline is under test here: instructions without a practical bound.
            &[plugin_block(
                "bill_copy",
                &bill("fx_loop"),
                "fail_closed",
                "                  deadline_ms: 20\n                  instructions_max: 10000000000\n",
            )],
        ),
        scene(
            "counted",
            "Counted",
            &fixed(100),
            BUILTIN_COPY,
            // The instruction bound is under test: the same loop stops at a count, whatever the
            // machine's speed, long before its generous deadline.
            &[plugin_block(
                "bill_copy",
                &bill("fx_loop"),
                "fail_closed",
                &format!("                  instructions_max: 1000000\n{GENEROUS_DEADLINE}"),
            )],
        ),
        scene(
            "alloc",
            "Alloc",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block(
                "bill_copy",
                &bill("fx_alloc"),
                "fail_open",
                &format!("                  memory_mb: 8\n{GENEROUS_DEADLINE}"),
            )],
        ),
        scene(
            "trap",
            "Trap",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &bill("fx_trap"), "builtin", GENEROUS_DEADLINE)],
        ),
        scene(
            "invalid",
            "Invalid",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &not_wasm, "fail_closed", "")],
        ),
        scene(
            "wrong",
            "Wrong",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &bill("fx_wrong_interface"), "builtin", GENEROUS_DEADLINE)],
        ),
        scene(
            "garbage",
            "Garbage",
            &random(1, 50),
            "",
            &[plugin_block("inventory", &bill("fx_garbage"), "builtin", GENEROUS_DEADLINE)],
        ),
        scene(
            "sleep",
            "Sleep",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &bill("fx_sleep"), "fail_closed", GENEROUS_DEADLINE)],
        ),
        scene(
            "spam",
            "Spam",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &bill("fx_spam"), "fail_closed", GENEROUS_DEADLINE)],
        ),
        scene(
            "udp",
            "Udp",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &bill("fx_udp"), "fail_closed", GENEROUS_DEADLINE)],
        ),
        scene(
            "healthy",
            "Healthy",
            &fixed(100),
            BUILTIN_COPY,
            &[plugin_block("bill_copy", &bill("hb_bill_copy"), "fail_closed", GENEROUS_DEADLINE)],
        ),
    ]
}

// Proves that plugins that loop forever, allocate without bound, trap, are not wasm, export the
// wrong interface or answer garbage each get their scene's failure policy, are counted, and
// never stop another scene from serving; that plugins that sleep or flood their output serve
// inline; and that a WASI call that would block on the runtime fails only its plugin call.
#[test]
fn failing_plugins_get_their_scene_policy_while_others_serve() {
    let scenes = failing_plugin_scenes();
    let server = Server::start_with(&[("plug.yaml", &campaign("plug", 100_000_000, &scenes))], &[]);

    // A steady stream on the healthy scene for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = {
        let (addr, stop) = (server.addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let mut act_id = 10_000;
            while !stop.load(Ordering::Relaxed) || answers.len() < 10 {
                act_id += 1;
                let body = json!({ "app_id": 1128, "act_id": act_id, "activity_id": "plug", "scene_id": "healthy",
                                   "rain_id": 0, "award_type": "cash", "stage": 0 });
                answers.push(request(&addr, "POST", "/v1/grants", Some(&body)));
            }
            answers
        })
    };

    for round in 0..2i64 {
        let user = |n: i64| 1 + n * 10 + round;
        let (status, body) = grant(&server, "plug", "loop", user(0), 1, 1, None);
        assert_eq!((status, body["code"].as_str()), (503, Some("plugin_failed")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("deadline"), "{body}");
        let (status, body) = grant(&server, "plug", "counted", user(7), 1, 1, None);
        assert_eq!((status, body["code"].as_str()), (503, Some("plugin_failed")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("plugin_instructions"), "{body}");
        let (status, body) = grant(&server, "plug", "alloc", user(1), 1, 1, None);
        assert_eq!((status, body["bill_copy"].as_str()), (200, Some("")), "fail_open skips the copy: {body}");
        let (status, body) = grant(&server, "plug", "trap", user(2), 1, 1, None);
        assert_eq!((status, body["bill_copy"].as_str()), (200, Some("builtin 1.00")), "{body}");
        let (status, body) = grant(&server, "plug", "invalid", user(3), 1, 1, None);
        assert_eq!((status, body["code"].as_str()), (503, Some("plugin_failed")), "{body}");
        assert!(!body["message"].as_str().unwrap().contains('/'), "an app's answer names no file: {body}");
        let (status, body) = grant(&server, "plug", "wrong", user(4), 1, 1, None);
        assert_eq!((status, body["bill_copy"].as_str()), (200, Some("builtin 1.00")), "{body}");
        let (status, body) = grant(&server, "plug", "garbage", user(5), 1, 1, None);
        assert_eq!(status, 200, "{body}");
        assert!((1..=50).contains(&body["amount_cents"].as_i64().unwrap()), "the built-in amount: {body}");
        // A sleeping guest returns at once: time does not pass inside a call. (Were the sleep
        // not sealed, the call would block for the fixture's hour and the request time out.)
        let (status, body) = grant(&server, "plug", "sleep", user(6), 1, 1, None);
        assert_eq!((status, body["bill_copy"].as_str()), (200, Some("woke")), "{body}");
        // A guest that floods stdout and stderr serves on the async worker that runs the grant:
        // its blocking writes are the sandbox's own, which never wait on the runtime (WASI's
        // would panic there, and the call fail closed).
        let (status, body) = grant(&server, "plug", "spam", user(7), 1, 1, None);
        assert_eq!((status, body["bill_copy"].as_str()), (200, Some("spammed")), "{body}");
        // A WASI call that would block on the runtime (a UDP socket) fails its plugin call,
        // not the worker: the scene gets its policy and the host serves on.
        let (status, body) = grant(&server, "plug", "udp", user(8), 1, 1, None);
        assert_eq!((status, body["code"].as_str()), (503, Some("plugin_failed")), "{body}");
    }

    stop.store(true, Ordering::Relaxed);
    let answers = healthy.join().unwrap();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "the healthy scene failed: {body}");
        assert!(body["bill_copy"].as_str().unwrap().contains("恭喜获得1.00元"), "{body}");
    }

    let (_, listed) = server.get("/v1/plugins");
    let stats = |scene: &str| -> Value {
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["scene_id"] == scene)
            .unwrap_or_else(|| panic!("{listed}"))
            .clone()
    };
    for (scene, code) in [
        ("loop", "plugin_deadline"),
        ("counted", "plugin_instructions"),
        ("alloc", "plugin_memory"),
        ("trap", "plugin_trap"),
        ("invalid", "plugin_not_loaded"),
        ("wrong", "plugin_not_loaded"),
        ("garbage", "plugin_invalid_output"),
        ("udp", "plugin_trap"),
    ] {
        let plugin = stats(scene);
        assert_eq!(plugin["stats"]["failures"][code], 2, "{scene}: {plugin}");
        assert_eq!(plugin["stats"]["ok"], 0, "{scene}: {plugin}");
    }
    // A guest's panic explains itself: its message reaches the plugin's last failure.
    let last = &stats("trap")["stats"]["last_failure"];
    assert_eq!(last["code"], "plugin_trap", "{last}");
    assert!(last["message"].as_str().unwrap().contains("fx-trap: deliberate panic"), "{last}");
    let last = &stats("udp")["stats"]["last_failure"];
    assert!(last["message"].as_str().unwrap().contains("host call failed"), "{last}");
    assert!(stats("invalid")["load_error"].as_str().unwrap().contains("not a valid WebAssembly component"));
    assert!(stats("wrong")["load_error"].as_str().unwrap().contains("bill-copy"), "{}", stats("wrong"));
    assert_eq!(stats("healthy")["stats"]["ok"].as_u64(), Some(answers.len() as u64));
    assert_eq!(server.get("/healthz").0, 200);
}

// Proves a plugin whose bytes do not match the pinned sha256 refuses its scene file, in the
// server (reported at the pin's line) and in `hongbao scenes validate`.
#[test]
fn a_plugin_that_does_not_match_its_pin_is_refused() {
    let wasm = plugin_wasm("hb_bill_copy");
    let other = plugin_wasm("fx_bill_copy_alt");
    let block = plugin_block("bill_copy", &wasm, "builtin", "").replace(&sha256_of(&wasm), &sha256_of(&other));
    let text = campaign("pinned", 1_000_000, &[scene("copy", "Copy", &fixed(1), "", &[block])]);
    let server = Server::start_with(&[("pinned.yaml", &text)], &[]);
    let (_, view) = server.get("/v1/scenes");
    let error = &view["files"][0]["errors"][0];
    assert_eq!(error["path"], "activity.award_types[0].awards[0].scenes[0].plugins.bill_copy.sha256", "{view}");
    let pin_line = text.lines().position(|l| l.trim_start().starts_with("sha256:")).unwrap() + 1;
    assert_eq!(error["line"], pin_line as u64, "{view}");
    assert!(error["message"].as_str().unwrap().contains("sha256 mismatch"), "{view}");
    let (status, body) = grant(&server, "pinned", "copy", 1, 1, 1, None);
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_activity")), "{body}");

    let output =
        Command::new(env!("CARGO_BIN_EXE_hongbao")).args(["scenes", "validate"]).arg(&server.scenes).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("pinned.yaml:{pin_line}: activity.award_types[0].awards[0].scenes[0].plugins.bill_copy.sha256: sha256 mismatch")),
        "{stderr}"
    );
}

// Proves a `.wasm` replaced under load (and its pin updated) swaps in with no failed request:
// calls in flight finish on the old version, later ones use the new one.
#[test]
fn replacing_a_plugin_under_load_swaps_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("copy.wasm");
    std::fs::copy(plugin_wasm("hb_bill_copy"), &wasm).unwrap();
    let yaml = |pinned: &Path| {
        let block = plugin_block("bill_copy", &wasm, "fail_closed", GENEROUS_DEADLINE)
            .replace(&sha256_of(&wasm), &sha256_of(pinned));
        campaign("swap", 100_000_000, &[scene("swap", "Swap", &fixed(100), "", &[block])])
    };
    let server = Server::start_with(&[("swap.yaml", &yaml(&plugin_wasm("hb_bill_copy")))], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let texts = Arc::new(Mutex::new(Vec::new()));
    let swapped = Arc::new(AtomicBool::new(false));
    // Answers so far: the test moves on when enough came, not after a fixed time.
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4i64)
        .map(|client| {
            let (addr, stop, texts, swapped, answered) =
                (server.addr.clone(), stop.clone(), texts.clone(), swapped.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut mine: Vec<String> = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({ "app_id": 1128, "act_id": client * 1_000_000 + n, "activity_id": "swap",
                                       "scene_id": "swap", "rain_id": 0, "award_type": "cash", "stage": 0 });
                    match request(&addr, "POST", "/v1/grants", Some(&body)) {
                        (200, answer) => {
                            let text = answer["bill_copy"].as_str().unwrap().to_owned();
                            if text.starts_with("v2") {
                                swapped.store(true, Ordering::Relaxed);
                            }
                            mine.push(text);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        (status, answer) => failures.push(format!("{status} {answer}")),
                    }
                }
                texts.lock().unwrap().push(mine);
                failures
            })
        })
        .collect();
    // Waits until `more` answers came after those counted so far.
    let wait_answers = |more: usize| {
        let target = answered.load(Ordering::Relaxed) + more;
        wait_for(WAIT_LIMIT, || (answered.load(Ordering::Relaxed) >= target).then_some(()));
    };
    wait_answers(20);
    // The new bytes first (the pin no longer matches: the old version keeps serving), then the
    // pin, as a deploy script would do.
    let staged = dir.path().join("copy.wasm.new");
    std::fs::copy(plugin_wasm("fx_bill_copy_alt"), &staged).unwrap();
    std::fs::rename(&staged, &wasm).unwrap();
    wait_for(WAIT_LIMIT, || {
        let (_, view) = server.get("/v1/scenes");
        view["files"][0]["errors"].to_string().contains("sha256 mismatch").then_some(())
    });
    wait_answers(20);
    write_atomically(&server.scenes.join("swap.yaml"), &yaml(&wasm));
    wait_for(WAIT_LIMIT, || swapped.load(Ordering::Relaxed).then_some(()));
    wait_answers(20);
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(failures, Vec::<String>::new());
    let per_client = texts.lock().unwrap();
    let all: Vec<&String> = per_client.iter().flatten().collect();
    let old = all.iter().filter(|t| t.as_str() == "Swap · 恭喜获得1.00元").count();
    let new = all.iter().filter(|t| t.as_str() == "v2 1.00元").count();
    assert!(old > 0 && new > 0, "old {old}, new {new}");
    assert_eq!(old + new, all.len(), "unexpected texts");
    // Once a client saw the new version, it never saw the old one again.
    for texts in per_client.iter() {
        if let Some(first_new) = texts.iter().position(|t| t.starts_with("v2")) {
            assert!(texts[first_new..].iter().all(|t| t.starts_with("v2")), "old text after the swap: {texts:?}");
        }
    }
}

// Proves the compensation plugin's back-off decides what happens to credits the ledger
// refuses: after the token store is lost, a re-issued grant exceeds the funded budget; the
// plugin retries it on its schedule, gives up with an alert after its attempts, and the token
// stays owed until the budget is raised.
#[test]
fn compensation_plugin_retries_refused_credits_then_alerts() {
    let text = |budget: i64| {
        campaign(
            "comp",
            budget,
            &[scene(
                "comp",
                "Comp",
                &fixed(100),
                "",
                &[plugin_block(
                    "compensation",
                    &plugin_wasm("hb_compensation"),
                    "fail_closed",
                    &generous(&[("initial_ms", "50"), ("max_ms", "100"), ("max_attempts", "3")]),
                )],
            )],
        )
    };
    let mut server = Server::start_with(&[("comp.yaml", &text(300))], &[]);
    for stage in 1..=3 {
        assert_eq!(grant(&server, "comp", "comp", 1, 1, stage, None).0, 200);
    }
    assert_eq!(server.wait_credited(1)["credited_cents"], 300);
    server.kill9();
    std::fs::remove_file(server.data.join("tokens.log")).unwrap();
    server.launch(&[]);
    // The lost store counts no stock, so it grants again; the ledger's budget is spent.
    let (status, body) = grant(&server, "comp", "comp", 1, 1, 4, None);
    assert_eq!(status, 200, "{body}");
    let writer = wait_for(WAIT_LIMIT, || {
        let (_, health) = server.get("/healthz");
        (health["writer"]["compensation_alerts"] == 1).then(|| health["writer"].clone())
    });
    assert_eq!(writer["compensation_retries"], 3, "{writer}");
    let (_, listed) = server.get("/v1/plugins");
    assert_eq!(listed["plugins"][0]["stats"]["calls"], 4, "{listed}");
    let wallet = server.wallet(1);
    assert_eq!(
        (wallet["credited_cents"].as_i64(), wallet["pending_cents"].as_i64()),
        (Some(300), Some(100)),
        "{wallet}"
    );

    write_atomically(&server.scenes.join("comp.yaml"), &text(400));
    assert_eq!(server.wait_credited(1)["credited_cents"], 400);
}

// Proves `hongbao plugin new` writes, for every kind, a crate that builds as is and whose
// sample input passes `hongbao plugin run`.
#[test]
fn plugin_new_output_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Shared with the reference plugins' build so the SDK's dependencies are compiled once.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/scaffolds");
    for kind in ["bill-copy", "rate-limit", "inventory", "compensation", "reconciliation"] {
        let name = format!("my-{kind}");
        let crate_dir = dir.path().join(&name);
        let output = Command::new(env!("CARGO_BIN_EXE_hongbao"))
            .args(["plugin", "new", kind, &name, "--dir"])
            .arg(&crate_dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let build = Command::new("cargo")
            .args(["build", "--release", "--quiet"])
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(build.status.success(), "{kind}: {}", String::from_utf8_lossy(&build.stderr));
        let wasm = target.join(format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_")));
        let run = Command::new(env!("CARGO_BIN_EXE_hongbao"))
            .args(["plugin", "run"])
            .arg(&wasm)
            .arg("--input")
            .arg(crate_dir.join("input.json"))
            .env("HONGBAO_LOG", "warn")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|_| panic!("{kind}: {}", String::from_utf8_lossy(&run.stderr)));
        assert!(run.status.success(), "{kind}: {report}");
        assert_eq!(report["capability"], kind, "{report}");
        assert!(report["result"].is_object(), "{kind}: {report}");
        assert!(report["instructions"].as_u64().unwrap() > 0, "{report}");
        assert!(report["peak_memory_bytes"].as_u64().unwrap() >= 65_536, "{report}");
    }
}

fn plugin_run(wasm: &Path, input: &Value) -> Value {
    plugin_run_calls(wasm, input, 1)
}

pub(crate) fn plugin_run_calls(wasm: &Path, input: &Value, calls: u32) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.json");
    std::fs::write(&file, input.to_string()).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_hongbao"))
        .args(["plugin", "run"])
        .arg(wasm)
        .arg("--input")
        .arg(&file)
        .args(["--calls", &calls.to_string()])
        .env("HONGBAO_LOG", "error")
        .output()
        .unwrap();
    serde_json::from_slice(&run.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&run.stderr)))
}

// Proves the sandbox: a guest's clock reads the call's `now_ms`, its randomness is drawn from
// the call's seed (the same seed gives the same numbers, another seed others), it sees no files
// and no environment, and what it prints or logs is kept only up to the host's bounds.
#[test]
fn the_sandbox_pins_time_and_randomness_and_bounds_output() {
    let input = |seed: u64| {
        json!({ "capability": "bill-copy", "context": { "now_ms": 1_234_567_890_123u64, "random_seed": seed },
                "input": { "amount_cents": 1 } })
    };
    let text = |report: Value| report["result"]["text"].as_str().unwrap_or_else(|| panic!("{report}")).to_owned();
    let first = text(plugin_run(&plugin_wasm("fx_clock"), &input(7)));
    let again = text(plugin_run(&plugin_wasm("fx_clock"), &input(7)));
    let other = text(plugin_run(&plugin_wasm("fx_clock"), &input(8)));
    assert!(first.starts_with("1234567890123 "), "{first}");
    assert!(first.ends_with(" fs=err env=0"), "{first}");
    assert_eq!(first, again, "same context, same answer");
    assert_ne!(first, other, "another seed, other numbers");

    let spam = plugin_run(&plugin_wasm("fx_spam"), &input(1));
    assert_eq!(spam["result"]["text"], "spammed", "{spam}");
    assert_eq!(spam["output"].as_str().unwrap().len(), 4096, "output kept per call");
    assert!(spam["output_dropped_bytes"].as_u64().unwrap() > 100_000, "{}", spam["output_dropped_bytes"]);
    assert_eq!(spam["log"].as_array().unwrap().len(), 16, "log lines kept per call");
    assert_eq!(spam["log_dropped"], 1_000 - 16);
}

// Proves `plugin run --calls N` reports the compile, the first call on a fresh instance and the
// N - 1 warm calls after it (on the instance the first left: no new instantiation), with the
// instructions a call ran and its memory, and that a warm call answers as the first did.
#[test]
fn plugin_run_reports_first_and_warm_calls() {
    let input = json!({ "context": { "act_id": 7, "rain_id": 1, "random_seed": 42, "now_ms": 1 },
                        "input": { "amount_cents": 188 } });
    let report = plugin_run_calls(&plugin_wasm("hb_bill_copy"), &input, 20);
    assert!(report["result"]["text"].as_str().is_some(), "{report}");
    assert!(report["time_us"]["compile"].as_f64().is_some_and(|us| us > 0.0), "{report}");
    assert!(report["time_us"]["instantiate"].as_f64().is_some(), "the first call instantiates: {report}");
    let warm = &report["warm"];
    assert_eq!((warm["calls"].as_u64(), warm["instantiations"].as_u64()), (Some(19), Some(0)), "{report}");
    assert!(warm["time_us"]["p50"].as_f64().is_some_and(|us| us > 0.0), "{report}");
    assert!(warm["instructions_max"].as_u64().is_some_and(|count| count > 0), "{report}");
    assert!(warm["peak_memory_bytes"].as_u64().is_some_and(|bytes| bytes > 0), "{report}");
    assert!(plugin_run(&plugin_wasm("hb_bill_copy"), &input)["warm"].is_null());
}
