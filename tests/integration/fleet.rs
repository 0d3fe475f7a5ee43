//! Many hosts on shared backends, and the backends failing under them: three hosts on one Redis
//! Cluster + PostgreSQL with one killed mid-rain, a Redis restart mid-rain, PostgreSQL stopped
//! mid-rain.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backends::{OwnPostgres, OwnRedis};
use crate::deployment::{Backends, Deployment};
use crate::support::{Server, request, wait_for};

/// One activity with a hot scene of `count` grants of 1 cent, and an unlimited scene.
fn fleet_campaign(count: u64) -> String {
    format!(
        r#"
activity:
  id: fleet
  name: Fleet campaign
  budget_cents: 100000000
  award_types:
    - id: cash
      name: Cash
      awards:
        - id: rain-cash
          name: Rain cash
          scenes:
            - id: hot
              name: Hot rain
              app_ids: [1]
              amount:
                kind: fixed
                cents: 1
              inventory:
                count_max: {count}
            - id: open
              name: Open rain
              app_ids: [1]
              amount:
                kind: random
                min_cents: 1
                max_cents: 300
"#
    )
}

fn grant_body(act_id: i64, scene: &str) -> Value {
    json!({"app_id": 1, "act_id": act_id, "activity_id": "fleet", "scene_id": scene, "rain_id": 1,
           "award_type": "cash", "stage": 0})
}

/// One HTTP request; a dead or unreachable server is `None`.
fn try_request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    crate::support::try_request(addr, method, path, body).ok()
}

/// What the clients of a rain were answered: order number → (act id, amount, token).
type Answered = HashMap<String, (i64, i64, String)>;

/// Clients that each ask for one grant per user of their range, going round the hosts, and ask
/// again elsewhere (the same order number) when a host gives no answer or a retryable error.
fn rain(
    hosts: Arc<parking_lot::Mutex<Vec<String>>>,
    users: std::ops::Range<i64>,
    scene: &'static str,
    clients: i64,
    stop: Arc<AtomicBool>,
) -> (Answered, HashMap<String, u64>) {
    let per_client = (users.end - users.start + clients - 1) / clients;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let hosts = hosts.clone();
            let stop = stop.clone();
            let start = users.start + client * per_client;
            let end = (start + per_client).min(users.end);
            std::thread::spawn(move || {
                let mut answered = Answered::new();
                let mut refused: HashMap<String, u64> = HashMap::new();
                let mut turn = client as usize;
                for act_id in start..end {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        assert!(Instant::now() < deadline, "user {act_id} got no answer for a minute");
                        if stop.load(Ordering::Relaxed) {
                            return (answered, refused);
                        }
                        let addr = {
                            let hosts = hosts.lock();
                            turn += 1;
                            hosts[turn % hosts.len()].clone()
                        };
                        match try_request(&addr, "POST", "/v1/grants", Some(&grant_body(act_id, scene))) {
                            Some((200, body)) => {
                                let order = body["order_no"].as_str().unwrap().to_owned();
                                let amount = body["amount_cents"].as_i64().unwrap();
                                let token = body["token"].as_str().unwrap().to_owned();
                                if let Some((_, earlier, _)) = answered.get(&order) {
                                    assert_eq!(*earlier, amount, "order {order} answered with two amounts");
                                }
                                answered.insert(order, (act_id, amount, token));
                                break;
                            }
                            Some((409, body)) => {
                                *refused.entry(body["code"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
                                break;
                            }
                            // 503: a backend is away; no answer: the host is gone. Ask again.
                            Some((503, _)) | None => std::thread::sleep(Duration::from_millis(20)),
                            Some((status, body)) => panic!("unexpected answer {status}: {body}"),
                        }
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    let mut answered = Answered::new();
    let mut refused: HashMap<String, u64> = HashMap::new();
    for thread in threads {
        let (some, codes) = thread.join().unwrap();
        answered.extend(some);
        for (code, n) in codes {
            *refused.entry(code).or_default() += n;
        }
    }
    (answered, refused)
}

/// Waits until the fleet's crediting backlog is empty, as `addr` sees it.
fn wait_drained(addr: &str, timeout: Duration) {
    wait_for(timeout, || {
        let (status, health) = try_request(addr, "GET", "/healthz", None)?;
        (status == 200 && health["crediting_backlog"] == 0).then_some(())
    });
}

/// Checks every answered grant is credited exactly once: each user's credited money is exactly
/// what they were answered, nothing is pending, and the books have one entry per order.
fn assert_credited_once(addr: &str, answered: &Answered) {
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    for (act_id, amount, _) in answered.values() {
        *per_user.entry(*act_id).or_default() += amount;
    }
    for (act_id, amount) in &per_user {
        // A host that saw the ledger fail answers degraded for up to a second after (its breaker);
        // the books are checked on a whole answer.
        let wallet = wait_for(Duration::from_secs(30), || {
            let (status, wallet) = request(addr, "GET", &format!("/v1/wallets/{act_id}"), None);
            assert_eq!(status, 200, "{wallet}");
            wallet.get("degraded").is_none().then_some(wallet)
        });
        assert_eq!(wallet["credited_cents"].as_i64(), Some(*amount), "user {act_id}: {wallet}");
        assert_eq!(wallet["pending_cents"].as_i64(), Some(0), "user {act_id}: {wallet}");
        assert_eq!(wallet["total_income_cents"].as_i64(), Some(*amount), "user {act_id}: {wallet}");
    }
}

/// A TCP relay to `upstream` that can be paused: while paused it forwards nothing, so a host
/// talking through it hangs mid-operation, as it would on a network that stopped answering.
struct PausableRelay {
    addr: String,
    paused: Arc<AtomicBool>,
}

impl PausableRelay {
    fn start(upstream: &str) -> PausableRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let paused = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let relay_paused = paused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let paused = relay_paused.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read as _, Write as _};
                        let mut buffer = [0_u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 {
                                break;
                            }
                            while paused.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        PausableRelay { addr, paused }
    }
}

/// How long a test waits for something it polls for: far longer than it takes on a loaded
/// machine, so only a real failure runs into it.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// The fleet's crediting backlog as `addr` sees it, if it answers.
fn backlog(addr: &str) -> Option<u64> {
    let (status, health) = try_request(addr, "GET", "/healthz", None)?;
    (status == 200).then(|| health["crediting_backlog"].as_u64()).flatten()
}

/// Crediting-queue entries claimed by some writer and not yet finished, over every shard.
fn pending_claims(backends: &Backends) -> u64 {
    claims_idle_at_least(backends, 0)
}

/// [`pending_claims`] that no writer has touched for `idle_ms`: a writer stuck on its ledger
/// holds them, a working one finishes its batch in milliseconds.
fn claims_idle_at_least(backends: &Backends, idle_ms: u64) -> u64 {
    let url = backends.store_url.as_deref().unwrap();
    let nodes = hongbao::store::cluster_nodes(url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = redis::cluster::ClusterClient::new(nodes).unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        let mut pending = 0;
        for shard in 0..16 {
            let key = format!("{}:{{{shard}}}:q", backends.prefix);
            let entries: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg(&key)
                .arg("writers")
                .arg("IDLE")
                .arg(idle_ms)
                .arg("-")
                .arg("+")
                .arg(100_000)
                .query_async(&mut conn)
                .await
                .unwrap();
            pending += entries.len() as u64;
        }
        pending
    })
}

/// When the ledger committed each credit, in order, read from every ledger shard's database.
fn credit_times_ms(backends: &Backends) -> Vec<i64> {
    let mut times = Vec::new();
    for ledger_url in backends.ledger_databases() {
        let output = std::process::Command::new("psql")
            .args([ledger_url.as_str(), "-At", "-c"])
            .arg("select (extract(epoch from credited_at) * 1000)::bigint from entries where kind = 1 order by 1")
            .output()
            .expect("running psql");
        assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        times.extend(text.lines().map(|line| line.trim().parse::<i64>().unwrap()));
    }
    times.sort_unstable();
    times
}

// Proves the fleet: three hosts on one Redis Cluster + PostgreSQL take a rain of 3,000 users on
// a hot scene of 2,000 grants while one host is killed with `kill -9`; exactly 2,000 are granted
// (never more), every answered grant is credited exactly once, the killed host's claimed work
// is finished by the others, and no second of the ledger's commits holds more than the
// fleet-wide cap.
#[test]
fn three_hosts_share_a_hot_scene_and_survive_a_kill_9() {
    let stock = 2_000;
    let cap = 400;
    let mut backends = Deployment::Cluster.backends();
    // Long enough that the killed host's claims are still its own when the test looks.
    backends.reclaim_after_ms = 2_000;
    let campaign = fleet_campaign(stock);
    let files = [("fleet.yaml", campaign.as_str())];
    let args = ["--credits-per-second", "400", "--credit-batch", "25"];
    let first = Server::start_with_on(&backends, &files, None, &args);
    let second = Server::start_with_on(&backends, &files, Some(&first), &args);
    // The third host reaches PostgreSQL through a relay the test can pause, so that it can be
    // killed while it holds a claimed batch.
    let ledger_url = backends.ledger_url.clone().unwrap();
    let ledger_host = ledger_url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let relay = PausableRelay::start(&ledger_host);
    let mut third_backends = backends.clone();
    third_backends.ledger_url = Some(ledger_url.replace(&ledger_host, &relay.addr));
    let mut third = Server::start_with_on(&third_backends, &files, Some(&first), &args);
    let hosts = Arc::new(parking_lot::Mutex::new(vec![first.addr.clone(), second.addr.clone(), third.addr.clone()]));
    let stop = Arc::new(AtomicBool::new(false));
    let rain_hosts = hosts.clone();
    let rain_stop = stop.clone();
    let rain = std::thread::spawn(move || rain(rain_hosts, 1..3_001, "hot", 12, rain_stop));
    // Kill a host while its writer holds claims: its ledger stops answering mid-rain, its writer
    // claims a batch and waits on it; then `kill -9`. Each step waits for its condition, not a
    // time: there is a backlog to claim, then claims have sat untouched for 300 ms (the stuck
    // host's; the reclaim after 2 s would hand them to another host).
    wait_for(WAIT_LIMIT, || backlog(&first.addr).is_some_and(|n| n > 0).then_some(()));
    relay.paused.store(true, Ordering::Relaxed);
    wait_for(WAIT_LIMIT, || (claims_idle_at_least(&backends, 300) > 0).then_some(()));
    third.kill9();
    hosts.lock().retain(|addr| *addr != third.addr);
    let orphaned = pending_claims(&backends);
    assert!(orphaned > 0, "the killed host held no claimed work");
    let (answered, refused) = rain.join().unwrap();
    assert_eq!(answered.len() as u64, stock, "granted {} of a stock of {stock}; refused {refused:?}", answered.len());
    assert_eq!(refused.get("out_of_stock").copied().unwrap_or(0), 3_000 - stock, "{refused:?}");

    wait_drained(&first.addr, WAIT_LIMIT);
    assert_eq!(pending_claims(&backends), 0, "claims left behind after the backlog drained");
    assert_credited_once(&first.addr, &answered);

    // The cap: in no window of one second did the ledger commit more than the cap, although each
    // host's payment steward adapted on its own (the paused host's batches failed and it backed off).
    let times = credit_times_ms(&backends);
    assert_eq!(times.len() as u64, stock);
    let mut busiest = 0;
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < start + 1_000).count();
        busiest = busiest.max(in_window);
    }
    assert!(busiest <= cap, "{busiest} credits committed within one second; the fleet's cap is {cap}");
    // And the fleet did work at the cap: 2,000 credits took at least four seconds.
    let span_ms = times.last().unwrap() - times.first().unwrap();
    assert!(span_ms >= 4_000, "2,000 credits in {span_ms} ms at a cap of {cap}/s");
    stop.store(true, Ordering::Relaxed);
}

// Proves a Redis restart mid-rain loses no money: the store loses every token, clients keep
// asking (a retryable 503 while Redis is away), then restore the tokens they hold, and every
// answered grant ends up credited exactly once.
#[test]
fn redis_restart_mid_rain_then_restore_credits_every_answered_grant_once() {
    let mut redis = OwnRedis::start();
    let backends = Backends {
        store_url: Some(redis.url()),
        prefix: crate::backends::unique_prefix(),
        ledger_url: Some(crate::backends::fresh_database_url()),
        reclaim_after_ms: 300,
    };
    let campaign = fleet_campaign(1_000_000);
    let files = [("fleet.yaml", campaign.as_str())];
    // A slow writer, so that many tokens are pending (held only in Redis) when it restarts.
    let server = Server::start_with_on(&backends, &files, None, &["--credits-per-second", "200"]);
    let hosts = Arc::new(parking_lot::Mutex::new(vec![server.addr.clone()]));
    let stop = Arc::new(AtomicBool::new(false));
    let rain_hosts = hosts.clone();
    let rain_stop = stop.clone();
    let rain = std::thread::spawn(move || rain(rain_hosts, 1..1_501, "open", 6, rain_stop));
    // Restart once many tokens are pending, held only in Redis, however long the rain took to
    // get there.
    wait_for(WAIT_LIMIT, || backlog(&server.addr).is_some_and(|n| n >= 50).then_some(()));
    redis.restart();
    let (answered, refused) = rain.join().unwrap();
    assert_eq!(answered.len(), 1_500, "refused: {refused:?}");

    // Each client restores the tokens it holds.
    let mut tokens: HashMap<i64, Vec<String>> = HashMap::new();
    for (act_id, _, token) in answered.values() {
        tokens.entry(*act_id).or_default().push(token.clone());
    }
    let mut restored = 0;
    for (act_id, held) in &tokens {
        let path = format!("/v1/wallets/{act_id}/tokens:restore");
        // A client asks again after a retryable error, as it would for a grant.
        let body = wait_for(Duration::from_secs(30), || {
            let (status, body) = server.post(&path, &json!({ "tokens": held }));
            assert!(status == 200 || status == 503, "{status}: {body}");
            (status == 200).then_some(body)
        });
        for result in body["results"].as_array().unwrap() {
            let result = result["result"].as_str().unwrap();
            assert_ne!(result, "rejected", "{body}");
            restored += usize::from(result == "restored");
        }
    }
    assert!(restored > 0, "no token was lost with Redis: the restart did not land mid-rain");
    wait_drained(&server.addr, WAIT_LIMIT);
    assert_credited_once(&server.addr, &answered);
}

// Proves PostgreSQL stopped mid-rain costs nothing: grants keep succeeding while it is down,
// the writer backs off, and once it is back the backlog drains with every answered grant
// credited exactly once.
#[test]
fn postgres_stopped_mid_rain_grants_go_on_and_the_backlog_drains() {
    let mut postgres = OwnPostgres::start();
    let backends = Backends {
        store_url: Some(crate::backends::shared_redis_url()),
        prefix: crate::backends::unique_prefix(),
        ledger_url: Some(postgres.url()),
        reclaim_after_ms: 300,
    };
    let campaign = fleet_campaign(1_000_000);
    let files = [("fleet.yaml", campaign.as_str())];
    let server = Server::start_with_on(&backends, &files, None, &[]);
    let hosts = Arc::new(parking_lot::Mutex::new(vec![server.addr.clone()]));
    let stop = Arc::new(AtomicBool::new(false));
    let first = rain(hosts.clone(), 1..301, "open", 4, stop.clone()).0;
    postgres.stop();
    // While the ledger is down: every grant is answered, none refused.
    let (during, refused) = rain(hosts.clone(), 301..1_301, "open", 4, stop.clone());
    assert_eq!((during.len(), refused.len()), (1_000, 0), "refused: {refused:?}");
    let (_, health) = server.get("/healthz");
    assert!(health["crediting_backlog"].as_u64().unwrap() > 0, "{health}");
    // The writer notices on its next try, which a loaded machine may not have made yet.
    wait_for(WAIT_LIMIT, || {
        let (_, health) = server.get("/healthz");
        (health["writer"]["failures"].as_u64().unwrap() > 0).then_some(())
    });
    postgres.start_again();
    wait_drained(&server.addr, WAIT_LIMIT);
    let mut answered = first;
    answered.extend(during);
    assert_credited_once(&server.addr, &answered);
}
