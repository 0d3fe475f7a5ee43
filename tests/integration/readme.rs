//! The README's examples, run as written: its scene YAML validates, and its curl tour works
//! against the real server serving the shipped campaign.

use std::process::Command;

use crate::support::Server;

const README: &str = include_str!("../../README.md");

/// The body of the `index`-th fenced block whose info string is `lang`.
fn fenced_block(lang: &str, index: usize) -> String {
    let fence = format!("```{lang}");
    let mut blocks = README.split(&fence).skip(1);
    let block = blocks.nth(index).unwrap_or_else(|| panic!("README has no block {index} of {lang}"));
    block.split("\n```").next().unwrap().to_owned()
}

// Proves the scene YAML shown in the README is a valid scene file.
#[test]
fn readme_scene_yaml_validates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.yaml"), fenced_block("yaml", 0)).unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_hongbao")).args(["scenes", "validate"]).arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

// Proves the README's curl tour runs as written against the shipped campaign: every command
// succeeds and no answer is an error.
#[test]
fn readme_curl_tour_works() {
    assert!(Command::new("curl").arg("--version").output().is_ok(), "install curl to run the README tour test");
    let server = Server::start(&[]);
    std::fs::remove_file(server.scenes.join("test-campaign.yaml")).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenes")).unwrap() {
        let path = entry.unwrap().path();
        // Plugin paths are relative to the scene file; the copy points them at the repository.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("path: ../plugins/", concat!("path: ", env!("CARGO_MANIFEST_DIR"), "/../plugins/"));
        std::fs::write(server.scenes.join(path.file_name().unwrap()), text).unwrap();
    }
    // Generous: the reload is polled, and a loaded machine can take seconds to get to it.
    crate::support::wait_for(std::time::Duration::from_secs(30), || {
        (server.get("/v1/scenes").1["activities"][0]["activity_id"] == "lantern-festival-2027").then_some(())
    });
    // The campaign's plugins compile in the background; the tour shows what they answer.
    server.wait_plugins_compiled();
    let tour = fenced_block("sh", 1)
        .replace("localhost:8080", &server.addr)
        .replace("target/debug/hongbao", env!("CARGO_BIN_EXE_hongbao"));
    let output = Command::new("bash")
        .args(["-e", "-c", &tour])
        .env("HONGBAO_URL", format!("http://{}", server.addr))
        .env("HONGBAO_DATA", &server.data)
        .env("HONGBAO_APP", "1128")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "tour failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\"order_no\":\"10001_eve-rain_1_cash_0\""), "{stdout}");
    assert!(stdout.contains("\"replayed\":true"), "{stdout}");
    assert!(stdout.contains("\"valid\":true"), "{stdout}");
    assert!(
        stdout.contains("\"result\":\"already_present\"") || stdout.contains("\"result\":\"already_credited\""),
        "{stdout}"
    );
    // The tour ends on an unsigned request, which must be refused; nothing else may be.
    let (tour, refused) = stdout.rsplit_once('\n').map_or((&*stdout, ""), |(tour, last)| (tour, last));
    let (tour, refused) =
        if refused.is_empty() { tour.rsplit_once('\n').unwrap_or((tour, "")) } else { (tour, refused) };
    assert!(!tour.contains("\"code\":"), "an example answered an error: {tour}");
    assert!(refused.contains("\"code\":\"unauthenticated\""), "the unsigned request was not refused: {refused}");
}

// Proves the README's Python signing example works against the real server as written.
#[test]
fn readme_python_example_signs_requests() {
    let server = Server::start(&[]);
    let example = fenced_block("python", 0);
    let program = format!(
        "{example}\nprint(json.dumps(call('POST', '/v1/grants', {body}, 1128, 'test-key', '{secret}', base='http://{addr}')))\n",
        body = "{'app_id': 1128, 'act_id': 77, 'activity_id': 'test-campaign', 'scene_id': 'rain', 'award_type': 'cash', 'rain_id': 1, 'stage': 0}",
        secret = crate::support::test_secret(1128),
        addr = server.addr,
    );
    let output = Command::new("python3").args(["-c", &program]).output().expect("python3 runs the README example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\"order_no\": \"77_rain_1_cash_0\""), "{stdout}");
}

// Proves the README's worked signing example gives the signature it states, computed here
// independently of the server's code.
#[test]
fn readme_worked_signature_example_holds() {
    let section = README.split("Worked example, checked by the test suite:").nth(1).expect("the worked example");
    let body = section
        .split("`{")
        .nth(1)
        .and_then(|rest| rest.split("}`").next())
        .map(|inner| format!("{{{inner}}}"))
        .unwrap();
    let stated = section.split("signature=").nth(1).and_then(|rest| rest.split('`').next()).unwrap();
    let header = crate::support::signed_header_at(
        1128,
        "k",
        "hbsk_example_secret",
        "POST",
        "/v1/grants",
        body.as_bytes(),
        1_767_225_600,
        "n0nce-0123456789abcdef",
    );
    assert!(header.ends_with(&format!("signature={stated}")), "{header} vs {stated}");
}
