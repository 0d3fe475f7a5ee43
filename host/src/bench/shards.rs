//! `hongbao bench shards`: credits/s the ledger takes over 1, 2 and 3 PostgreSQL shards.
//!
//! The writers' side of the rain, without hosts or Redis: concurrent writers (as a fleet's would)
//! credit batches of distinct users into a ledger of fresh databases, as fast as the ledger takes
//! them, and the run reports credits per second for each shard count. The shards are databases
//! on the PostgreSQL server of `--ledger` (or `DATABASE_URL`), made and dropped by the run, or
//! with `--own-servers` one database on each of up to three throw-away servers the run starts
//! (`initdb` + `pg_ctl` in temporary directories, run as the `postgres` user when root). The
//! output says which it measured.

use std::path::{Path, PathBuf};
use std::process::Command;
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
    /// One throw-away server per shard instead of databases on `database_url`'s server.
    pub own_servers: bool,
    /// Show a progress bar on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
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
    let mut servers = Vec::new();
    if config.own_servers {
        for index in 0..config.shard_counts.iter().copied().max().unwrap_or(0) {
            servers.push(OwnServer::start(index).with_context(|| format!("starting bench server {index}"))?);
        }
    }
    let bar = if config.progress {
        let style = indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} shard counts {msg}")
            .expect("a valid template");
        indicatif::ProgressBar::new(config.shard_counts.len() as u64).with_style(style)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let mut figures = Vec::new();
    for &shards in &config.shard_counts {
        bar.set_message(format!("measuring {shards} shard(s)"));
        let server_urls: Vec<String> = match config.own_servers {
            true => servers[..shards].iter().map(OwnServer::url).collect(),
            false => vec![config.database_url.clone(); shards],
        };
        let databases = Databases::create(&server_urls).await?;
        let outcome = measure(config, &databases.urls.join(","), shards).await;
        databases.drop_all().await;
        let figure = outcome?;
        if config.progress {
            bar.suspend(|| eprintln!("{shards} shard(s): {:.0} credits/s", figure.credits_per_s));
        }
        bar.inc(1);
        figures.push(figure);
    }
    bar.finish_and_clear();
    Ok(figures)
}

/// The figures as a table, saying where the shards ran.
pub fn summary(config: &ShardsConfig, figures: &[ShardsFigure]) -> String {
    let place = match config.own_servers {
        true => "Every shard is its own throw-away PostgreSQL server (initdb defaults), all on this machine.",
        false => "Every shard is a database on the ONE PostgreSQL server given (they share its cores and disk).",
    };
    let mut text = format!(
        "Ledger credits/s by shard count: {} credits of distinct users, batches of {}, {} writers at once.\n\
         {place}\n\n| shards | credits/s |\n|---|---|\n",
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

/// Throw-away databases, one on each server given.
struct Databases {
    /// A maintenance connection to each database's server, and the database's name.
    made: Vec<(tokio_postgres::Client, String)>,
    urls: Vec<String>,
}

impl Databases {
    async fn create(server_urls: &[String]) -> anyhow::Result<Databases> {
        let run = format!("{:08x}", fastrand::u32(..));
        let mut databases = Databases { made: Vec::new(), urls: Vec::new() };
        for (index, server_url) in server_urls.iter().enumerate() {
            let (admin, connection) =
                tokio_postgres::connect(server_url, tokio_postgres::NoTls).await.context("connecting to PostgreSQL")?;
            tokio::spawn(connection);
            let name = format!("hb_bench_{run}_{index}");
            admin.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
            databases.urls.push(with_database(server_url, &name));
            databases.made.push((admin, name));
        }
        Ok(databases)
    }

    async fn drop_all(self) {
        for (admin, name) in &self.made {
            if let Err(error) = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await {
                eprintln!("could not drop bench database {name}: {error}");
            }
        }
    }
}

/// A PostgreSQL server of the bench's own in a temporary directory; stopped and removed when
/// dropped. `initdb`, `pg_ctl` and `postgres` refuse to run as root, so as root they run as the
/// `postgres` user.
struct OwnServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnServer {
    fn start(index: usize) -> anyhow::Result<OwnServer> {
        let bin = postgres_bin_dir().context("initdb and pg_ctl not found (/usr/lib/postgresql/*/bin or PATH)")?;
        let dir = std::env::temp_dir().join(format!("hongbao-bench-pg-{}-{index}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run_to_end(Command::new("chown").arg("postgres:").arg(&dir))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = OwnServer { bin, dir, port };
        let data = server.dir.join("data");
        run_to_end(server.command("initdb").arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "--no-sync"]))?;
        let options =
            format!("-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=200", server.dir.display());
        let log = server.dir.join("postgres.log");
        let mut start = server.command("pg_ctl");
        start.arg("start").arg("-w").arg("-D").arg(&data).arg("-l").arg(&log).args(["-o", &options]);
        run_to_end(&mut start)?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `program` from the server binaries, as the `postgres` user when root, working in the
    /// server's directory.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir);
        command
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.command("pg_ctl").arg("stop").arg("-D").arg(&data).args(["-m", "immediate"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command to its end; its output is the error when it fails.
fn run_to_end(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Whether this process runs as root.
fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The directory with `initdb` and `pg_ctl`: the highest `/usr/lib/postgresql/*/bin` (Debian
/// keeps them out of PATH), else one on PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    debian.sort();
    let on_path =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    debian.into_iter().rev().map(|(_, dir)| dir).chain(on_path).find(|dir| has_server(dir))
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
