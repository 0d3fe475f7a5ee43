//! `hongbao bench suite` (what `just bench` runs): starts hosts of its own, rains on them, takes
//! the yardsticks in the same run, and writes the figures into `BENCHMARKS.md`.
//!
//! Runs: the embedded deployment with the reference plugins on (as fast as it goes, then paced
//! at half the rate it reached, for the p99 a host sees with headroom); the hello-world, signing
//! and disk-sync yardsticks; and, when a Redis and a PostgreSQL are given, the token design
//! against the synchronous design on the same database, the ledger writer draining a backlog
//! into PostgreSQL uncapped and capped, and Redis memory per pending token.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::grabs::{self, GrabConfig, GrabReport};
use super::histogram::HistogramDelta;
use super::rain::{self, RainConfig, RainReport};
use super::yardstick;
use crate::access::apps::{ALL_ACTIVITIES, Apps};
use crate::access::client::ClientCredentials;

/// What the suite needs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Seconds per rain.
    pub duration_s: u64,
    /// Connections per rain.
    pub connections: usize,
    /// Where the reference plugins are built (`plugins/target/wasm32-wasip2/release`).
    pub plugins_dir: PathBuf,
    /// A Redis for the production runs.
    pub redis_url: Option<String>,
    /// A PostgreSQL database for the production runs.
    pub database_url: Option<String>,
    /// The file to write (`BENCHMARKS.md`), between its rain markers.
    pub out: PathBuf,
    /// One part to run alone, printing its figures and writing nothing (`embedded`, `retention`,
    /// `steward`, `writer`).
    pub only: Option<String>,
}

/// A `hongbao serve` of the suite's own.
pub(super) struct Host {
    child: Child,
    pub(super) addr: String,
    /// The bench app's credential and the admin credential, from the host's data directory.
    pub(super) credentials: ClientCredentials,
    _dir: PathBuf,
}

/// How long a host of the suite's may take to compile its plugins.
pub(super) const PLUGINS_READY_LIMIT: Duration = Duration::from_secs(300);

impl Host {
    /// The host's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bytes the host's allocator has handed out (`hongbao_heap_in_use_bytes`), where it
    /// tells (jemalloc).
    async fn heap_in_use(&self) -> Option<u64> {
        let page = rain::get_text(&self.addr, &self.credentials, "/metrics").await.ok()?;
        page.lines()
            .find_map(|line| line.strip_prefix("hongbao_heap_in_use_bytes ")?.trim().parse::<f64>().ok())
            .map(|bytes| bytes as u64)
    }

    /// The host's resident memory (`VmRSS`), where `/proc` tells.
    fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Waits until the host has compiled its plugins (`plugins_warming` 0 on `/healthz`), so that
    /// no rain meets `plugin_warming` refusals on a machine whose compile cache is cold.
    pub(super) async fn ready(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let health = rain::get_json(&self.addr, &self.credentials, "/healthz").await;
            if let Ok(health) = &health
                && health["plugins_warming"].as_u64() == Some(0)
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                anyhow::bail!("the host did not compile its plugins within {limit:?}: {health:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn sha256_hex(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {} (build it with `just plugins`)", path.display()))?;
    Ok(sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// The bench campaign: one rain scene shaped like the example campaign's eve-rain (random
/// amounts, bill copy, inventory and compensation plugins), with stock for any run.
fn campaign(activity: &str, plugins: &Path) -> anyhow::Result<String> {
    let plugins = &plugins
        .canonicalize()
        .with_context(|| format!("{} is missing: build the plugins with `just plugins`", plugins.display()))?;
    let plugin = |capability: &str, file: &str| -> anyhow::Result<String> {
        let path = plugins.join(file);
        Ok(format!(
            "                {capability}:\n                  path: {}\n                  sha256: {}\n                  on_failure: builtin\n",
            path.display(),
            sha256_hex(&path)?
        ))
    };
    Ok(format!(
        r#"activity:
  id: {activity}
  name: Bench
  budget_cents: 900000000000000
  award_types:
    - id: cash
      name: Cash
      awards:
        - id: rain-cash
          name: Rain cash
          scenes:
            - id: rain
              name: Bench rain
              app_ids: [1128]
              amount:
                kind: random
                min_cents: 1
                max_cents: 888
              bill_copy:
                default_locale: zh-CN
                templates:
                  zh-CN: "红包雨第{{rain_id}}场 获得{{amount_yuan}}元"
              inventory:
                count_max: 1000000000000
                budget_cents: 900000000000000
              reconciliation:
                tolerance_cents: 0
              plugins:
{}{}{}"#,
        plugin("bill_copy", "hb_bill_copy.wasm")?,
        plugin("inventory", "hb_inventory.wasm")?,
        plugin("compensation", "hb_compensation.wasm")?,
    ))
}

pub(super) fn start_host(activity: &str, plugins: &Path, args: &[String]) -> anyhow::Result<Host> {
    start_host_under(activity, plugins, args, &[])
}

/// [`start_host`] run by `wrapper` (a program and its arguments, given the host's command line
/// after them: `valgrind --tool=callgrind …`); the host's pid is the wrapper's.
pub(super) fn start_host_under(
    activity: &str,
    plugins: &Path,
    args: &[String],
    wrapper: &[String],
) -> anyhow::Result<Host> {
    let dir = std::env::temp_dir().join(format!("hongbao-bench-{}-{activity}", std::process::id()));
    let scenes = dir.join("scenes");
    std::fs::create_dir_all(&scenes)?;
    std::fs::write(scenes.join("bench.yaml"), campaign(activity, plugins)?)?;
    let data = dir.join("data");
    let mut apps = Apps::load(&data)?;
    if apps.apps.is_empty() {
        apps.add(BENCH_APP, "bench", vec![ALL_ACTIVITIES.into()], 0)?;
        apps.save(&data)?;
    }
    let exe = std::env::current_exe()?;
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(&exe);
            command
        }
        None => Command::new(&exe),
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--scenes"])
        .arg(&scenes)
        .arg("--data")
        .arg(dir.join("data"))
        .args(args)
        .env("HONGBAO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().context("the host exited before listening")??;
    let addr = line.rsplit("http://").next().unwrap_or_default().trim().to_owned();
    std::thread::spawn(move || for _ in lines {});
    let credentials = ClientCredentials::load(&data, Some(BENCH_APP))?;
    Ok(Host { child, addr, credentials, _dir: dir })
}

/// The app the suite's requests come from.
pub(super) const BENCH_APP: i64 = 1128;

pub(super) fn rain_config(host: &Host, activity: &str, config: &SuiteConfig, first_user: i64) -> RainConfig {
    RainConfig {
        target: host.addr.clone(),
        credentials: host.credentials.clone(),
        activity_id: activity.into(),
        scene_id: "rain".into(),
        award_type: "cash".into(),
        app_id: BENCH_APP,
        users: 10_000_000,
        rains: 10,
        connections: config.connections,
        duration: Duration::from_secs(config.duration_s),
        count: None,
        rate: None,
        progress: true,
        check_books: true,
        first_user,
        batch: 1,
    }
}

/// A grab rain on `host`: packets of the most shares one packet may have, one after the other,
/// grabbed by the suite's connections; senders (and their grabbers) numbered from `sender`.
fn grab_config(host: &Host, activity: &str, config: &SuiteConfig, sender: i64) -> GrabConfig {
    GrabConfig {
        target: host.addr.clone(),
        credentials: host.credentials.clone(),
        app_id: BENCH_APP,
        funding: (activity.into(), "rain".into(), "cash".into()),
        packets: SUITE_GRAB_PACKETS,
        shares: crate::packet::PACKET_SHARES_MAX,
        connections: config.connections,
        sender,
    }
}

/// Hot packets per grab rain.
const SUITE_GRAB_PACKETS: u32 = 10;

fn grab_row(md: &mut String, what: &str, report: &GrabReport) {
    let _ = writeln!(
        md,
        "| {what} | {} packets × {} shares, {} clients | **{:.0} grabs/s** | p50 {:.2} ms, p99 {:.2} ms | {} losers answered `packet_empty`; books {} |",
        report.packets,
        report.grabs / u64::from(report.packets.max(1)),
        report.connections,
        report.grabs_per_s,
        report.p50_ms,
        report.p99_ms,
        report.empty,
        if report.exact { "exact" } else { "**WRONG**" }
    );
}

/// The table the grab rains are reported in.
const GRAB_TABLE_HEADER: &str =
    "| grab rain on one hot packet | shape | rate | latency | check |\n|---|---|---|---|---|\n";

/// Grants per request in the suite's batch runs: what an app backend that aggregates might send.
const SUITE_BATCH: usize = 16;

/// The embedded host's warm-up before its memory is first read.
const WARM_UP: Duration = Duration::from_secs(2);

/// Connections in the batch runs: 128 grants in flight. With 64 connections (1,024 in flight)
/// the grants only queue longer, and the writer falls behind on Redis.
const SUITE_BATCH_CONNECTIONS: usize = 8;

/// How long the disk yardstick syncs: a few thousand syncs, enough for a p99 and a rough p999.
const DISK_YARDSTICK: Duration = Duration::from_secs(3);

/// CPU seconds the Redis server has used (`used_cpu_user` + `used_cpu_sys`).
async fn redis_cpu_s(url: &str) -> anyhow::Result<f64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    let field = |name: &str| {
        info.lines().find_map(|line| line.strip_prefix(name)).and_then(|value| value.trim().parse::<f64>().ok())
    };
    match (field("used_cpu_user:"), field("used_cpu_sys:")) {
        (Some(user), Some(sys)) => Ok(user + sys),
        _ => anyhow::bail!("INFO cpu has no used_cpu_user/used_cpu_sys"),
    }
}

async fn redis_used_memory(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

/// The head of each table of rains.
const TABLE_HEADER: &str = "| run | grants/s | p50 / p99 / p999 ms | credits/s during | drain after | refusals | books |\n|---|---|---|---|---|---|---|\n";

/// One rain as a row of the table.
fn table_row(md: &mut String, what: &str, report: &RainReport) {
    let books = match &report.books {
        Some(books) if books.ok => format!("books ok ({} issued, {} credited)", books.issued, books.credited),
        Some(books) => format!("BOOKS WRONG: {}", books.problems.join("; ")),
        None => "books not checked".into(),
    };
    let _ = writeln!(
        md,
        "| {what} | {:.0} | {:.2} / {:.2} / {:.2} | {:.0} | {} | {} | {} |",
        report.grants_per_s,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        report.credits_per_s,
        report.drain_s.map_or("–".into(), |s| format!("{s:.1} s")),
        if report.rejected.is_empty() { "none".into() } else { format!("{:?}", report.rejected) },
        books
    );
}

/// Runs the suite and writes the report.
pub async fn run(config: &SuiteConfig) -> anyhow::Result<()> {
    if let Some(part) = &config.only {
        return run_part(config, part).await;
    }
    let mut md = String::new();
    let mut figures = serde_json::Map::new();
    embedded_runs(config, &mut md, &mut figures).await?;
    match (&config.redis_url, &config.database_url) {
        (Some(redis_url), Some(database_url)) => {
            let production = Production::new(config, redis_url, database_url);
            let ran = production.runs(&mut md, &mut figures).await;
            production.forget_keys().await;
            ran?;
        }
        _ => {
            let _ = writeln!(
                md,
                "Redis + PostgreSQL runs skipped: set REDIS_URL and DATABASE_URL (or pass --store and --ledger)."
            );
        }
    }
    write_report(&config.out, &md, &serde_json::Value::Object(figures))?;
    println!("{md}");
    Ok(())
}

/// Runs one part of the suite and prints its figures (`--only`).
async fn run_part(config: &SuiteConfig, part: &str) -> anyhow::Result<()> {
    if part == "embedded" {
        let mut md = String::new();
        let mut figures = serde_json::Map::new();
        embedded_runs(config, &mut md, &mut figures).await?;
        println!("{md}");
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    let (Some(redis_url), Some(database_url)) = (&config.redis_url, &config.database_url) else {
        anyhow::bail!("`--only {part}` needs a Redis and a PostgreSQL: set REDIS_URL and DATABASE_URL");
    };
    let production = Production::new(config, redis_url, database_url);
    let ran = production_part(&production, part).await;
    production.forget_keys().await;
    ran
}

/// One Redis + PostgreSQL part of the suite, its figures printed.
async fn production_part(production: &Production<'_>, part: &str) -> anyhow::Result<()> {
    match part {
        "retention" => {
            let (redis, embedded) = production.retention_runs().await?;
            println!("{}", serde_json::to_string_pretty(&json!({ "redis": redis, "embedded_store": embedded }))?);
            for line in retention_bounds(&redis, &embedded) {
                println!("{line}");
            }
            Ok(())
        }
        "writer" => {
            let writer = production.writer_runs().await?;
            println!(
                "writer: {} pending tokens; uncapped {:.0} credits/s ({}); capped at {}/s: {:.0} credits/s",
                writer.backlog,
                writer.uncapped.per_s,
                writer.uncapped.detail(),
                writer.cap,
                writer.capped
            );
            if let Some(bytes) = writer.redis_bytes_per_token {
                println!("Redis memory per pending token: {bytes:.0} bytes");
            }
            if let Some(us) = writer.redis_cpu_us_per_grant {
                println!("Redis CPU per grant: {us:.1} µs ({:.0} grants/s while filling)", writer.grants_per_s);
            }
            println!("{}", memory_by_kind(&writer.redis_bytes_by_kind, writer.backlog));
            Ok(())
        }
        "steward" => {
            let figures = production.steward_runs().await?;
            println!("{}", super::steward::table(&figures));
            println!("{}", serde_json::to_string_pretty(&figures)?);
            Ok(())
        }
        other => anyhow::bail!("unknown part `{other}` (known: embedded, retention, steward, writer)"),
    }
}

/// The embedded host's memory per token over its first run, and its one-time growth.
struct Memory {
    resident_per_token: Option<f64>,
    heap_per_token: Option<f64>,
    warm_up_tokens: u64,
    one_time_resident_mb: Option<f64>,
    one_time_heap_mb: Option<f64>,
}

/// The embedded host's first rain, as fast as it goes, after a warm-up, with the host's memory
/// per token over it.
async fn fastest_with_memory(embedded: &Host, config: &SuiteConfig) -> anyhow::Result<(RainReport, Memory)> {
    // A short rain first, so that what a host allocates once for its first requests (connection
    // buffers, plugin instances, each thread's allocator cache, the maps' first tables) is not
    // counted as the tokens'; its own growth is reported apart.
    let (resident_start, heap_start) = (embedded.resident_bytes(), embedded.heap_in_use().await);
    let warm_up_config = RainConfig {
        duration: WARM_UP,
        check_books: false,
        progress: false,
        ..rain_config(embedded, "bench-embedded", config, 50_000_000)
    };
    let warm_up = rain::run(&warm_up_config).await?;
    // Credited, without the books check (whose reconciliation would leave freed pages behind
    // for the tokens to reuse).
    rain::wait_for_empty_backlog(&warm_up_config).await?;
    let resident_before = embedded.resident_bytes();
    let heap_before = embedded.heap_in_use().await;
    // Every token stays in memory (the store keeps its record, the ledger its entry). Read once
    // the backlog is credited and before the books check, whose reconciliation reads the whole
    // activity into memory for a moment (what the allocator keeps of that is not the tokens').
    let (fastest, (resident_after, heap_after)) =
        rain::run_measured(&rain_config(embedded, "bench-embedded", config, 1), async || {
            (embedded.resident_bytes(), embedded.heap_in_use().await)
        })
        .await?;
    let per_token = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(before), Some(after)) if fastest.granted > 0 => {
            Some(after.saturating_sub(before) as f64 / fastest.granted as f64)
        }
        _ => None,
    };
    let embedded_bytes_per_token = per_token(resident_before, resident_after);
    let embedded_heap_bytes_per_token = per_token(heap_before, heap_after);
    // The warm-up's growth less its tokens at the rain's rate: the host's one-time allocations.
    let one_time = |start: Option<u64>, before: Option<u64>, per_token: Option<f64>| {
        Some((before? as f64 - start? as f64 - per_token? * warm_up.granted as f64) / 1e6)
    };
    let one_time_resident_mb = one_time(resident_start, resident_before, embedded_bytes_per_token);
    let one_time_heap_mb = one_time(heap_start, heap_before, embedded_heap_bytes_per_token);
    let memory = Memory {
        resident_per_token: embedded_bytes_per_token,
        heap_per_token: embedded_heap_bytes_per_token,
        warm_up_tokens: warm_up.granted,
        one_time_resident_mb,
        one_time_heap_mb,
    };
    Ok((fastest, memory))
}

/// The embedded host's rains (as fast as it goes, paced, batched), its memory per token, and the
/// yardsticks they are compared with.
async fn embedded_runs(
    config: &SuiteConfig,
    md: &mut String,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    eprintln!("embedded, reference plugins on: {} s, {} connections", config.duration_s, config.connections);
    let embedded = start_host("bench-embedded", &config.plugins_dir, &[])?;
    embedded.ready(PLUGINS_READY_LIMIT).await?;
    let (fastest, memory) = fastest_with_memory(&embedded, config).await?;
    let Memory { resident_per_token: embedded_bytes_per_token, heap_per_token: embedded_heap_bytes_per_token, .. } =
        memory;
    // Half the maximum: the latency a host with headroom gives (issue 17's p99 target).
    let half_rate = (fastest.grants_per_s / 2.0).round().max(1.0) as u64;
    let mut paced_config = rain_config(&embedded, "bench-embedded", config, 100_000_000);
    paced_config.rate = Some(half_rate);
    let page_before = rain::get_text(&embedded.addr, &embedded.credentials, "/metrics").await?;
    let paced = rain::run(&paced_config).await?;
    let page_after = rain::get_text(&embedded.addr, &embedded.credentials, "/metrics").await?;
    let paced_host = PacedAsTimedByTheHost::between(&page_before, &page_after);
    let batched = rain::run(&RainConfig {
        batch: SUITE_BATCH,
        connections: SUITE_BATCH_CONNECTIONS,
        ..rain_config(&embedded, "bench-embedded", config, 600_000_000)
    })
    .await?;
    let grab_rain = grabs::run(&grab_config(&embedded, "bench-embedded", config, 900_000_000)).await?;
    // The hello-world rain is shaped like the others (its target and its books check aside).
    let hello_shape = rain_config(&embedded, "hello", config, 1);
    drop(embedded);

    eprintln!("yardsticks: hello-world, signing, the disk");
    let hello_addr = yardstick::start_hello_world().await?;
    let hello = rain::run(&RainConfig {
        target: hello_addr,
        check_books: false,
        credentials: ClientCredentials::default(),
        ..hello_shape
    })
    .await?;
    let signing = yardstick::signing(Duration::from_secs(2))?;
    // Where the embedded hosts kept their data, so on the disk their journals synced on.
    let disk = yardstick::disk_syncs(&std::env::temp_dir(), DISK_YARDSTICK)?;

    let _ = writeln!(md, "### Embedded deployment, reference plugins on\n");
    md.push_str(TABLE_HEADER);
    table_row(md, "as fast as it goes", &fastest);
    table_row(md, &format!("paced at half that ({half_rate} requests/s)"), &paced);
    table_row(
        md,
        &format!(
            "batches of {SUITE_BATCH} on {SUITE_BATCH_CONNECTIONS} connections (`POST /v1/grants:batch`; latency per batch)"
        ),
        &batched,
    );
    let _ = writeln!(md, "\n{}", paced_host.sentence());
    let _ = writeln!(
        md,
        "Yardsticks in the same run: hello-world {:.0} answers/s (p99 {:.2} ms); encode + sign {:.1} µs per token ({:.0}/s per core, {} cores); the disk's `fdatasync` after a 512-byte append, one after another for {} s in the data's directory: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms ({} syncs; a grant is answered after its group's sync, so a grant's p99 sits above the disk's).",
        hello.answers_per_s,
        hello.p99_ms,
        signing.us_per_token,
        signing.tokens_per_s_per_core,
        signing.cores,
        DISK_YARDSTICK.as_secs(),
        disk.p50_ms,
        disk.p99_ms,
        disk.p999_ms,
        disk.max_ms,
        disk.syncs
    );
    let _ = writeln!(
        md,
        "Host memory per token, embedded: {} (resident growth over the first run, read once its backlog was credited and before the books check; store record and ledger entry both in memory; {} of it handed out by the allocator, `hongbao_heap_in_use_bytes`, the rest its free pages and fragmentation). Not in it: the host's one-time growth on its first requests, read over a {} s warm-up before the run less its {} tokens at that rate: {} resident, {} allocated.\n\nRatios: grants/s = **{:.2} × hello-world**, **{:.2} × the signing ceiling** of all cores; in batches of {SUITE_BATCH}: **{:.2} ×** and **{:.2} ×**.\n",
        embedded_bytes_per_token.map_or("not measured (no /proc)".to_owned(), |bytes| format!("**{bytes:.0} bytes**")),
        embedded_heap_bytes_per_token.map_or("none measured".to_owned(), |bytes| format!("{bytes:.0} bytes")),
        WARM_UP.as_secs(),
        memory.warm_up_tokens,
        memory.one_time_resident_mb.map_or("not measured".to_owned(), |mb| format!("{mb:.1} MB")),
        memory.one_time_heap_mb.map_or("not measured".to_owned(), |mb| format!("{mb:.1} MB")),
        fastest.grants_per_s / hello.answers_per_s.max(1.0),
        fastest.grants_per_s / (signing.tokens_per_s_per_core * signing.cores as f64),
        batched.grants_per_s / hello.answers_per_s.max(1.0),
        batched.grants_per_s / (signing.tokens_per_s_per_core * signing.cores as f64)
    );
    figures.insert("embedded".into(), json!(fastest));
    figures.insert("embedded_paced_half".into(), json!(paced));
    figures.insert("embedded_paced_half_host".into(), paced_host.figures());
    figures.insert("embedded_batched".into(), json!(batched));
    figures.insert("embedded_grabs".into(), json!(grab_rain));
    md.push_str(GRAB_TABLE_HEADER);
    grab_row(md, "embedded", &grab_rain);
    md.push('\n');
    figures.insert("embedded_bytes_per_token".into(), json!(embedded_bytes_per_token));
    figures.insert("embedded_heap_bytes_per_token".into(), json!(embedded_heap_bytes_per_token));
    figures.insert("embedded_one_time_resident_mb".into(), json!(memory.one_time_resident_mb));
    figures.insert("embedded_one_time_heap_mb".into(), json!(memory.one_time_heap_mb));
    figures.insert("hello_world".into(), json!(hello));
    figures.insert("signing".into(), json!(signing));
    figures.insert("disk_sync".into(), json!(disk));
    Ok(())
}

/// The paced run as the host timed it: its grants from routing to the answer, and its token
/// journal's syncs, read off `/metrics` before and after the run.
struct PacedAsTimedByTheHost {
    grants: HistogramDelta,
    syncs: HistogramDelta,
}

/// The p99 target of the paced run (issue 17), seconds: a bound of the host's histograms.
const PACED_P99_TARGET_S: f64 = 0.005;

/// A bound of the sync histogram most syncs stay under, seconds.
const SYNC_SHOWN_WITHIN_S: f64 = 0.001;

impl PacedAsTimedByTheHost {
    fn between(before: &str, after: &str) -> PacedAsTimedByTheHost {
        PacedAsTimedByTheHost {
            grants: HistogramDelta::between(
                before,
                after,
                "hongbao_grant_request_duration_seconds_bucket{kind=\"single\",",
            ),
            syncs: HistogramDelta::between(
                before,
                after,
                "hongbao_journal_sync_duration_seconds_bucket{journal=\"store\",",
            ),
        }
    }

    fn sentence(&self) -> String {
        let share = |delta: &HistogramDelta, bound: f64| {
            delta.share_within(bound).map_or("–".to_owned(), |share| format!("{:.2} %", share * 100.0))
        };
        let bucket = |delta: &HistogramDelta| {
            delta
                .quantile_bucket(0.99)
                .map_or("–".to_owned(), |(lower, upper)| format!("({:.1}, {:.1}] ms", lower * 1e3, upper * 1e3))
        };
        format!(
            "The paced run as the host timed it (`hongbao_grant_request_duration_seconds`, from routing to the answer): {} of its {:.0} grant requests within {:.0} ms, its p99 in the {} bucket; its token journal's {:.0} syncs (`hongbao_journal_sync_duration_seconds`): {} within {:.0} ms, p99 in {}. The load generator's p99 adds its own side on the same cores.",
            share(&self.grants, PACED_P99_TARGET_S),
            self.grants.count(),
            PACED_P99_TARGET_S * 1e3,
            bucket(&self.grants),
            self.syncs.count(),
            share(&self.syncs, SYNC_SHOWN_WITHIN_S),
            SYNC_SHOWN_WITHIN_S * 1e3,
            bucket(&self.syncs),
        )
    }

    fn figures(&self) -> serde_json::Value {
        json!({
            "grants": self.grants.count(),
            "grants_within_5ms_share": self.grants.share_within(PACED_P99_TARGET_S),
            "grants_p99_bucket_s": self.grants.quantile_bucket(0.99),
            "syncs": self.syncs.count(),
            "syncs_within_1ms_share": self.syncs.share_within(SYNC_SHOWN_WITHIN_S),
            "syncs_p99_bucket_s": self.syncs.quantile_bucket(0.99),
        })
    }
}

/// The runs on Redis + PostgreSQL, with ids fresh for this run: the database may hold earlier
/// runs' books.
pub(super) struct Production<'a> {
    pub(super) config: &'a SuiteConfig,
    redis_url: &'a str,
    pub(super) database_url: &'a str,
    run: String,
}

/// What the writer runs measured.
struct WriterFigures {
    /// Tokens in the backlog the uncapped writer drained.
    backlog: u64,
    /// The backlog's grants per second (a host without a writer, so Redis does only grants).
    grants_per_s: f64,
    /// Redis server CPU per grant while the backlog was built, µs (`INFO cpu`): 1e6 over it is
    /// what one Redis core could grant at most.
    redis_cpu_us_per_grant: Option<f64>,
    /// Redis memory per pending token, where `INFO` told.
    redis_bytes_per_token: Option<f64>,
    /// The backlog's keys by kind: how many, and their bytes by `MEMORY USAGE`.
    redis_bytes_by_kind: std::collections::BTreeMap<String, KindMemory>,
    /// The uncapped drain.
    uncapped: Drained,
    /// The cap of the capped run.
    cap: u64,
    /// Credits per second at that cap.
    capped: f64,
}

impl<'a> Production<'a> {
    fn new(config: &'a SuiteConfig, redis_url: &'a str, database_url: &'a str) -> Production<'a> {
        Production { config, redis_url, database_url, run: format!("{:x}", fastrand::u32(..)) }
    }

    /// Deletes the keys the runs left in Redis (under `bench{run}`, `bench{run}w` and
    /// `bench{run}r`), so that a shared Redis does not keep every run's records; says so when it
    /// cannot.
    async fn forget_keys(&self) {
        for prefix in [format!("bench{}", self.run), format!("bench{}w", self.run), format!("bench{}r", self.run)] {
            if let Err(error) = forget_keys(self.redis_url, &prefix).await {
                eprintln!("the bench's keys under `{prefix}` stay in Redis: {error}");
            }
        }
    }

    /// The activity of one kind of run (`token`, `sync`, `writer`, `capped`).
    pub(super) fn activity(&self, kind: &str) -> String {
        format!("bench-{kind}-{}", self.run)
    }

    /// `hongbao serve` flags for these backends, then `extra`.
    pub(super) fn args(&self, extra: &[&str]) -> Vec<String> {
        self.args_under(&format!("bench{}", self.run), extra)
    }

    /// [`Production::args`] with the store's keys under `prefix`.
    fn args_under(&self, prefix: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "--store".to_owned(),
            self.redis_url.to_owned(),
            "--store-prefix".to_owned(),
            prefix.to_owned(),
            "--ledger".to_owned(),
            self.database_url.to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// The token design against the synchronous design, then the writer; their figures.
    async fn runs(
        &self,
        md: &mut String,
        figures: &mut serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<()> {
        let config = self.config;
        eprintln!("Redis + PostgreSQL: token design");
        let token_activity = self.activity("token");
        let host = start_host(&token_activity, &config.plugins_dir, &self.args(&[]))?;
        host.ready(PLUGINS_READY_LIMIT).await?;
        let token = rain::run(&rain_config(&host, &token_activity, config, 200_000_000)).await?;
        let token_batched = rain::run(&RainConfig {
            batch: SUITE_BATCH,
            connections: SUITE_BATCH_CONNECTIONS,
            ..rain_config(&host, &token_activity, config, 700_000_000)
        })
        .await?;
        let grab_rain = grabs::run(&grab_config(&host, &token_activity, config, 910_000_000)).await?;
        drop(host);
        eprintln!("Redis + PostgreSQL: synchronous crediting");
        let sync_activity = self.activity("sync");
        let host = start_host(&sync_activity, &config.plugins_dir, &self.args(&["--sync-credit"]))?;
        host.ready(PLUGINS_READY_LIMIT).await?;
        let sync = rain::run(&rain_config(&host, &sync_activity, config, 300_000_000)).await?;
        drop(host);
        let writer = self.writer_runs().await?;
        let steward = self.steward_runs().await?;
        let (retention_redis, retention_embedded) = self.retention_runs().await?;

        let _ = writeln!(md, "### Redis + PostgreSQL (same database for both designs)\n");
        md.push_str(TABLE_HEADER);
        table_row(md, "token design (grant answers, writer credits later)", &token);
        table_row(
            md,
            &format!("token design, batches of {SUITE_BATCH} on {SUITE_BATCH_CONNECTIONS} connections"),
            &token_batched,
        );
        table_row(md, "synchronous design (`--sync-credit`: credit, then answer)", &sync);
        md.push('\n');
        md.push_str(GRAB_TABLE_HEADER);
        grab_row(md, "Redis + PostgreSQL", &grab_rain);
        figures.insert("redis_grabs".into(), json!(grab_rain));
        let _ = writeln!(
            md,
            "\nThe token design takes **{:.1} ×** the grants per second of the synchronous design.",
            token.grants_per_s / sync.grants_per_s.max(1.0)
        );
        let _ = writeln!(
            md,
            "Ledger writer into PostgreSQL, draining {} pending tokens: uncapped **{:.0} credits/s** ({}); capped at {}/s: **{:.0} credits/s** ({:.1} % of the cap, measured over whole windows).",
            writer.backlog,
            writer.uncapped.per_s,
            writer.uncapped.detail(),
            writer.cap,
            writer.capped,
            writer.capped / writer.cap as f64 * 100.0
        );
        if let Some(bytes) = writer.redis_bytes_per_token {
            let _ = writeln!(
                md,
                "Redis memory per pending token: **{bytes:.0} bytes** (`used_memory` growth over {} pending tokens).",
                writer.backlog
            );
            md.push_str(&memory_by_kind(&writer.redis_bytes_by_kind, writer.backlog));
        }
        if let Some(us) = writer.redis_cpu_us_per_grant {
            let _ = writeln!(
                md,
                "\nRedis server CPU per grant while the backlog was built (no writer; {:.0} grants/s): **{us:.1} µs** (`INFO cpu`), so one Redis core grants at most {:.0}/s.",
                writer.grants_per_s,
                1e6 / us.max(0.001)
            );
        }
        md.push('\n');
        md.push_str(&super::steward::table(&steward));
        figures.insert("steward".into(), json!(steward));
        retention_section(md, figures, &retention_redis, &retention_embedded);
        figures.insert("redis_pg_token".into(), json!(token));
        figures.insert("redis_pg_token_batched".into(), json!(token_batched));
        figures.insert("redis_pg_sync".into(), json!(sync));
        figures.insert("writer_uncapped_credits_per_s".into(), json!(writer.uncapped.per_s));
        figures.insert("writer_ledger_batch_mean_ms".into(), json!(writer.uncapped.batch_mean_ms));
        figures.insert("writer_ledger_share".into(), json!(writer.uncapped.ledger_share));
        figures.insert(
            "writer_cpu_us_per_credit".into(),
            json!({
                "postgres": writer.uncapped.cpu_us_per_credit.postgres,
                "redis": writer.uncapped.cpu_us_per_credit.redis,
                "hongbao": writer.uncapped.cpu_us_per_credit.hongbao,
            }),
        );
        figures.insert("writer_capped_credits_per_s".into(), json!(writer.capped));
        figures.insert("redis_bytes_per_pending_token".into(), json!(writer.redis_bytes_per_token));
        figures.insert("redis_bytes_by_kind".into(), json!(writer.redis_bytes_by_kind));
        figures.insert("redis_cpu_us_per_grant".into(), json!(writer.redis_cpu_us_per_grant));
        Ok(())
    }

    /// A backlog built by a host without a writer (and Redis memory per pending token over
    /// it), drained by a writer host uncapped; then a smaller one drained at a cap.
    async fn writer_runs(&self) -> anyhow::Result<WriterFigures> {
        let config = self.config;
        eprintln!("ledger writer into PostgreSQL: build a backlog, then drain it");
        let writer_activity = self.activity("writer");
        // Its own key prefix, so that the backlog's keys can be weighed by kind.
        let writer_prefix = format!("bench{}w", self.run);
        let memory_before = redis_used_memory(self.redis_url).await.ok();
        let host =
            start_host(&writer_activity, &config.plugins_dir, &self.args_under(&writer_prefix, &["--no-writer"]))?;
        host.ready(PLUGINS_READY_LIMIT).await?;
        let mut fill = rain_config(&host, &writer_activity, config, 400_000_000);
        fill.check_books = false;
        let cpu_before = redis_cpu_s(self.redis_url).await.ok();
        let filled = rain::run(&fill).await?;
        let cpu_after = redis_cpu_s(self.redis_url).await.ok();
        let memory_after = redis_used_memory(self.redis_url).await.ok();
        let redis_cpu_us_per_grant = match (cpu_before, cpu_after) {
            (Some(before), Some(after)) if filled.granted > 0 => Some((after - before) * 1e6 / filled.granted as f64),
            _ => None,
        };
        drop(host);
        let redis_bytes_by_kind = key_memory(self.redis_url, &writer_prefix).await?;
        let redis_bytes_per_token = match (memory_before, memory_after) {
            (Some(before), Some(after)) if filled.granted > 0 => {
                Some(after.saturating_sub(before) as f64 / filled.granted as f64)
            }
            _ => None,
        };
        let uncapped = drain(config, &writer_activity, &self.args_under(&writer_prefix, &[]), false).await?;
        let cap = 2_000;
        let capped_activity = self.activity("capped");
        let host = start_host(&capped_activity, &config.plugins_dir, &self.args(&["--no-writer"]))?;
        host.ready(PLUGINS_READY_LIMIT).await?;
        let mut fill = rain_config(&host, &capped_activity, config, 500_000_000);
        fill.check_books = false;
        fill.count = Some(cap * 8);
        rain::run(&fill).await?;
        drop(host);
        let capped_args = self.args(&["--credits-per-second", &cap.to_string()]);
        let capped = drain(config, &capped_activity, &capped_args, true).await?.per_s;
        Ok(WriterFigures {
            backlog: filled.granted,
            grants_per_s: filled.grants_per_s,
            redis_cpu_us_per_grant,
            redis_bytes_per_token,
            redis_bytes_by_kind,
            uncapped,
            cap,
            capped,
        })
    }
}

/// Seconds a credited record stays in the hot store in the suite's retention runs: short, so a
/// run sees the store return to its bound within the suite.
const SUITE_RETAIN_S: u64 = 2;

/// Rains measured in a retention run after the first one.
const RETENTION_RAINS: usize = 4;

/// How long a retention run waits at most for memory to settle after the backlog drained.
const RETENTION_SETTLE_MAX: Duration = Duration::from_secs(90);

/// What a retention run measured, in bytes of the gauge.
#[derive(Debug, Clone, serde::Serialize)]
struct RetentionFigures {
    /// New grants in the measured rains (each to a new user).
    grants: u64,
    /// Before the measured rain: after a first rain of the same shape, drained and retired.
    before: u64,
    /// When the rain ended.
    peak: u64,
    /// Once the last rain drained, the retention passed and the memory stopped falling.
    after: u64,
    /// The same after each rain.
    afters: Vec<u64>,
    /// Once the signed requests' nonces of the last rain had expired too (after
    /// [`NONCE_WINDOW`] with no request).
    after_window: u64,
    /// The host's resident memory after the first rain, after each next one and after the
    /// nonce window (for the Redis run, a host that holds no record: the control for the
    /// embedded store's host).
    host_afters: Vec<u64>,
    /// On Redis, the keys left under the run's prefix after the nonce window, by kind (`n` are signed requests'
    /// nonces, which expire within 301 s; `rx` the retired users' sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_left: Option<std::collections::BTreeMap<String, u64>>,
}

/// Counts the keys under `prefix` on every node of the Redis at `url`, by kind (see
/// [`key_kind`]).
async fn key_census(url: &str, prefix: &str) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let kinds = key_kinds(url, prefix, false).await?;
    Ok(kinds.into_iter().map(|(kind, memory)| (kind, memory.keys)).collect())
}

/// Keys of one kind and what they weigh.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct KindMemory {
    keys: u64,
    /// `MEMORY USAGE … SAMPLES 0` summed over the keys: key, value and Redis's own overhead.
    bytes: u64,
}

/// The keys under `prefix` on every node of the Redis at `url`, by kind, with their memory.
async fn key_memory(url: &str, prefix: &str) -> anyhow::Result<std::collections::BTreeMap<String, KindMemory>> {
    key_kinds(url, prefix, true).await
}

/// The keys under `prefix` on every node of the Redis at `url`, by kind; weighed by `MEMORY
/// USAGE` when `weigh` (else `bytes` stays 0).
async fn key_kinds(
    url: &str,
    prefix: &str,
    weigh: bool,
) -> anyhow::Result<std::collections::BTreeMap<String, KindMemory>> {
    let mut kinds: std::collections::BTreeMap<String, KindMemory> = std::collections::BTreeMap::new();
    for_each_key_chunk(url, prefix, async |conn, keys| {
        let sizes: Vec<Option<u64>> = if weigh {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0);
            }
            pipe.query_async(conn).await?
        } else {
            vec![None; keys.len()]
        };
        for (key, size) in keys.iter().zip(sizes) {
            let kind = kinds.entry(key_kind(&key[prefix.len() + 1..]).to_owned()).or_default();
            kind.keys += 1;
            kind.bytes += size.unwrap_or(0);
        }
        Ok(())
    })
    .await?;
    Ok(kinds)
}

/// Deletes the keys under `prefix` on every node of the Redis at `url`.
async fn forget_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    for_each_key_chunk(url, prefix, async |conn, keys| {
        // One key a command: on a cluster node, keys of several slots cannot go together.
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        let () = pipe.query_async(conn).await?;
        Ok(())
    })
    .await
}

/// Hands `each` the keys under `prefix` on every node of the Redis at `url`, a `SCAN` chunk at
/// a time (never empty), with the node's connection.
async fn for_each_key_chunk(
    url: &str,
    prefix: &str,
    mut each: impl AsyncFnMut(&mut redis::aio::MultiplexedConnection, Vec<String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let nodes = crate::store::cluster_nodes(url).unwrap_or_else(|| vec![url.to_owned()]);
    for node in nodes {
        let client = redis::Client::open(node.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor = 0_u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                each(&mut conn, keys).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// The kind of a key after its prefix: the segment after the hash tag (`{N}:KIND:…`), or `n`
/// for nonces (`n:{…}`).
fn key_kind(rest: &str) -> &str {
    match rest.split_once("}:") {
        Some((_, tail)) if !rest.starts_with("n:") => tail.split(':').next().unwrap_or(tail),
        _ => rest.split(':').next().unwrap_or(rest),
    }
}

/// The backlog's Redis memory by key kind, per pending token, as a table.
fn memory_by_kind(kinds: &std::collections::BTreeMap<String, KindMemory>, tokens: u64) -> String {
    let mut md =
        String::from("\n| key kind | keys | bytes (`MEMORY USAGE`) | per pending token |\n|---|---|---|---|\n");
    let tokens = tokens.max(1) as f64;
    let mut total = 0;
    for (kind, memory) in kinds {
        total += memory.bytes;
        let _ = writeln!(md, "| `{kind}` | {} | {} | {:.0} |", memory.keys, memory.bytes, memory.bytes as f64 / tokens);
    }
    let _ = writeln!(md, "| all | | {total} | {:.0} |", total as f64 / tokens);
    md
}

/// How long a signed request's nonce is remembered (the signature's time window and a second),
/// and a margin: past it, the nonces of a rain are gone from every store.
const NONCE_WINDOW: Duration = Duration::from_secs(crate::access::signature::TIMESTAMP_SKEW_S + 1 + 5);

/// What a retention run watches.
enum Gauge<'a> {
    /// Redis's `used_memory`; the host runs on that Redis.
    Redis(&'a str),
    /// The host's resident memory; the host runs on the embedded store.
    Resident,
}

impl Gauge<'_> {
    async fn read(&self, host: &Host) -> anyhow::Result<u64> {
        match self {
            Gauge::Redis(url) => redis_used_memory(url).await,
            Gauge::Resident => host.resident_bytes().context("no /proc: resident memory not measured"),
        }
    }
}

impl Production<'_> {
    /// A rain on a host that retires credited records after [`SUITE_RETAIN_S`], its backlog
    /// drained and the retention waited out, with `gauge` read before, at the end and after.
    async fn retention_run(&self, gauge: &Gauge<'_>) -> anyhow::Result<(RetentionFigures, Host)> {
        let config = self.config;
        let retain = SUITE_RETAIN_S.to_string();
        let prefix = self.retention_prefix();
        let (kind, args) = match gauge {
            Gauge::Redis(url) => (
                "retain-redis",
                [
                    "--store",
                    url,
                    "--store-prefix",
                    &prefix,
                    "--ledger",
                    self.database_url,
                    "--retain-credited-s",
                    &retain,
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            Gauge::Resident => (
                "retain-embedded",
                vec!["--ledger".to_owned(), self.database_url.to_owned(), "--retain-credited-s".into(), retain],
            ),
        };
        eprintln!("retention: {kind}");
        let activity = self.activity(kind);
        let host = start_host(&activity, &config.plugins_dir, &args)?;
        host.ready(PLUGINS_READY_LIMIT).await?;
        let first_user = if matches!(gauge, Gauge::Redis(_)) { 1_000_000_000 } else { 1_100_000_000 };
        // A first rain of the same shape, drained and retired, so that "before" holds what the
        // host keeps whatever the history (warm plugin pools, the threads and buffers of this
        // concurrency); then more rains of other new users, each drained and retired: a store
        // bounded by its backlog ends each at about the same figure.
        let mut warm = rain_config(&host, &activity, config, first_user - 50_000_000);
        warm.check_books = false;
        rain::run(&warm).await?;
        let before = settled(gauge, &host).await?;
        let mut host_afters = vec![host.resident_bytes().unwrap_or(0)];
        let (mut grants, mut peak, mut afters) = (0, 0, Vec::new());
        for round in 0..RETENTION_RAINS {
            let mut next = rain_config(&host, &activity, config, first_user + round as i64 * 50_000_000);
            next.check_books = false;
            grants += rain::run(&next).await?.granted;
            peak = peak.max(gauge.read(&host).await?);
            afters.push(settled(gauge, &host).await?);
            host_afters.push(host.resident_bytes().unwrap_or(0));
        }
        let lowest = afters.last().copied().unwrap_or(before);
        let figures = RetentionFigures {
            grants,
            before,
            peak,
            after: lowest,
            afters,
            after_window: 0,
            host_afters,
            keys_left: None,
        };
        Ok((figures, host))
    }

    /// The retention runs on Redis and on the embedded store, then, both hosts still up and
    /// idle, one more reading of each once the last rain's nonces have expired.
    async fn retention_runs(&self) -> anyhow::Result<(RetentionFigures, RetentionFigures)> {
        let redis_gauge = Gauge::Redis(self.redis_url);
        let (mut redis, redis_host) = self.retention_run(&redis_gauge).await?;
        let (mut embedded, embedded_host) = self.retention_run(&Gauge::Resident).await?;
        eprintln!("retention: waiting {} s for the nonces to expire", NONCE_WINDOW.as_secs());
        tokio::time::sleep(NONCE_WINDOW).await;
        redis.after_window = settled(&redis_gauge, &redis_host).await?;
        redis.host_afters.push(redis_host.resident_bytes().unwrap_or(0));
        redis.keys_left = Some(key_census(self.redis_url, &self.retention_prefix()).await?);
        embedded.after_window = settled(&Gauge::Resident, &embedded_host).await?;
        Ok((redis, embedded))
    }

    /// The Redis key prefix of the retention run (the suite's other runs leave records under
    /// theirs).
    fn retention_prefix(&self) -> String {
        format!("bench{}r", self.run)
    }
}

/// The retention runs' table, and their figures.
fn retention_section(
    md: &mut String,
    figures: &mut serde_json::Map<String, serde_json::Value>,
    retention_redis: &RetentionFigures,
    retention_embedded: &RetentionFigures,
) {
    let _ = writeln!(
        md,
        "\nRetention (`--retain-credited-s {SUITE_RETAIN_S}`): a first rain of new users, drained and retired, then {RETENTION_RAINS} more of other new users, each drained and retired, then {} s with no request (the signed requests' nonces expire):\n\n\
         | memory | after the first rain | peak of the next ones | after each next one drained and retired | after the nonce window | grants in them | left per grant |\n|---|---|---|---|---|---|---|",
        NONCE_WINDOW.as_secs()
    );
    let host_afters = &retention_redis.host_afters;
    let redis_host = RetentionFigures {
        before: host_afters.first().copied().unwrap_or(0),
        afters: host_afters.iter().skip(1).take(RETENTION_RAINS).copied().collect(),
        after_window: host_afters.get(RETENTION_RAINS + 1).copied().unwrap_or(0),
        peak: 0,
        host_afters: Vec::new(),
        keys_left: None,
        ..retention_redis.clone()
    };
    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    for (what, run) in [
        ("Redis `used_memory` (Redis store + PostgreSQL)", retention_redis),
        ("host resident memory (embedded store + PostgreSQL)", retention_embedded),
        ("host resident memory (Redis store: holds no record; the control)", &redis_host),
    ] {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} | {} | {} | {:.0} bytes |",
            mb(run.before),
            if run.peak == 0 { "–".to_owned() } else { mb(run.peak) },
            run.afters.iter().map(|bytes| mb(*bytes)).collect::<Vec<_>>().join(" → "),
            mb(run.after_window),
            run.grants,
            run.after_window.saturating_sub(run.before) as f64 / run.grants.max(1) as f64
        );
    }
    for line in retention_bounds(retention_redis, retention_embedded) {
        let _ = writeln!(md, "\n{line}");
    }
    if let Some(kinds) = &retention_redis.keys_left {
        let listed: Vec<String> = kinds.iter().map(|(kind, count)| format!("`{kind}` {count}")).collect();
        let _ = writeln!(
            md,
            "\nKeys left on Redis after the nonce window, by kind: {} (`rx`: users with retired records; `n`: nonces of signed requests, if any are left).",
            listed.join(", ")
        );
    }
    figures.insert("retention_redis".into(), json!(retention_redis));
    figures.insert("retention_embedded_store".into(), json!(retention_embedded));
}

/// Bytes a user with retired records may keep in a store after the window: Redis's `rx` entry
/// (8–16 bytes) and the embedded store's per-activity set (an `i64` with the table's slack).
const RETIRED_USER_BYTES_MAX: u64 = 20;

/// The bounds the retention runs check (docs/backends.md, "The bound"), each with its verdict:
/// Redis back under its figure before the rains plus [`RETIRED_USER_BYTES_MAX`] per grant's user;
/// the embedded-store host back under its first-rain figure plus what the control host (the
/// same rains on the Redis store, holding no record) kept above its own, plus the same per user.
fn retention_bounds(redis: &RetentionFigures, embedded: &RetentionFigures) -> Vec<String> {
    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    let verdict = |holds: bool| if holds { "**holds**" } else { "**exceeded**" };
    let redis_bound = redis.before + RETIRED_USER_BYTES_MAX * redis.grants;
    let control_kept = match (redis.host_afters.first(), redis.host_afters.last()) {
        (Some(first), Some(last)) => last.saturating_sub(*first),
        _ => 0,
    };
    let embedded_bound = embedded.before + control_kept + RETIRED_USER_BYTES_MAX * embedded.grants;
    vec![
        format!(
            "Bound, Redis: after the window ≤ before the rains + {RETIRED_USER_BYTES_MAX} B × {} users = {}; measured {}: {}.",
            redis.grants,
            mb(redis_bound),
            mb(redis.after_window),
            verdict(redis.after_window <= redis_bound)
        ),
        format!(
            "Bound, embedded-store host: after the window ≤ after the first rain + what the control host kept ({}) + {RETIRED_USER_BYTES_MAX} B × {} users = {}; measured {}: {}.",
            mb(control_kept),
            embedded.grants,
            mb(embedded_bound),
            mb(embedded.after_window),
            verdict(embedded.after_window <= embedded_bound)
        ),
    ]
}

/// Waits for the backlog to drain and the retention to pass, then until `gauge` stops falling
/// (three readings a second apart, none 1 % below the lowest yet); the lowest reading.
async fn settled(gauge: &Gauge<'_>, host: &Host) -> anyhow::Result<u64> {
    wait_drained(host).await?;
    tokio::time::sleep(Duration::from_secs(SUITE_RETAIN_S)).await;
    let started = Instant::now();
    let (mut lowest, mut steady) = (gauge.read(host).await?, 0);
    while steady < 3 && started.elapsed() < RETENTION_SETTLE_MAX {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = gauge.read(host).await?;
        if now + now / 100 < lowest {
            (lowest, steady) = (now, 0);
        } else {
            steady += 1;
            lowest = lowest.min(now);
        }
    }
    Ok(lowest)
}

/// Waits until the host's crediting backlog is empty.
async fn wait_drained(host: &Host) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let health = rain::get_json(&host.addr, &host.credentials, "/healthz").await?;
        if health["crediting_backlog"].as_u64() == Some(0) {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the backlog did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a writer host on a backlog and measures its rate. Uncapped: the backlog over the
/// time from the first credit to an empty backlog. Capped, the writer credits a window's
/// allowance at once and then waits for the next window, so the rate is counted over whole
/// windows: the credits made in the first `k` seconds after the first credit (read mid-way
/// between bursts, at `k - 0.5` s), over `k` seconds, `k` as many whole seconds as the drain took.
async fn drain(config: &SuiteConfig, activity: &str, args: &[String], capped: bool) -> anyhow::Result<Drained> {
    let host = start_host(activity, &config.plugins_dir, args)?;
    let started = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    // CPU by process from the first credit seen, with the backlog then.
    let mut cpu_from: Option<(ProcessCpu, u64)> = None;
    loop {
        let health = rain::get_json(&host.addr, &host.credentials, "/healthz").await?;
        let backlog = health["crediting_backlog"].as_u64().unwrap_or(0);
        samples.push((started.elapsed().as_secs_f64(), backlog));
        if cpu_from.is_none() && backlog < samples[0].1 {
            cpu_from = Some((ProcessCpu::now(), backlog));
        }
        if backlog == 0 {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the backlog did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let page = rain::get_text(&host.addr, &host.credentials, "/metrics").await?;
    let batches = super::steward::value(&page, "hongbao_ledger_batches_total");
    let ledger_s = super::steward::value(&page, "hongbao_ledger_batch_duration_seconds_sum");
    let initial = samples[0].1;
    let end = samples.last().map_or(0.0, |(t, _)| *t);
    let Some(first) = samples.iter().find(|(_, backlog)| *backlog < initial).map(|(t, _)| *t) else {
        return Ok(Drained::default());
    };
    let per_s = {
        let whole = (end - first).floor();
        if !capped || whole < 1.0 {
            initial as f64 / (end - first).max(0.001)
        } else {
            let at = first + whole - 0.5;
            let left =
                samples.iter().min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs())).map_or(0, |(_, b)| *b);
            (initial - left) as f64 / whole
        }
    };
    let cpu_us_per_credit = match cpu_from {
        Some((from, backlog)) if backlog > 0 => ProcessCpu::now().us_per(&from, backlog),
        _ => ProcessCpu::default(),
    };
    Ok(Drained {
        per_s,
        batch_mean_ms: ledger_s * 1_000.0 / batches.max(1.0),
        ledger_share: ledger_s / (end - first).max(0.001),
        cpu_us_per_credit,
    })
}

impl Drained {
    /// Where the drain's time and CPU went, as one clause.
    fn detail(&self) -> String {
        let cpu = &self.cpu_us_per_credit;
        format!(
            "a ledger batch took {:.1} ms on average; the batches' time summed over the host's writer loops is \
             {:.0} % of the drain's; CPU per credit, from `/proc`: PostgreSQL {:.0} µs, Redis {:.0} µs, the host \
             {:.0} µs",
            self.batch_mean_ms,
            self.ledger_share * 100.0,
            cpu.postgres,
            cpu.redis,
            cpu.hongbao
        )
    }
}

/// CPU time of the processes a writer run keeps busy on this machine, from `/proc` (zero where
/// a server runs elsewhere).
#[derive(Debug, Default, Clone, Copy)]
struct ProcessCpu {
    /// PostgreSQL's processes: its backends, WAL writer, checkpointer, autovacuum.
    postgres: f64,
    /// The Redis server.
    redis: f64,
    /// The hosts (the writer host; the suite's own polling is a few requests a second).
    hongbao: f64,
}

impl ProcessCpu {
    /// Seconds of CPU used so far by every live process of each kind.
    fn now() -> ProcessCpu {
        let mut cpu = ProcessCpu::default();
        let ticks = 100.0; // USER_HZ on Linux
        let Ok(dir) = std::fs::read_dir("/proc") else { return cpu };
        for entry in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid … utime stime …`: utime and stime are fields 14 and 15.
            let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
            let comm = head.split_once(" (").map_or("", |(_, comm)| comm);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let used = match (fields.get(11).and_then(|f| f.parse::<f64>().ok()), fields.get(12)) {
                (Some(user), Some(system)) => (user + system.parse::<f64>().unwrap_or(0.0)) / ticks,
                _ => continue,
            };
            match comm {
                "postgres" => cpu.postgres += used,
                "redis-server" => cpu.redis += used,
                "hongbao" => cpu.hongbao += used,
                _ => {}
            }
        }
        cpu
    }

    /// Microseconds of each kind per one of `count` things done since `from`.
    fn us_per(&self, from: &ProcessCpu, count: u64) -> ProcessCpu {
        let per = |now: f64, then: f64| (now - then).max(0.0) * 1e6 / count as f64;
        ProcessCpu {
            postgres: per(self.postgres, from.postgres),
            redis: per(self.redis, from.redis),
            hongbao: per(self.hongbao, from.hongbao),
        }
    }
}

/// What one drain measured.
#[derive(Debug, Default, Clone, Copy)]
struct Drained {
    /// Credits per second.
    per_s: f64,
    /// The mean time of one ledger batch (PostgreSQL's transaction, as the writer waited for it).
    batch_mean_ms: f64,
    /// The ledger batches' time over the drain's: summed over the host's writer loops (two on
    /// Redis), so above 1 when both wait on the ledger at once.
    ledger_share: f64,
    /// CPU per credit by process, µs: their sum over the machine's cores bounds the rate.
    cpu_us_per_credit: ProcessCpu,
}

const BEGIN: &str = "<!-- bench suite: begin (written by `just bench`) -->";
const END: &str = "<!-- bench suite: end -->";

fn write_report(path: &Path, md: &str, figures: &serde_json::Value) -> anyhow::Result<()> {
    let machine = machine();
    let section = format!(
        "{BEGIN}\n## Rain benchmark (latest `just bench`)\n\nMachine: {machine}. Command: `just bench` \
         (`hongbao bench suite`: hosts on 127.0.0.1, the load generator in the same process tree, \
         release build).\n\n{md}\n<details><summary>JSON</summary>\n\n```json\n{}\n```\n</details>\n{END}\n",
        serde_json::to_string_pretty(figures)?
    );
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{section}{}", &existing[..start], &existing[end + END.len()..].trim_start_matches('\n'))
        }
        _ => format!("{}\n{section}", existing.trim_end()),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(before: u64, after_window: u64, grants: u64, host_afters: Vec<u64>) -> RetentionFigures {
        RetentionFigures {
            grants,
            before,
            peak: 0,
            after: 0,
            afters: Vec::new(),
            after_window,
            host_afters,
            keys_left: None,
        }
    }

    // Proves the retention bounds are judged as docs/backends.md states them: Redis against its
    // figure before the rains, the embedded host against the control host's leftover, both plus
    // 20 bytes a user.
    #[test]
    fn retention_bounds_hold_or_are_exceeded_as_stated() {
        let redis = figures(100_000_000, 100_500_000, 50_000, vec![80_000_000, 90_000_000, 92_000_000]);
        let embedded = figures(90_000_000, 103_000_000, 100_000, Vec::new());
        let lines = retention_bounds(&redis, &embedded);
        assert!(lines[0].ends_with("**holds**."), "{}", lines[0]);
        assert!(lines[1].ends_with("**holds**."), "12 + 2 MB allowed, 13 kept: {}", lines[1]);
        let embedded = figures(90_000_000, 105_000_000, 100_000, Vec::new());
        assert!(retention_bounds(&redis, &embedded)[1].ends_with("**exceeded**."));
        let redis = figures(100_000_000, 102_000_000, 50_000, vec![80_000_000, 92_000_000]);
        assert!(retention_bounds(&redis, &embedded)[0].ends_with("**exceeded**."));
    }
}
