//! `kill -9` in the middle of a stream of grants.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::deployment::{Deployment, conformance};
use crate::support::{Server, grant_body, request, wait_for};

/// Grants answered before the kill: enough that the slow writer has not credited them all.
const ANSWERED_BEFORE_KILL_MIN: usize = 200;

// Proves that killing the server mid-stream loses no answered grant and credits none twice:
// after a restart every answered grant is credited exactly once.
conformance!(kill_9_mid_stream_loses_no_answered_grant);
fn kill_9_mid_stream_loses_no_answered_grant(deployment: Deployment) {
    let backends = deployment.backends();
    // A slow writer, so that the kill lands with tokens in every state.
    let mut server = Server::start_on(&backends, &["--credits-per-second", "300", "--credit-batch", "16"]);
    let addr = server.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let answered_count = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let addr = addr.clone();
            let stop = stop.clone();
            let answered_count = answered_count.clone();
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                for n in 0..100_000i64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let act_id = 100_000 + client * 1_000_000 + n;
                    let outcome = std::panic::catch_unwind(|| {
                        request(&addr, "POST", "/v1/grants", Some(&grant_body(act_id, "rain", 1, 0)))
                    });
                    match outcome {
                        Ok((200, body)) => {
                            answered.push((act_id, body["amount_cents"].as_i64().unwrap()));
                            answered_count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break, // the server died under this request: its outcome is unknown
                    }
                }
                answered
            })
        })
        .collect();
    // The kill lands after a second and a half of the stream and a number of answers, whichever
    // comes later: a loaded machine answers fewer grants in that time.
    let started = Instant::now();
    wait_for(Duration::from_secs(60), || {
        let enough = answered_count.load(Ordering::Relaxed) >= ANSWERED_BEFORE_KILL_MIN;
        (enough && started.elapsed() >= Duration::from_millis(1500)).then_some(())
    });
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<(i64, i64)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(answered.len() > 50, "only {} grants answered before the kill", answered.len());

    server.launch(&[]);
    for (act_id, amount) in &answered {
        let wallet = server.wait_credited(*act_id);
        assert_eq!(wallet["credited_cents"].as_i64(), Some(*amount), "user {act_id}: {wallet}");
        assert_eq!(wallet["total_income_cents"].as_i64(), Some(*amount), "user {act_id}: {wallet}");
    }
    let (_, books) = server.get("/v1/activities/test-campaign/reconciliation");
    let rain = books["scenes"].as_array().unwrap().iter().find(|s| s["scene_id"] == "rain").unwrap().clone();
    assert!(rain["issued_count"].as_u64().unwrap() >= answered.len() as u64);
    assert_eq!(rain["credited_count"], rain["issued_count"], "{rain}");
    assert_eq!(rain["findings"], serde_json::json!([]), "{rain}");
}
