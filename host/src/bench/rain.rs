//! `hongbao bench rain`: a red packet rain against a running host, over HTTP/1.1 keep-alive.
//!
//! `connections` tasks each hold one connection and send grants back to back: user `1..=users`
//! and rain `0..rains` drawn at random, stage 0, so every (user, rain) pair is one order number
//! and a pair drawn again is a replay. Each answer's latency goes into a log-linear histogram
//! (within 1.6 %); answers are counted by code. A second connection polls `/healthz` once a
//! second for the writer's credits and the crediting backlog. After the rain it waits for the
//! backlog to drain, then checks the books: every grant answered in this run is issued and
//! credited exactly once, and nothing is in flight or reported by reconciliation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::access::client::ClientCredentials;

/// What to rain on, and how hard.
#[derive(Debug, Clone)]
pub struct RainConfig {
    /// `HOST:PORT` of the host.
    pub target: String,
    /// The activity.
    pub activity_id: String,
    /// The scene.
    pub scene_id: String,
    /// The scene's award type.
    pub award_type: String,
    /// An app allowed in the scene.
    pub app_id: i64,
    /// Users drawn from `1..=users`.
    pub users: u64,
    /// Rains drawn from `0..rains`.
    pub rains: u32,
    /// Connections (and tasks) sending at once.
    pub connections: usize,
    /// How long to rain.
    pub duration: Duration,
    /// Stop after this many requests, if sooner.
    pub count: Option<u64>,
    /// Requests per second for the whole run (`None`: as fast as answers come).
    pub rate: Option<u64>,
    /// Show a progress bar on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Wait for the crediting backlog to drain and check the books.
    pub check_books: bool,
    /// First act id; runs against the same host use different ranges so their orders differ.
    pub first_user: i64,
    /// Grants per request: 1 sends `POST /v1/grants`, more send `POST /v1/grants:batch` (an
    /// app backend that aggregates). Latencies are per request.
    pub batch: usize,
    /// What requests are signed with (grants by the app; the books check needs the admin
    /// credential).
    pub credentials: ClientCredentials,
}

/// Figures of one rain.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RainReport {
    /// Requests answered.
    pub requests: u64,
    /// New grants (200, not a replay).
    pub granted: u64,
    /// Replays (200, `replayed: true`).
    pub replayed: u64,
    /// Refusals by code.
    pub rejected: BTreeMap<String, u64>,
    /// Requests with no HTTP answer (connection errors).
    pub transport_errors: u64,
    /// Seconds of rain.
    pub elapsed_s: f64,
    /// New grants per second.
    pub grants_per_s: f64,
    /// Answers per second, whatever the answer.
    pub answers_per_s: f64,
    /// Latency percentiles of all answers, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Ledger credits per second during the rain (the host's writer).
    pub credits_per_s: f64,
    /// The crediting backlog when the rain ended.
    pub backlog_at_end: u64,
    /// Seconds from the end of the rain to an empty backlog (when checked).
    pub drain_s: Option<f64>,
    /// Whether the books agreed (when checked), and what disagreed.
    pub books: Option<BooksCheck>,
}

/// The end-of-rain audit.
#[derive(Debug, Clone, Serialize)]
pub struct BooksCheck {
    /// Everything held.
    pub ok: bool,
    /// Grants of the scene issued during this run, by the store's count.
    pub issued: u64,
    /// Of those, credited in the ledger.
    pub credited: u64,
    /// What did not hold.
    pub problems: Vec<String>,
}

/// A latency histogram: log-linear buckets of 64 per power of two, microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; 64 * 40], total: 0 }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us < 64 {
            return us as usize;
        }
        let exponent = 63 - us.leading_zeros() as usize; // ≥ 6
        let shift = exponent - 5;
        let mantissa = (us >> shift) as usize; // 32..64
        ((exponent - 5) * 32 + mantissa).min(64 * 40 - 1)
    }

    fn value(index: usize) -> u64 {
        if index < 64 {
            return index as u64;
        }
        let shift = index / 32 - 1;
        let mantissa = (index % 32 + 32) as u64;
        // The middle of the bucket.
        (mantissa << shift) + (1 << shift) / 2
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.counts[Self::index(latency.as_micros() as u64)] += 1;
        self.total += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The latency at `quantile` (0..1), in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * quantile).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(index) as f64 / 1000.0;
            }
        }
        0.0
    }
}

/// What one connection task saw.
#[derive(Default)]
struct Tally {
    histogram: Histogram,
    granted: u64,
    replayed: u64,
    rejected: BTreeMap<String, u64>,
    transport_errors: u64,
}

/// One keep-alive HTTP/1.1 connection.
pub(super) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    credentials: ClientCredentials,
}

impl Connection {
    pub(super) async fn open(target: &str, credentials: &ClientCredentials) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(target).await.with_context(|| format!("connecting to {target}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, credentials: credentials.clone() })
    }

    pub(super) async fn send(&mut self, method: &str, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hongbao")
            .header("content-type", "application/json");
        // Every request is signed as an app backend signs it: the cost is part of the figures.
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_secs());
        if let Some(authorization) = self.credentials.authorization(method, path, &body, now_s) {
            request = request.header("authorization", authorization);
        }
        let request = request.body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A GET on a fresh connection, as JSON.
pub async fn get_json(target: &str, credentials: &ClientCredentials, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut connection = Connection::open(target, credentials).await?;
    let (status, body) = connection.send("GET", path, Bytes::new()).await?;
    anyhow::ensure!(status == 200, "GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
    Ok(serde_json::from_slice(&body)?)
}

/// `GET path` as text (the metrics page), authenticated as the route needs.
pub async fn get_text(target: &str, credentials: &ClientCredentials, path: &str) -> anyhow::Result<String> {
    let mut connection = Connection::open(target, credentials).await?;
    let (status, body) = connection.send("GET", path, Bytes::new()).await?;
    anyhow::ensure!(status == 200, "GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The `code` of an error body, found without parsing the whole JSON.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split("\"code\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("unknown").to_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The scene's issued and credited counts from the reconciliation report.
async fn scene_books(config: &RainConfig) -> anyhow::Result<(u64, u64, serde_json::Value)> {
    let report =
        get_json(&config.target, &config.credentials, &format!("/v1/activities/{}/reconciliation", config.activity_id))
            .await?;
    let scene = report["scenes"]
        .as_array()
        .and_then(|scenes| scenes.iter().find(|scene| scene["scene_id"] == config.scene_id.as_str()))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Ok((scene["issued_count"].as_u64().unwrap_or(0), scene["credited_count"].as_u64().unwrap_or(0), scene))
}

/// The counters the connection tasks share with the progress loop.
#[derive(Default)]
struct Shared {
    /// Set when the rain is over.
    stop: AtomicBool,
    /// Requests started (counted only with `count`).
    sent: AtomicU64,
    /// Requests answered.
    answered: AtomicU64,
    /// New grants so far.
    granted: AtomicU64,
}

/// Runs the rain and, when asked, waits for the backlog and checks the books.
pub async fn run(config: &RainConfig) -> anyhow::Result<RainReport> {
    Ok(run_measured(config, async || ()).await?.0)
}

/// [`run`], calling `after_rain` once the rain is over (and, when the books are checked, its
/// backlog drained) and before the books are checked: what it reads of the host is the rain's
/// doing, not the reconciliation's, which reads the whole activity.
pub async fn run_measured<T>(
    config: &RainConfig,
    after_rain: impl AsyncFnOnce() -> T,
) -> anyhow::Result<(RainReport, T)> {
    let (issued_before, credited_before, _) =
        if config.check_books { scene_books(config).await? } else { (0, 0, serde_json::Value::Null) };
    let health_before = get_json(&config.target, &config.credentials, "/healthz").await?;
    let applied_before = health_before["writer"]["applied"].as_u64().unwrap_or(0);

    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let per_connection_interval =
        config.rate.map(|rate| Duration::from_secs_f64(config.connections as f64 / rate.max(1) as f64));
    let tasks: Vec<_> = (0..config.connections)
        .map(|task| tokio::spawn(rain_on_one_connection(task, config.clone(), shared.clone(), per_connection_interval)))
        .collect();
    show_progress_until_done(config, &shared, started, &tasks).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await??);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let health_after = get_json(&config.target, &config.credentials, "/healthz").await?;
    let applied_after = health_after["writer"]["applied"].as_u64().unwrap_or(0);
    let backlog_at_end = health_after["crediting_backlog"].as_u64().unwrap_or(0);
    let requests = tally.histogram.total;
    let mut report = RainReport {
        requests,
        granted: tally.granted,
        replayed: tally.replayed,
        rejected: tally.rejected,
        transport_errors: tally.transport_errors,
        elapsed_s,
        grants_per_s: tally.granted as f64 / elapsed_s,
        answers_per_s: requests as f64 / elapsed_s,
        p50_ms: tally.histogram.quantile_ms(0.50),
        p99_ms: tally.histogram.quantile_ms(0.99),
        p999_ms: tally.histogram.quantile_ms(0.999),
        credits_per_s: applied_after.saturating_sub(applied_before) as f64 / elapsed_s,
        backlog_at_end,
        drain_s: None,
        books: None,
    };
    if config.check_books {
        let drain_started = Instant::now();
        wait_for_empty_backlog(config).await?;
        report.drain_s = Some(drain_started.elapsed().as_secs_f64());
    }
    let measured = after_rain().await;
    if config.check_books {
        report.books = Some(check_books(config, report.granted, (issued_before, credited_before)).await?);
    }
    Ok((report, measured))
}

/// One connection task: grants back to back (or at its share of the rate) until the rain stops
/// or `count` requests were sent, reconnecting after a transport error.
async fn rain_on_one_connection(
    task: usize,
    config: RainConfig,
    shared: Arc<Shared>,
    interval: Option<Duration>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut connection = Connection::open(&config.target, &config.credentials).await?;
    let mut rng = fastrand::Rng::with_seed(task as u64 * 7919 + config.first_user as u64);
    // Paced connections start spread over one interval: started together, they would send in
    // bursts of one request per connection (measured: p50 4 ms at 300 requests/s on 64
    // connections from the queue each burst makes, 0.8 ms on one connection).
    let mut next_send = Instant::now()
        + interval.map_or(Duration::ZERO, |interval| interval.mul_f64(task as f64 / config.connections.max(1) as f64));
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(count) = config.count
            && shared.sent.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        if let Some(interval) = interval {
            next_send += interval;
            let now = Instant::now();
            if next_send > now {
                tokio::time::sleep(next_send - now).await;
            }
        }
        let (path, body) = if config.batch <= 1 {
            ("/v1/grants", grant_json(&config, &mut rng))
        } else {
            let grants: Vec<String> = (0..config.batch).map(|_| grant_json(&config, &mut rng)).collect();
            ("/v1/grants:batch", format!(r#"{{"grants":[{}]}}"#, grants.join(",")))
        };
        let asked = Instant::now();
        match connection.send("POST", path, Bytes::from(body)).await {
            Ok((status, body)) => {
                tally.histogram.record(asked.elapsed());
                shared.answered.fetch_add(1, Ordering::Relaxed);
                let granted_before = tally.granted;
                tally.count_answer(config.batch > 1, status, &body);
                shared.granted.fetch_add(tally.granted - granted_before, Ordering::Relaxed);
            }
            Err(_) => {
                tally.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                match Connection::open(&config.target, &config.credentials).await {
                    Ok(fresh) => connection = fresh,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
    anyhow::Ok(tally)
}

/// One grant request's JSON: a random user and rain, stage 0.
fn grant_json(config: &RainConfig, rng: &mut fastrand::Rng) -> String {
    format!(
        r#"{{"app_id":{},"act_id":{},"activity_id":"{}","scene_id":"{}","rain_id":{},"award_type":"{}","stage":0}}"#,
        config.app_id,
        config.first_user + rng.i64(0..config.users as i64),
        config.activity_id,
        config.scene_id,
        rng.u32(0..config.rains.max(1)),
        config.award_type
    )
}

impl Tally {
    /// Counts one answer: a batch's by its items, a single grant's by its status and body.
    fn count_answer(&mut self, batch: bool, status: u16, body: &[u8]) {
        if batch && status == 200 {
            let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            for item in answer["results"].as_array().into_iter().flatten() {
                if item["status"] != 200 {
                    let code = item["code"].as_str().unwrap_or("unknown").to_owned();
                    *self.rejected.entry(code).or_default() += 1;
                } else if item["grant"]["replayed"] == true {
                    self.replayed += 1;
                } else {
                    self.granted += 1;
                }
            }
        } else if status == 200 {
            if contains(body, b"\"replayed\":true") {
                self.replayed += 1;
            } else {
                self.granted += 1;
            }
        } else {
            *self.rejected.entry(error_code(body)).or_default() += 1;
        }
    }

    /// Adds another connection's tally.
    fn merge(&mut self, other: Tally) {
        self.histogram.merge(&other.histogram);
        self.granted += other.granted;
        self.replayed += other.replayed;
        self.transport_errors += other.transport_errors;
        for (code, count) in other.rejected {
            *self.rejected.entry(code).or_default() += count;
        }
    }
}

/// Waits until the rain is over (its time, its count, or every connection done), showing a
/// progress bar when asked: done so far, grants in the last second, answers, the backlog.
async fn show_progress_until_done(
    config: &RainConfig,
    shared: &Shared,
    started: Instant,
    tasks: &[tokio::task::JoinHandle<anyhow::Result<Tally>>],
) {
    let bar = if config.progress {
        let length = config.count.unwrap_or(config.duration.as_millis() as u64);
        let style = indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("#>.");
        indicatif::ProgressBar::new(length).with_style(style)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut last_granted = 0;
    let mut ticks = 0u64;
    loop {
        let answered = shared.answered.load(Ordering::Relaxed);
        let deadline_hit = started.elapsed() >= config.duration;
        let count_hit = config.count.is_some_and(|count| answered >= count);
        if deadline_hit || count_hit || tasks.iter().all(|task| task.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ticks += 1;
        bar.set_position(if config.count.is_some() { answered } else { started.elapsed().as_millis() as u64 });
        if !bar.is_hidden() && ticks.is_multiple_of(10) {
            let granted = shared.granted.load(Ordering::Relaxed);
            let backlog = get_json(&config.target, &config.credentials, "/healthz")
                .await
                .ok()
                .and_then(|health| health["crediting_backlog"].as_u64())
                .unwrap_or(0);
            bar.set_message(format!(
                "{:>8} grants/s  {answered:>9} answered  backlog {backlog:>9}",
                granted - last_granted
            ));
            last_granted = granted;
        }
    }
    bar.finish_and_clear();
}

/// Polls `/healthz` until the crediting backlog is empty (10 minutes at most).
pub(super) async fn wait_for_empty_backlog(config: &RainConfig) -> anyhow::Result<()> {
    let drain_started = Instant::now();
    loop {
        let health = get_json(&config.target, &config.credentials, "/healthz").await?;
        if health["crediting_backlog"].as_u64() == Some(0) {
            return Ok(());
        }
        anyhow::ensure!(drain_started.elapsed() < Duration::from_secs(600), "the backlog did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The books after the rain: every grant answered was issued and credited once, nothing is in
/// flight and reconciliation found nothing. `before` is the scene's (issued, credited) counts
/// before the rain.
async fn check_books(config: &RainConfig, granted: u64, before: (u64, u64)) -> anyhow::Result<BooksCheck> {
    let (issued, credited, scene) = scene_books(config).await?;
    let issued = issued - before.0;
    let credited = credited - before.1;
    let mut problems = Vec::new();
    if issued != granted {
        problems.push(format!("{granted} grants answered, {issued} issued"));
    }
    if credited != issued {
        problems.push(format!("{issued} issued, {credited} credited"));
    }
    if scene["in_flight_count"].as_u64().unwrap_or(0) != 0 {
        problems.push(format!("{} still in flight", scene["in_flight_count"]));
    }
    if scene["findings"].as_array().is_some_and(|findings| !findings.is_empty()) {
        problems.push(format!("reconciliation findings: {}", scene["findings"]));
    }
    Ok(BooksCheck { ok: problems.is_empty(), issued, credited, problems })
}

/// The report as lines for a terminal.
pub fn summary(report: &RainReport) -> String {
    let mut text = format!(
        "grants/s {:.0} ({} new, {} replays, {} refused, {} transport errors in {:.1} s)\n\
         latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n\
         refusals {:?}\n\
         credits/s during the rain {:.0}, backlog at the end {}",
        report.grants_per_s,
        report.granted,
        report.replayed,
        report.rejected.values().sum::<u64>(),
        report.transport_errors,
        report.elapsed_s,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        report.rejected,
        report.credits_per_s,
        report.backlog_at_end,
    );
    if let Some(drain_s) = report.drain_s {
        text.push_str(&format!(", drained in {drain_s:.1} s"));
    }
    if let Some(books) = &report.books {
        text.push_str(&if books.ok {
            format!("\nbooks ok: {} issued, {} credited exactly once", books.issued, books.credited)
        } else {
            format!("\nBOOKS WRONG: {}", books.problems.join("; "))
        });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the histogram's percentiles are within 3 % of the exact ones over a wide range.
    #[test]
    fn histogram_percentiles_are_close() {
        let mut histogram = Histogram::default();
        let mut exact: Vec<u64> = (1..=100_000).map(|n| n * 7 % 250_000 + 1).collect();
        for us in &exact {
            histogram.record(Duration::from_micros(*us));
        }
        exact.sort_unstable();
        for quantile in [0.5, 0.9, 0.99, 0.999] {
            let want = exact[(exact.len() as f64 * quantile) as usize - 1] as f64 / 1000.0;
            let got = histogram.quantile_ms(quantile);
            assert!((got - want).abs() <= want * 0.03 + 0.002, "q{quantile}: {got} ms, exactly {want} ms");
        }
    }
}
