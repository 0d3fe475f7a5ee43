//! Compilation off the serving path: a host serves at once while its plugins compile in the
//! background, a scene whose plugin is compiling answers with its failure policy and delays no
//! other scene, and a new version of a scene waits for its plugins while the old one keeps
//! serving. A compile that never finishes comes from the failpoint `plugin.compile.stall`, not
//! from a plugin that is merely slow to compile.

use crate::plugins::{BUILTIN_COPY, GENEROUS_DEADLINE, WAIT_LIMIT, campaign, fixed, scene};
use crate::support::{Server, plugin_block, plugin_wasm, sha256_of, wait_for, write_atomically};

const STALL: (&str, &str) = ("HONGBAO_FAILPOINTS", "plugin.compile.stall");

fn grant_body(scene_id: &str, act_id: i64) -> serde_json::Value {
    serde_json::json!({ "app_id": 1128, "act_id": act_id, "activity_id": "warm", "scene_id": scene_id,
                        "rain_id": 0, "award_type": "cash", "stage": 0 })
}

// Proves the host listens and serves while its plugins compile: a scene whose plugin falls back
// to the built-in answers with it, a fail-closed one refuses with `plugin_failed` naming
// `plugin_warming`, a scene without plugins answers as always, and health and `/v1/plugins`
// say which plugins are warming.
#[test]
fn a_host_serves_while_its_plugins_compile() {
    let copy = plugin_wasm("hb_bill_copy");
    let fallback = plugin_block("bill_copy", &copy, "builtin", GENEROUS_DEADLINE);
    let closed = plugin_block("bill_copy", &copy, "fail_closed", GENEROUS_DEADLINE);
    let yaml = campaign(
        "warm",
        100_000_000,
        &[
            scene("fallback", "Fallback", &fixed(100), BUILTIN_COPY, &[fallback]),
            scene("closed", "Closed", &fixed(100), "", &[closed]),
            scene("plain", "Plain", &fixed(100), BUILTIN_COPY, &[]),
        ],
    );
    let server = Server::start_listening(&[("warm.yaml", &yaml)], &[], &[STALL]);
    let (_, health) = server.get("/healthz");
    assert_eq!(health["plugins_warming"], 2, "{health}");

    let (status, answer) = server.post("/v1/grants", &grant_body("fallback", 1));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["bill_copy"].as_str().unwrap().starts_with("builtin"), "{answer}");
    let (status, answer) = server.post("/v1/grants", &grant_body("closed", 2));
    assert_eq!((status, answer["code"].as_str()), (503, Some("plugin_failed")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("plugin_warming"), "{answer}");
    let (status, answer) = server.post("/v1/grants", &grant_body("plain", 3));
    assert_eq!(status, 200, "{answer}");

    let (_, plugins) = server.get("/v1/plugins");
    let states: Vec<&str> =
        plugins["plugins"].as_array().unwrap().iter().map(|p| p["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["warming", "warming"], "{plugins}");
}

// Proves a new version of a scene whose plugin is still compiling does not replace the version
// being served: the old plugin keeps answering and the file shows the new version as pending.
#[test]
fn a_new_version_waits_for_its_plugins_while_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("copy.wasm");
    std::fs::copy(plugin_wasm("hb_bill_copy"), &wasm).unwrap();
    let yaml = || {
        let block = plugin_block("bill_copy", &wasm, "fail_closed", GENEROUS_DEADLINE);
        campaign("warm", 100_000_000, &[scene("swap", "Swap", &fixed(100), "", &[block])])
    };
    // The first version compiles normally, into the data directory's cache.
    let mut server = Server::start_with(&[("warm.yaml", &yaml())], &[]);
    let (status, first) = server.post("/v1/grants", &grant_body("swap", 1));
    assert_eq!(status, 200, "{first}");
    assert!(!first["bill_copy"].as_str().unwrap().starts_with("v2"), "{first}");
    // From now on no compile finishes; the first version comes from the cache.
    server.kill9();
    server.launch_with_env(&[], &[STALL]);
    let (_, files) = server.get("/v1/scenes");
    let served = files["files"][0]["version"].clone();

    std::fs::copy(plugin_wasm("fx_bill_copy_alt"), &wasm).unwrap();
    write_atomically(&server.scenes.join("warm.yaml"), &yaml());
    let pending = wait_for(WAIT_LIMIT, || {
        let (_, view) = server.get("/v1/scenes");
        view["files"][0]["pending_version"].as_str().map(str::to_owned)
    });
    assert_ne!(Some(pending.as_str()), served.as_str());
    for user in 2..12 {
        let (status, answer) = server.post("/v1/grants", &grant_body("swap", user));
        assert_eq!(status, 200, "{answer}");
        assert!(!answer["bill_copy"].as_str().unwrap().starts_with("v2"), "the new version served early: {answer}");
    }
    let (_, view) = server.get("/v1/scenes");
    assert_eq!(view["files"][0]["version"], served, "{view}");
    assert_eq!(sha256_of(&wasm), sha256_of(&plugin_wasm("fx_bill_copy_alt")));
}
