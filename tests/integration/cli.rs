//! The `hongbao` command line, run as a process.

use std::process::Command;

use crate::support::{Server, TEST_CAMPAIGN};

fn hongbao(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hongbao")).args(args).output().unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

// Proves `scenes validate` accepts the shipped campaign and names file, line and key path for
// every problem in a broken one, exiting non-zero.
#[test]
fn scenes_validate_reports_file_line_and_key() {
    let scenes = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenes");
    let (ok, stdout, stderr) = hongbao(&["scenes", "validate", scenes]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let broken = TEST_CAMPAIGN.replace("cents: 88", "cents: -5").replace("app_ids: [1128]", "app_ids: []");
    std::fs::write(dir.path().join("broken.yaml"), broken).unwrap();
    let (ok, _, stderr) = hongbao(&["scenes", "validate", dir.path().to_str().unwrap()]);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().filter(|line| line.contains("broken.yaml:")).collect();
    assert!(lines.len() >= 2, "{stderr}");
    assert!(lines.iter().any(|l| l.contains(":18: ") && l.contains("scenes[0].amount.cents")), "{stderr}");
    assert!(lines.iter().any(|l| l.contains("scenes[1].app_ids")), "{stderr}");
}

// Proves `token inspect` prints a granted token's fields, and checks its signature with --data.
#[test]
fn token_inspect_prints_and_verifies() {
    let server = Server::start(&[]);
    let token = server.grant_rain(31, 2, 5)["token"].as_str().unwrap().to_owned();
    let data = server.data.to_str().unwrap();
    let (ok, stdout, stderr) = hongbao(&["token", "inspect", &token, "--data", data]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["token"]["order_no"], "31_rain_2_cash_5");
    assert_eq!(report["token"]["amount_cents"], 88);
    assert_eq!(report["signature"], "valid");
    let (ok, _, stderr) = hongbao(&["token", "inspect", "garbage!"]);
    assert!(!ok);
    assert!(stderr.contains("not well formed"), "{stderr}");
}

// Proves `serve --config FILE`: its settings apply (here the Redis store, seen by the keys it
// writes), flags win over it, and a bad file is refused naming the file, line and key.
#[test]
fn serve_reads_a_config_file_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = crate::backends::unique_prefix();
    let config = dir.path().join("hongbao.yaml");
    std::fs::write(
        &config,
        format!("store: {}\nstore_prefix: {prefix}\nlisten: 127.0.0.1:1\n", crate::backends::shared_redis_url()),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let grant = server.grant_rain(41, 1, 0);
    assert_eq!(grant["amount_cents"], 88);
    // The grant went to Redis under the file's prefix, not to the embedded store.
    assert!(!server.data.join("tokens.log").exists());
    let (status, health) = server.get("/healthz");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    std::fs::write(&config, "store: redis://127.0.0.1:6379\ncredits_per_secnd: 5\n").unwrap();
    let (ok, _, stderr) = hongbao(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("hongbao.yaml:2: unknown setting `credits_per_secnd`"), "{stderr}");
    std::fs::write(&config, "store: [1, 2]\n").unwrap();
    let (ok, _, stderr) = hongbao(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("hongbao.yaml:1: setting `store`"), "{stderr}");
}

// Proves `hongbao reconcile` says when it cannot ask the host: no admin credential, exit 2.
#[test]
fn reconcile_without_an_admin_credential_exits_2() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hongbao"))
        .args(["reconcile", "--activity", "a", "--url", "http://127.0.0.1:9", "--data"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no admin credential"), "{output:?}");
}
