//! `hongbao bench shards`: credits/s the ledger takes over 1, 2 and 3 PostgreSQL shards.
//!
//! The writers' side of the rain, without hosts or Redis: concurrent writers (as a fleet's would)
//! credit batches of distinct users into a ledger of fresh databases, as fast as the ledger takes
//! them, and the run reports credits per second for each shard count. The shards are databases
//! on the PostgreSQL server of `--ledger` (or `DATABASE_URL`), made and dropped by the run: on one
//! server they share its cores and disk, so the figures show what the sharding itself costs and
//! gains there; separate servers scale further. The output says which it measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;

use crate::ledger::{Credit, CreditResult, PostgresLedger};

/// Shard counts measured by default.
pub const SHARD_COUNTS: [usize; 3] = [1, 2, 3];

/// What one run measures.
#[derive(Debug, Clone)]
pub struct ShardsConfig {
    /// A PostgreSQL server (any database on it) whose user may create databases.
    pub database_url: String,
    /// Credits per shard count.
    pub credits: usize,
    /// Credits per ledger batch (the writer's `--credit-batch`).
    pub batch: usize,
    /// Batches in flight at once: the writers of a fleet.
    pub writers: usize,
    /// The shard counts to measure.
    pub shard_counts: Vec<usize>,
}

/// One shard count's figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardsFigure {
    /// Ledger shards.
    pub shards: usize,
    /// Credits made.
    pub credits: usize,
    /// Credits per second, first batch sent to last batch committed.
    pub credits_per_s: f64,
}

/// Measures every shard count in turn.
pub async fn run(config: &ShardsConfig) -> anyhow::Result<Vec<ShardsFigure>> {
    let mut figures = Vec::new();
    for &shards in &config.shard_counts {
        let databases = Databases::create(&config.database_url, shards).await?;
        let outcome = measure(config, &databases.urls.join(","), shards).await;
        databases.drop_all().await;
        let figure = outcome?;
        eprintln!("{shards} shard(s): {:.0} credits/s", figure.credits_per_s);
        figures.push(figure);
    }
    Ok(figures)
}

/// The figures as a table, saying where the shards ran.
pub fn summary(config: &ShardsConfig, figures: &[ShardsFigure]) -> String {
    let mut text = format!(
        "Ledger credits/s by shard count: {} credits of distinct users, batches of {}, {} writers at once.\n\
         Every shard is a database on the ONE PostgreSQL server given (they share its cores and disk).\n\n\
         | shards | credits/s |\n|---|---|\n",
        config.credits, config.batch, config.writers
    );
    for figure in figures {
        text.push_str(&format!("| {} | {:.0} |\n", figure.shards, figure.credits_per_s));
    }
    text
}

/// Credits `config.credits` red packets into a fresh ledger over `urls`.
async fn measure(config: &ShardsConfig, urls: &str, shards: usize) -> anyhow::Result<ShardsFigure> {
    let ledger = PostgresLedger::connect(urls).await.context("connecting to the bench ledger")?;
    let activity = "bench";
    let budget_cents = i64::try_from(config.credits).context("credits")?;
    ledger.fund_activity(activity.into(), budget_cents, 0).await?;
    let credits: Vec<Credit> = (0..config.credits)
        .map(|n| {
            // Users spread over the shards as real act_ids do.
            let act_id = 10_000_000 + n as i64;
            Credit {
                activity_id: activity.into(),
                order_no: format!("{act_id}_bench_0_cash_0"),
                scene_id: "rain".into(),
                act_id,
                amount_cents: 1,
                open_time_ms: n as u64,
                memo: String::new(),
                token: String::new(),
            }
        })
        .collect();
    let batches: Arc<Vec<Vec<Credit>>> =
        Arc::new(credits.chunks(config.batch.max(1)).map(<[Credit]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..config.writers.max(1))
        .map(|_| {
            let (ledger, batches, next) = (ledger.clone(), batches.clone(), next.clone());
            tokio::spawn(async move {
                while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let results = ledger.credit_batch(batch.clone()).await?;
                    anyhow::ensure!(results.iter().all(|r| *r == CreditResult::Applied), "a bench credit was refused");
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(ledger.balance("budget/bench").await? == 0, "the bench budget was not paid out exactly");
    Ok(ShardsFigure { shards, credits: config.credits, credits_per_s: config.credits as f64 / elapsed })
}

/// Throw-away databases on one server.
struct Databases {
    admin: tokio_postgres::Client,
    names: Vec<String>,
    urls: Vec<String>,
}

impl Databases {
    async fn create(server_url: &str, count: usize) -> anyhow::Result<Databases> {
        let (admin, connection) =
            tokio_postgres::connect(server_url, tokio_postgres::NoTls).await.context("connecting to PostgreSQL")?;
        tokio::spawn(connection);
        let run = format!("{:08x}", fastrand::u32(..));
        let mut databases = Databases { admin, names: Vec::new(), urls: Vec::new() };
        for index in 0..count {
            let name = format!("hb_bench_{run}_{index}");
            databases.admin.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
            databases.urls.push(with_database(server_url, &name));
            databases.names.push(name);
        }
        Ok(databases)
    }

    async fn drop_all(self) {
        for name in &self.names {
            if let Err(error) = self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
            {
                eprintln!("could not drop bench database {name}: {error}");
            }
        }
    }
}

/// `url` (a `postgres://` URL) with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = url.split_at(url[after_scheme..].find('?').map_or(url.len(), |i| after_scheme + i));
    let server = head[after_scheme..].find('/').map_or(head, |i| &head[..after_scheme + i]);
    format!("{server}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the bench's databases are named on the server given, its query kept.
    #[test]
    fn bench_databases_are_on_the_given_server() {
        assert_eq!(with_database("postgres://u@h:5/test?x=1", "n"), "postgres://u@h:5/n?x=1");
        assert_eq!(with_database("postgres://h", "n"), "postgres://h/n");
    }
}
