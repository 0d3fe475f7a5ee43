//! The payment steward end to end: a real host crediting into a PostgreSQL ledger that is slowed
//! on purpose (its back-off and recovery on a hand-moved clock are unit tests in
//! `host/src/writer/steward.rs`).

use std::time::Duration;

use crate::backends::pg_query;
use crate::deployment::Deployment;
use crate::metrics::{page, sample};
use crate::support::{Server, wait_for};

/// The cap the test host credits under.
const CAP: f64 = 1_000.0;

/// Makes every statement that inserts ledger entries sleep: each credit batch takes 0.3 s longer.
const SLOW_LEDGER: &str = "
    CREATE FUNCTION hb_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
    CREATE TRIGGER hb_test_slow AFTER INSERT ON entries FOR EACH STATEMENT EXECUTE FUNCTION hb_test_slow();";

const HEALTHY_LEDGER: &str = "DROP TRIGGER hb_test_slow ON entries; DROP FUNCTION hb_test_slow();";

/// The limit's reason on a metrics page.
fn reason(page: &str) -> String {
    ["cap", "adaptive", "backing_off", "uncapped"]
        .into_iter()
        .find(|reason| sample(page, "hongbao_writer_limit_credits_per_second", &[("reason", reason)]).is_some())
        .expect("a writer limit")
        .to_owned()
}

fn limit(page: &str) -> f64 {
    sample(page, "hongbao_writer_limit_credits_per_second", &[]).expect("a writer limit")
}

// Proves the writer lowers its limit below the cap when ledger batches slow down (a trigger that
// sleeps in PostgreSQL), says so on /metrics, climbs back to the cap once the ledger is healthy
// again, and credits every token exactly once throughout.
#[test]
fn the_writer_backs_off_from_a_slow_ledger_and_climbs_back() {
    let backends = Deployment::Redis.backends();
    let database = backends.ledger_databases()[0].clone();
    let server = Server::start_on(&backends, &["--credits-per-second", "1000", "--credit-batch", "8"]);
    let mut next_user = 9_100;
    let mut grant = |server: &Server| {
        server.grant_rain(next_user, 1, 0);
        next_user += 1;
    };
    // The ledger's usual pace: the steward learns its batch times.
    for _ in 0..40 {
        grant(&server);
    }
    // At the cap before the slowdown: a busy machine may have made the steward back off while it
    // learnt, and a few healthy batches bring it back.
    let mut polls = 0u64;
    let before = wait_for(Duration::from_secs(120), || {
        polls += 1;
        if polls.is_multiple_of(25) {
            grant(&server);
        }
        let now = page(&server);
        (reason(&now) == "cap").then_some(now)
    });
    assert_eq!(limit(&before), CAP, "{before}");
    let backoffs_before = sample(&before, "hongbao_writer_backoffs_total", &[]).expect("a back-off count");

    pg_query(&database, SLOW_LEDGER).expect("slowing the ledger");
    let mut polls = 0u64;
    let slowed = wait_for(Duration::from_secs(120), || {
        polls += 1;
        if polls.is_multiple_of(5) {
            grant(&server);
        }
        let now = page(&server);
        let backoffs = sample(&now, "hongbao_writer_backoffs_total", &[]).unwrap_or(0.0);
        (backoffs > backoffs_before).then_some(now)
    });
    // Climbing back to the cap takes seconds (a tenth of the cap a second); the first back-off
    // is seen within a poll.
    assert_ne!(reason(&slowed), "cap", "{slowed}");
    assert!(limit(&slowed) < CAP, "{slowed}");

    pg_query(&database, HEALTHY_LEDGER).expect("healing the ledger");
    let mut polls = 0u64;
    let recovered = wait_for(Duration::from_secs(180), || {
        polls += 1;
        if polls.is_multiple_of(5) {
            grant(&server);
        }
        let now = page(&server);
        (reason(&now) == "cap").then_some(now)
    });
    assert_eq!(limit(&recovered), CAP, "{recovered}");

    // Every token credited once: the books show as many credited as issued, and no finding.
    let granted = next_user - 9_100;
    wait_for(Duration::from_secs(120), || {
        let (_, books) = server.get("/v1/activities/test-campaign/reconciliation");
        let rain = books["scenes"].as_array()?.iter().find(|scene| scene["scene_id"] == "rain")?.clone();
        (rain["credited_count"] == granted && rain["issued_count"] == granted).then_some(())
    });
    let (_, books) = server.get("/v1/activities/test-campaign/reconciliation");
    let rain = books["scenes"].as_array().unwrap().iter().find(|scene| scene["scene_id"] == "rain").unwrap();
    assert_eq!(rain["findings"].as_array().map(Vec::len), Some(0), "{books}");
    assert_eq!(rain["credited_cents"], rain["issued_cents"], "{books}");
}
