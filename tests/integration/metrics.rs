//! Observability: `GET /metrics` follows what the host answered, and only the admin reads it
//! (the refusals are in `access.rs`, with every admin route); every answer names its request.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::deployment::{Deployment, conformance};
use crate::support::{Server, grant_body, wait_for};

/// The metrics page as the admin reads it.
pub fn page(server: &Server) -> String {
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    body.as_str().expect("a text page").to_owned()
}

/// The value of the sample `name` whose labels include every one of `labels`, if there is one.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        let matches = series_name == name
            && labels.iter().all(|(label, text)| series_labels.contains(&format!("{label}=\"{text}\"")));
        matches.then(|| value.parse().expect("a number"))
    })
}

fn grants(page: &str, scene: &str, outcome: &str) -> f64 {
    sample(page, "hongbao_grants_total", &[("activity", "test-campaign"), ("scene", scene), ("outcome", outcome)])
        .unwrap_or(0.0)
}

// Proves the grant counters count every answer by scene and outcome (a replay as `replayed`, a
// grant to a scene that does not exist under scene ""), the request histograms count requests,
// the backlog returns to 0 while the credits count what the writer wrote, and stock and budget
// left go down by what was granted.
conformance!(metrics_follow_the_grants);
fn metrics_follow_the_grants(deployment: Deployment) {
    // Fixed rate: the writer's limit is asserted below, and a busy machine must not move it.
    let server = Server::start_on(&deployment.backends(), &["--fixed-rate"]);
    let before = page(&server);
    assert_eq!(grants(&before, "rain", "granted"), 0.0, "{before}");
    let mut cents = 0;
    for user in 0..12 {
        cents += server.grant_rain(7100 + user, 1, 0)["amount_cents"].as_i64().expect("cents");
    }
    let replay = server.grant_rain(7100, 1, 0);
    assert_eq!(replay["replayed"], true, "{replay}");
    let (status, unknown) = server.post("/v1/grants", &grant_body(7200, "no-such-scene", 1, 0));
    assert_eq!(status, 404, "{unknown}");
    let unknown_code = unknown["code"].as_str().expect("a code");
    let batch = json!({ "grants": [grant_body(7300, "rain", 1, 0), grant_body(7301, "rain", 1, 0), grant_body(7302, "rain", 1, 0)] });
    let (status, answer) = server.post("/v1/grants:batch", &batch);
    assert_eq!(status, 200, "{answer}");
    for item in answer["results"].as_array().expect("results") {
        cents += item["grant"]["amount_cents"].as_i64().expect("granted");
    }
    let (status, limited) = server.post("/v1/grants", &grant_body(7400, "limited", 1, 0));
    assert_eq!(status, 200, "{limited}");
    cents += limited["amount_cents"].as_i64().expect("cents");

    // The writer credits in the background: the page follows until the backlog is empty and
    // the writer has counted its batches (it counts them just after the queue lets them go).
    let settled = wait_for(Duration::from_secs(60), || {
        let now = page(&server);
        let drained = sample(&now, "hongbao_crediting_backlog", &[]) == Some(0.0);
        let counted = sample(&now, "hongbao_credits_total", &[]).is_some_and(|credits| credits >= 16.0);
        (drained && counted).then_some(now)
    });
    assert_eq!(grants(&settled, "rain", "granted"), 15.0, "{settled}");
    assert_eq!(grants(&settled, "rain", "replayed"), 1.0, "{settled}");
    let unknown_scene = [("activity", ""), ("scene", ""), ("outcome", unknown_code)];
    assert_eq!(sample(&settled, "hongbao_grants_total", &unknown_scene), Some(1.0), "{settled}");
    assert!(!settled.contains("no-such-scene"), "a scene that does not exist gets no series");
    let requests = |kind: &str| sample(&settled, "hongbao_grant_request_duration_seconds_count", &[("kind", kind)]);
    assert_eq!(requests("single"), Some(15.0), "{settled}");
    assert_eq!(requests("batch"), Some(1.0), "{settled}");
    let inf = sample(&settled, "hongbao_grant_request_duration_seconds_bucket", &[("kind", "single"), ("le", "+Inf")]);
    assert_eq!(inf, Some(15.0), "{settled}");
    let credits = sample(&settled, "hongbao_credits_total", &[]).expect("credits");
    assert!(credits >= 16.0, "every granted token credited by this host's writer: {credits}");
    // Stock and budget left follow the grants: the fixture's budget is 1,000,000.00, `limited`
    // may grant 3.
    let limited = [("activity", "test-campaign"), ("scene", "limited")];
    assert_eq!(sample(&settled, "hongbao_scene_stock_left", &limited), Some(2.0), "{settled}");
    let budget_left = sample(&settled, "hongbao_activity_budget_left_cents", &[("activity", "test-campaign")]);
    assert_eq!(budget_left, Some((100_000_000 - cents) as f64), "{settled}");
    assert!(sample(&settled, "hongbao_ledger_batch_duration_seconds_count", &[]).is_some_and(|count| count >= 1.0));
    assert_eq!(
        sample(&settled, "hongbao_writer_limit_credits_per_second", &[("reason", "uncapped")]),
        Some(f64::INFINITY)
    );
    assert!(sample(&settled, "process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 0.0), "{settled}");
    // The allocator's bytes in use: some, and no more than the process holds (jemalloc).
    let heap = sample(&settled, "hongbao_heap_in_use_bytes", &[]);
    let resident = sample(&settled, "process_resident_memory_bytes", &[]).unwrap_or(0.0);
    assert!(heap.is_some_and(|bytes| bytes > 0.0 && bytes < resident * 2.0), "{settled}");
    let store_grants = sample(&settled, "hongbao_store_operation_duration_seconds_count", &[("op", "grant")]);
    assert!(store_grants.is_some_and(|count| count >= 16.0), "every new grant committed: {settled}");
    assert_eq!(sample(&settled, "hongbao_store_operation_errors_total", &[("op", "grant")]), Some(0.0));
    // An embedded host's journals sync before answering: the grants' and the credits' syncs are
    // timed. On Redis and PostgreSQL no embedded journal syncs, and the series stay at 0.
    let syncs = |journal: &str| {
        sample(&settled, "hongbao_journal_sync_duration_seconds_count", &[("journal", journal)]).expect("a series")
    };
    if deployment == Deployment::Embedded {
        assert!(syncs("store") >= 1.0 && syncs("ledger") >= 1.0, "{settled}");
    } else {
        assert_eq!((syncs("store"), syncs("ledger")), (0.0, 0.0), "{settled}");
    }
    assert_eq!(sample(&settled, "hongbao_forgery_watch_events_total", &[("event", "restore_failed")]), Some(0.0));
}

// Proves the writer's cap shows as its limit.
#[test]
fn the_writer_limit_shows_the_cap() {
    let server = Server::start(&["--credits-per-second", "250"]);
    let now = page(&server);
    assert_eq!(sample(&now, "hongbao_writer_limit_credits_per_second", &[("reason", "cap")]), Some(250.0), "{now}");
}

/// The `x-request-id` of the answer to `GET /healthz` sent with `header` (a whole header line).
fn answered_request_id(addr: &str, header: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /healthz HTTP/1.1\r\nhost: {addr}\r\n{header}connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, _) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    head.lines().find_map(|line| line.strip_prefix("x-request-id: ").map(str::to_owned))
}

// Proves every answer carries a request id: the client's when well formed, a fresh one per
// request otherwise.
#[test]
fn every_answer_names_its_request() {
    let server = Server::start(&[]);
    assert_eq!(answered_request_id(&server.addr, "x-request-id: shop-42.a\r\n").as_deref(), Some("shop-42.a"));
    let fresh = answered_request_id(&server.addr, "").expect("an id");
    let other = answered_request_id(&server.addr, "x-request-id: not well formed!\r\n").expect("an id");
    assert_ne!(fresh, other);
    assert!(!other.contains(' '), "{other}");
}
