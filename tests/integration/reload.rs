//! Hot reload of scene YAML.

use std::time::Duration;

use crate::support::{Server, TEST_CAMPAIGN, grant_body, wait_for, write_atomically};

/// How long an edit may take to be seen. The reloader polls every
/// `hongbao::app::SCENE_RELOAD_INTERVAL_MS`; a loaded machine can stretch that by seconds, so
/// this only catches a reload that never happens.
const RELOAD_WAIT_LIMIT: Duration = Duration::from_secs(30);

// Proves an invalid edit is rejected with its errors visible over HTTP while the last good
// version keeps serving, and that a valid edit, a new file and a deletion each take effect
// without a restart.
#[test]
fn invalid_yaml_keeps_the_old_scene_serving() {
    let server = Server::start(&[]);
    let file = server.scenes.join("test-campaign.yaml");
    write_atomically(&file, &TEST_CAMPAIGN.replace("cents: 88", "cents: -5"));
    let scenes = wait_for(RELOAD_WAIT_LIMIT, || {
        let (_, scenes) = server.get("/v1/scenes");
        let errors = scenes["files"][0]["errors"].as_array().cloned().unwrap_or_default();
        (!errors.is_empty()).then_some(scenes)
    });
    let error = &scenes["files"][0]["errors"][0];
    assert!(error["line"].as_u64().unwrap() > 0, "{error}");
    assert!(error["path"].as_str().unwrap().contains("amount"), "{error}");
    let grant = server.grant_rain(11, 1, 0);
    assert_eq!(grant["amount_cents"], 88, "the last good version must keep serving");

    write_atomically(&file, "activity: [this is: not: yaml");
    // Once the broken file's errors replace the first ones, the reload has seen it.
    wait_for(RELOAD_WAIT_LIMIT, || {
        let (_, now) = server.get("/v1/scenes");
        let errors = &now["files"][0]["errors"];
        (errors.as_array().is_some_and(|e| !e.is_empty()) && *errors != scenes["files"][0]["errors"]).then_some(())
    });
    assert_eq!(server.grant_rain(11, 1, 1)["amount_cents"], 88);

    write_atomically(&file, &TEST_CAMPAIGN.replace("cents: 88", "cents: 99"));
    // A fresh user per poll: a grant made before the reload would otherwise be replayed.
    let mut act_id = 1000;
    wait_for(RELOAD_WAIT_LIMIT, || {
        act_id += 1;
        let (status, body) = server.post("/v1/grants", &grant_body(act_id, "rain", 1, 0));
        (status == 200 && body["amount_cents"] == 99).then_some(())
    });
    let (_, scenes) = server.get("/v1/scenes");
    assert_eq!(scenes["files"][0]["errors"], serde_json::json!([]));

    // Regression: scene checks ran before the replay lookup, so a retry of an answered grant was
    // refused once its app left the scene's app_ids. A replay must still answer.
    let before = server.grant_rain(11, 1, 0);
    write_atomically(&file, &TEST_CAMPAIGN.replace("app_ids: [1128, 2329]", "app_ids: [2329]"));
    wait_for(RELOAD_WAIT_LIMIT, || {
        act_id += 1;
        (server.post("/v1/grants", &grant_body(act_id, "rain", 1, 0)).1["code"] == "app_not_allowed").then_some(())
    });
    let replay = server.grant_rain(11, 1, 0);
    assert_eq!((replay["token"].clone(), replay["replayed"].as_bool()), (before["token"].clone(), Some(true)));

    let second = TEST_CAMPAIGN.replace("id: test-campaign", "id: second-campaign");
    write_atomically(&server.scenes.join("second.yaml"), &second);
    wait_for(RELOAD_WAIT_LIMIT, || {
        let mut body = grant_body(13, "rain", 1, 0);
        body["activity_id"] = "second-campaign".into();
        (server.post("/v1/grants", &body).0 == 200).then_some(())
    });
    std::fs::remove_file(server.scenes.join("second.yaml")).unwrap();
    wait_for(RELOAD_WAIT_LIMIT, || {
        act_id += 1;
        let mut body = grant_body(act_id, "rain", 1, 0);
        body["activity_id"] = "second-campaign".into();
        (server.post("/v1/grants", &body).1["code"] == "unknown_activity").then_some(())
    });
}
