//! The live dashboard: only the admin reads it (a bearer credential, or from a browser the same
//! credential as HTTP Basic, which no other route takes), and in headless Chromium the page shows
//! the host's own figures.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::metrics::{page, sample};
use crate::support::{Auth, Server, TEST_ADMIN_TOKEN, grant_body, request_as, wait_for};

/// One request with exactly this `Authorization` header (or none): status, head and body.
fn fetch(addr: &str, method: &str, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let authorization = authorization.map(|value| format!("authorization: {value}\r\n")).unwrap_or_default();
    let body = if method == "POST" { "{}" } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{authorization}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

// Proves the dashboard and its data refuse everyone but the admin: nobody (401, telling a
// browser to ask for Basic credentials), an app or a user session (403), a wrong Basic user or
// password (401); and that Basic credentials open the dashboard only, not /metrics nor a repair.
#[test]
fn only_the_admin_opens_the_dashboard() {
    // Fixed rate: the writer's reason is asserted below, and must not depend on the machine.
    let server = Server::start(&["--fixed-rate"]);
    let admin_basic = basic("admin", TEST_ADMIN_TOKEN);
    for path in ["/dashboard", "/dashboard/data"] {
        let (status, head, _) = fetch(&server.addr, "GET", path, None);
        assert_eq!(status, 401, "{path}");
        assert!(head.contains("www-authenticate: basic realm=\"hongbao dashboard\""), "{path}: {head}");
        let app = request_as(&server.addr, &Auth::App(1128), "GET", path, "", "application/json");
        assert_eq!((app.0, app.1["code"].as_str()), (403, Some("forbidden")), "{path} signed by an app");
        for wrong in [basic("admin", "hbadmin_guess"), basic("root", TEST_ADMIN_TOKEN), "Basic !!".to_owned()] {
            assert_eq!(fetch(&server.addr, "GET", path, Some(&wrong)).0, 401, "{path} with {wrong}");
        }
        let (status, head, _) = fetch(&server.addr, "GET", path, Some(&admin_basic));
        assert_eq!(status, 200, "{path} with the admin's Basic credentials");
        let bearer = fetch(&server.addr, "GET", path, Some(&format!("Bearer {TEST_ADMIN_TOKEN}")));
        assert_eq!(bearer.0, 200, "{path} with the admin's bearer credential");
        if path == "/dashboard" {
            assert!(head.contains("content-type: text/html"), "{head}");
            assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
        }
    }
    let (_, _, data) = fetch(&server.addr, "GET", "/dashboard/data", Some(&admin_basic));
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["writer"]["reason"], "uncapped", "{data}");
    for (method, path) in
        [("GET", "/metrics"), ("GET", "/v1/scenes"), ("POST", "/v1/activities/test-campaign/reconciliation:repair")]
    {
        let (status, _, body) = fetch(&server.addr, method, path, Some(&admin_basic));
        assert_eq!(status, 401, "{method} {path} with Basic credentials: {body}");
    }
}

/// Where `npm ci` put playwright-core: `$HONGBAO_BROWSER_DEPS`, else `target/browser-deps`
/// (`just test` installs it there).
fn browser_deps() -> PathBuf {
    let deps = std::env::var_os("HONGBAO_BROWSER_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-deps"));
    assert!(
        deps.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run `just test` (it runs `npm ci` there) or set HONGBAO_BROWSER_DEPS",
        deps.display()
    );
    deps
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            let matches = series_name == name
                && labels.iter().all(|(label, text)| series_labels.contains(&format!("{label}=\"{text}\"")));
            matches.then(|| value.parse::<f64>().expect("a number"))
        })
        .sum()
}

/// Grant answers by refusal code on a metrics page.
fn refusals(page: &str) -> BTreeMap<String, f64> {
    let mut codes = BTreeMap::new();
    for line in page.lines().filter(|line| line.starts_with("hongbao_grants_total{")) {
        let outcome = line.split("outcome=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap();
        let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        if outcome != "granted" && outcome != "replayed" && value > 0.0 {
            *codes.entry(outcome.to_owned()).or_default() += value;
        }
    }
    codes
}

// Proves the dashboard, loaded in headless Chromium after a short rain (new grants, a replay,
// refusals by stock and by an unknown scene), shows the host's own figures: the grants, replays,
// refusals by code and credits /metrics counts, the drained backlog, a scene's stock left and the
// writer's reason. `HONGBAO_DASHBOARD_SCREENSHOT=PATH` also saves the page as a picture.
#[test]
fn the_page_in_chromium_shows_the_hosts_figures() {
    let deps = browser_deps();
    // Fixed rate: the writer's reason is compared below, and must not depend on the machine.
    let server = Server::start(&["--fixed-rate"]);
    for user in 0..20 {
        server.grant_rain(8_400 + user, 1, 0);
    }
    server.grant_rain(8_400, 1, 0);
    for user in 0..5 {
        server.post("/v1/grants", &grant_body(8_500 + user, "limited", 1, 0));
    }
    assert_eq!(server.post("/v1/grants", &grant_body(8_600, "no-such-scene", 1, 0)).0, 404);
    let settled = wait_for(Duration::from_secs(60), || {
        let now = page(&server);
        let drained = sample(&now, "hongbao_crediting_backlog", &[]) == Some(0.0);
        let counted = sample(&now, "hongbao_credits_total", &[]).is_some_and(|credits| credits >= 23.0);
        (drained && counted).then_some(now)
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/dashboard.mjs");
    let mut node = Command::new("node");
    node.arg(&script).arg(format!("http://{}/dashboard", server.addr)).args(["admin", TEST_ADMIN_TOKEN]);
    if let Some(picture) = std::env::var_os("HONGBAO_DASHBOARD_SCREENSHOT") {
        node.arg("--screenshot").arg(picture);
    }
    let output = node.env("HONGBAO_BROWSER_DEPS", &deps).output().expect("running node (install Node.js)");
    assert!(output.status.success(), "the browser run failed: {}", String::from_utf8_lossy(&output.stderr));
    let shown: Value = serde_json::from_slice(&output.stdout).expect("the page's figures as JSON");

    let granted = sum(&settled, "hongbao_grants_total", &[("outcome", "granted")]);
    assert_eq!(granted, 23.0, "{settled}");
    assert_eq!(shown["grants_total"].as_f64(), Some(granted), "{shown}");
    assert_eq!(
        shown["replayed_total"].as_f64(),
        Some(sum(&settled, "hongbao_grants_total", &[("outcome", "replayed")]))
    );
    let by_code = refusals(&settled);
    assert_eq!(by_code.values().sum::<f64>(), 3.0, "{by_code:?}");
    assert_eq!(shown["refused_total"].as_f64(), Some(3.0), "{shown}");
    for (code, count) in &by_code {
        assert_eq!(shown["refusals"][code].as_f64(), Some(*count), "{code}: {shown}");
    }
    assert_eq!(shown["credits_total"].as_f64(), sample(&settled, "hongbao_credits_total", &[]), "{shown}");
    assert_eq!(shown["backlog"].as_f64(), Some(0.0), "{shown}");
    let limited = [("activity", "test-campaign"), ("scene", "limited")];
    assert_eq!(
        shown["scenes"]["test-campaign/limited"]["stock_left"].as_f64(),
        sample(&settled, "hongbao_scene_stock_left", &limited),
        "{shown}"
    );
    assert_eq!(shown["writer_reason"], "uncapped", "{shown}");
    assert!(shown["samples"].as_u64().is_some_and(|samples| samples >= 2), "{shown}");
}
