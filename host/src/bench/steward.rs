//! The payment steward against the fixed-rate writer (`just bench`; alone with `hongbao bench
//! suite --only steward`): the same backlog drained into PostgreSQL by a writer capped at
//! [`CAP`] credits/s, once with `--fixed-rate` and once with the steward, while the ledger is
//! slowed on purpose for [`SLOW_FOR`].
//!
//! The slowdown: a trigger makes every statement that inserts ledger entries take one lane (an
//! advisory lock) and sleep [`SLOW_ENTRY_MS`] per entry, so the ledger does one batch at a time,
//! at a fixed pace per entry: a ledger whose capacity fell below the cap, where a writer that
//! pushes harder only builds a queue in front of it. A probe stands for the ledger's other users
//! (the seed's bank, the wallet's withdrawals): every [`PROBE_EVERY`] a small transaction that
//! needs the same lane. Its latency is what the writer's pressure costs them; the writer's own
//! batch times come from the host's `/metrics` histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::histogram::HistogramDelta;
use super::rain;
use super::suite::{Host, Production, rain_config, start_host};

/// The writer's cap in both runs.
pub const CAP: u64 = 5_000;

/// Tokens in the backlog each run drains.
pub const BACKLOG: u64 = 40_000;

/// How long the writer credits on a healthy ledger first, for the steward to learn its pace.
pub const HEALTHY_FOR: Duration = Duration::from_secs(3);

/// How long the ledger stays slow.
pub const SLOW_FOR: Duration = Duration::from_secs(15);

/// What every inserted entry costs in the lane while the ledger is slow: a capacity of about
/// 3,300 credits/s, two thirds of the cap.
pub const SLOW_ENTRY_MS: f64 = 0.3;

/// How often the probe asks for the ledger's lane.
pub const PROBE_EVERY: Duration = Duration::from_millis(20);

/// The lane: the advisory lock the slowed statements and the probe take.
const LANE: i64 = 4242;

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StewardFigures {
    /// `fixed` or `adaptive`.
    pub mode: &'static str,
    /// Tokens drained.
    pub backlog: u64,
    /// Credits per second while the ledger was slow.
    pub slow_credits_per_s: f64,
    /// Entries per ledger batch while the ledger was slow.
    pub slow_batch_entries: f64,
    /// From the writer's start to an empty backlog.
    pub drain_s: f64,
    /// The writer's ledger batches while the ledger was slow, p50 and p99 (from the host's
    /// histogram, interpolated within buckets as Prometheus' `histogram_quantile` does).
    pub batch_p50_ms: f64,
    /// See `batch_p50_ms`.
    pub batch_p99_ms: f64,
    /// The probe's wait for the ledger while it was slow.
    pub probe_p50_ms: f64,
    /// See `probe_p50_ms`.
    pub probe_p90_ms: f64,
    /// See `probe_p50_ms`.
    pub probe_p99_ms: f64,
    /// Probe transactions made.
    pub probes: usize,
    /// Ledger batches that failed over the whole run.
    pub batch_errors: f64,
    /// Times the steward lowered the limit.
    pub backoffs: f64,
    /// The lowest limit `/metrics` showed while the ledger was slow.
    pub lowest_limit: f64,
}

impl Production<'_> {
    /// Both runs, fixed first.
    pub(super) async fn steward_runs(&self) -> anyhow::Result<Vec<StewardFigures>> {
        let mut figures = Vec::new();
        for (mode, extra) in [("fixed", vec!["--fixed-rate"]), ("adaptive", vec![])] {
            eprintln!("payment steward: {mode} writer, ledger slowed for {} s", SLOW_FOR.as_secs());
            figures.push(self.steward_run(mode, &extra).await?);
        }
        Ok(figures)
    }

    async fn steward_run(&self, mode: &'static str, extra: &[&str]) -> anyhow::Result<StewardFigures> {
        let activity = self.activity(&format!("steward-{mode}"));
        let filler = start_host(&activity, &self.config.plugins_dir, &self.args(&["--no-writer"]))?;
        filler.ready(super::suite::PLUGINS_READY_LIMIT).await?;
        let mut fill = rain_config(&filler, &activity, self.config, 600_000_000);
        fill.check_books = false;
        fill.count = Some(BACKLOG);
        fill.duration = Duration::from_secs(600);
        let filled = rain::run(&fill).await?;
        drop(filler);

        let cap = CAP.to_string();
        let mut args = vec!["--credits-per-second", cap.as_str()];
        args.extend_from_slice(extra);
        let host = start_host(&activity, &self.config.plugins_dir, &self.args(&args))?;
        host.ready(super::suite::PLUGINS_READY_LIMIT).await?;
        let started = Instant::now();
        let before = metrics(&host).await?;
        tokio::time::sleep(HEALTHY_FOR).await;
        let ledger = Ledger::connect(self.database_url).await?;
        ledger.slow_down().await?;
        // The ledger is healed whatever happens while it is slow.
        let slowed = slow_window(&host, self.database_url).await;
        ledger.heal().await?;
        let (slow_from, slow_to, probe_ms, lowest_limit) = slowed?;
        wait_empty(&host).await?;
        let drain_s = started.elapsed().as_secs_f64();
        let after = metrics(&host).await?;

        let slow_s = SLOW_FOR.as_secs_f64();
        let slow_credits = value(&slow_to, "hongbao_credits_total") - value(&slow_from, "hongbao_credits_total");
        let slow_batches =
            value(&slow_to, "hongbao_ledger_batches_total") - value(&slow_from, "hongbao_ledger_batches_total");
        let batches = HistogramDelta::between(&slow_from, &slow_to, LEDGER_BATCH_BUCKETS);
        Ok(StewardFigures {
            mode,
            backlog: filled.granted,
            slow_credits_per_s: slow_credits / slow_s,
            slow_batch_entries: slow_credits / slow_batches.max(1.0),
            drain_s,
            batch_p50_ms: batches.quantile(0.5) * 1_000.0,
            batch_p99_ms: batches.quantile(0.99) * 1_000.0,
            probe_p50_ms: percentile(&probe_ms, 0.5),
            probe_p90_ms: percentile(&probe_ms, 0.9),
            probe_p99_ms: percentile(&probe_ms, 0.99),
            probes: probe_ms.len(),
            batch_errors: value(&after, "hongbao_ledger_batch_errors_total")
                - value(&before, "hongbao_ledger_batch_errors_total"),
            backoffs: value(&after, "hongbao_writer_backoffs_total"),
            lowest_limit,
        })
    }
}

/// Watches the host while the ledger is slow, with the probe running: the metrics pages at the
/// start and the end, the probe's waits, and the lowest limit seen.
async fn slow_window(host: &Host, database_url: &str) -> anyhow::Result<(String, String, Vec<f64>, f64)> {
    let slow_from = metrics(host).await?;
    let probe = Probe::start(database_url).await?;
    let mut lowest_limit = f64::INFINITY;
    let started = Instant::now();
    while started.elapsed() < SLOW_FOR {
        tokio::time::sleep(Duration::from_millis(250)).await;
        lowest_limit = lowest_limit.min(limit(&metrics(host).await?));
    }
    let probe_ms = probe.stop().await;
    Ok((slow_from, metrics(host).await?, probe_ms, lowest_limit))
}

/// The host's `/metrics` page.
async fn metrics(host: &Host) -> anyhow::Result<String> {
    rain::get_text(&host.addr, &host.credentials, "/metrics").await
}

/// The ledger batch histogram's bucket lines, up to their `le`.
const LEDGER_BATCH_BUCKETS: &str = "hongbao_ledger_batch_duration_seconds_bucket{";

/// The value of the unlabelled sample `name` (0 when absent).
pub(super) fn value(page: &str, name: &str) -> f64 {
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// The writer's limit on a metrics page (+Inf: none).
fn limit(page: &str) -> f64 {
    page.lines()
        .find(|line| line.starts_with("hongbao_writer_limit_credits_per_second{"))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| if value == "+Inf" { Some(f64::INFINITY) } else { value.parse().ok() })
        .unwrap_or(f64::INFINITY)
}

async fn wait_empty(host: &Host) -> anyhow::Result<()> {
    let started = Instant::now();
    while value(&metrics(host).await?, "hongbao_crediting_backlog") > 0.0 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the backlog did not drain in 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The `q` percentile of `samples` (ms).
fn percentile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A connection to the ledger's database that slows it down and heals it.
struct Ledger {
    client: tokio_postgres::Client,
}

impl Ledger {
    async fn connect(url: &str) -> anyhow::Result<Ledger> {
        let (client, connection) =
            tokio_postgres::connect(url, tokio_postgres::NoTls).await.context("connecting to the bench's ledger")?;
        tokio::spawn(connection);
        Ok(Ledger { client })
    }

    async fn slow_down(&self) -> anyhow::Result<()> {
        let sql = format!(
            "CREATE OR REPLACE FUNCTION hb_bench_slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               PERFORM pg_advisory_xact_lock({LANE});
               PERFORM pg_sleep({} * (SELECT count(*) FROM inserted));
               RETURN NULL;
             END $$;
             DROP TRIGGER IF EXISTS hb_bench_slow ON entries;
             CREATE TRIGGER hb_bench_slow AFTER INSERT ON entries REFERENCING NEW TABLE AS inserted
               FOR EACH STATEMENT EXECUTE FUNCTION hb_bench_slow();",
            SLOW_ENTRY_MS / 1_000.0
        );
        self.client.batch_execute(&sql).await.context("slowing the ledger down")
    }

    async fn heal(&self) -> anyhow::Result<()> {
        self.client
            .batch_execute("DROP TRIGGER IF EXISTS hb_bench_slow ON entries; DROP FUNCTION IF EXISTS hb_bench_slow();")
            .await
            .context("healing the ledger")
    }
}

/// Another user of the ledger: a transaction in its lane every [`PROBE_EVERY`], timed.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl Probe {
    async fn start(url: &str) -> anyhow::Result<Probe> {
        let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut waits_ms = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let Ok(transaction) = client.transaction().await else { break };
                let locked = transaction.execute(&format!("SELECT pg_advisory_xact_lock({LANE})"), &[]).await;
                if locked.is_err() || transaction.commit().await.is_err() {
                    break;
                }
                waits_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
                tokio::time::sleep(PROBE_EVERY).await;
            }
            waits_ms
        });
        Ok(Probe { stop, task })
    }

    async fn stop(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The comparison as a Markdown table.
pub fn table(figures: &[StewardFigures]) -> String {
    let mut md = format!(
        "Payment steward: {} tokens drained into PostgreSQL at a cap of {CAP}/s; after {} s the ledger \
         is slowed for {} s (a trigger: one batch at a time, {SLOW_ENTRY_MS} ms an entry), and a probe \
         stands for the ledger's other users (a transaction in the same lane every {} ms).\n\n\
         | writer | credits/s while slow | entries a batch | drain | batch p50 / p99 while slow | the others' wait p50 / p90 / p99 | batch errors | back-offs | lowest limit |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        figures.first().map_or(0, |figure| figure.backlog),
        HEALTHY_FOR.as_secs(),
        SLOW_FOR.as_secs(),
        PROBE_EVERY.as_millis()
    );
    for figure in figures {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.1} s | {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} ms ({} probes) | {:.0} | {:.0} | {} |\n",
            if figure.mode == "fixed" { "fixed rate (`--fixed-rate`)" } else { "payment steward" },
            figure.slow_credits_per_s,
            figure.slow_batch_entries,
            figure.drain_s,
            figure.batch_p50_ms,
            figure.batch_p99_ms,
            figure.probe_p50_ms,
            figure.probe_p90_ms,
            figure.probe_p99_ms,
            figure.probes,
            figure.batch_errors,
            figure.backoffs,
            if figure.lowest_limit.is_finite() { format!("{:.0}/s", figure.lowest_limit) } else { "none".into() },
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves quantiles come out of the histogram's buckets as Prometheus computes them.
    #[test]
    fn quantiles_interpolate_within_buckets() {
        let page = |counts: [u64; 3]| {
            format!(
                "hongbao_ledger_batch_duration_seconds_bucket{{le=\"0.1\"}} {}\nhongbao_ledger_batch_duration_seconds_bucket{{le=\"0.2\"}} {}\nhongbao_ledger_batch_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
                counts[0], counts[1], counts[2]
            )
        };
        let buckets = HistogramDelta::between(&page([10, 10, 10]), &page([60, 110, 110]), LEDGER_BATCH_BUCKETS);
        assert!((buckets.quantile(0.5) - 0.1).abs() < 1e-9, "{}", buckets.quantile(0.5));
        assert!((buckets.quantile(0.75) - 0.15).abs() < 1e-9);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 100.0], 0.5), 3.0);
        assert_eq!(value("a_total 7\nb 3\n", "b"), 3.0);
    }
}
