//! The running host: every part, wired together once at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::access::Access;
use crate::breaker::{Breaker, LEDGER_RETRY_AFTER_MS, STORE_RETRY_AFTER_MS};
use crate::capability::rate_limit::RateLimiter;
use crate::clock::Clock;
use crate::config::SceneRegistry;
use crate::identity::Identities;
use crate::issuer::Issuer;
use crate::issuer::watch::ForgeryWatch;
use crate::ledger::{EmbeddedLedger, Ledger, LedgerError, PostgresLedger};
use crate::plugin::PluginRuntime;
use crate::plugin::decisions::DecisionLog;
use crate::store::{EmbeddedStore, RedisStore, RedisStoreConfig, Store};
use crate::wallet::FiguresCache;
use crate::writer::{LedgerWriter, WriterConfig};

/// How often the scene directory is checked for changes; edits take effect within this long
/// (plus parsing), well inside the one second promised even on a loaded machine. A check reads
/// and hashes the scene files, which costs microseconds for a campaign's few files.
pub const SCENE_RELOAD_INTERVAL_MS: u64 = 100;

/// Writer loops per host on the Redis store: two keep Redis and PostgreSQL both busy (one
/// batch's ledger transaction overlaps the next one's claim). Measured on 2 cores: one loop
/// drained 13.5–18k credits/s, two 27k, four 24k (they only contend).
pub const WRITER_LOOPS_ON_REDIS: usize = 2;

/// How long a starting host keeps trying to connect to its ledger and fund its activities while
/// the ledger does not answer, before it exits with the ledger's error.
pub const LEDGER_AT_START_LIMIT: Duration = Duration::from_secs(60);

/// The pause between those tries.
const LEDGER_AT_START_RETRY: Duration = Duration::from_millis(500);

/// What `hongbao serve` needs to start.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The scene YAML directory.
    pub scenes_dir: PathBuf,
    /// Where the stores and keys live.
    pub data_dir: PathBuf,
    /// The ledger writer's settings.
    pub writer: WriterConfig,
    /// Whether this host runs the ledger writer.
    pub writer_enabled: bool,
    /// The token store: the embedded one in the data directory unless a Redis is named.
    pub store: Option<RedisStoreConfig>,
    /// The ledger: the embedded one in the data directory unless a PostgreSQL URL is given.
    pub ledger_url: Option<String>,
    /// Credit each grant to the ledger before answering it (the "traditional" design, for
    /// comparison benchmarks).
    pub sync_credit: bool,
    /// How long a credited record stays in the token store before it is retired (see
    /// [`crate::retention`]).
    pub retain_credited_ms: u64,
    /// Scenes whose plugin calls are recorded (`ACTIVITY/SCENE`, or `*`); none when empty (see
    /// [`crate::plugin::decisions`]).
    pub record_decisions: Vec<String>,
}

/// Every part of the host.
pub struct App {
    /// Whether [`App::spawn_background`] starts the ledger writer.
    pub writer_enabled: bool,
    /// The scene tree being served.
    pub registry: Arc<SceneRegistry>,
    /// Signs and verifies tokens.
    pub issuer: Issuer,
    /// Who may call what: app credentials, sessions, the admin credential.
    pub access: Arc<Access>,
    /// Counts of tokens that fail their signature, use a retired key or were never issued.
    pub forgery: ForgeryWatch,
    /// Where the keys and credentials live (read again when they change).
    pub data_dir: PathBuf,
    /// Hot state of the grant path.
    pub store: Store,
    /// Where money moves.
    pub ledger: Ledger,
    /// (app, app_user_id) → act_id, beside the ledger.
    pub identities: Identities,
    /// Credits the queue to the ledger.
    pub writer: Arc<LedgerWriter>,
    /// Per-scene and per-user rate state.
    pub rate: RateLimiter,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Runs the scenes' WebAssembly plugins.
    pub plugins: Arc<PluginRuntime>,
    /// Skips the ledger for a while after it failed: the grant path's replay lookup and the
    /// wallet's reads, so that a ledger outage costs one failed try a second, not one each.
    pub ledger_breaker: Breaker,
    /// Skips the token store for a while after it failed, for the wallet's reads.
    pub store_breaker: Breaker,
    /// The last ledger figures this host read for each user, for wallet reads during a ledger
    /// outage.
    pub wallet_figures: FiguresCache,
    /// Whether grants are credited before they are answered (see [`AppConfig::sync_credit`]).
    pub sync_credit: bool,
    /// How long a credited record stays in the token store (see [`crate::retention`]).
    pub retain_credited_ms: u64,
    /// The grant path's counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The dashboard's samples of the figures.
    pub dashboard: crate::dashboard::Dashboard,
}

/// `attempt`, tried again every [`LEDGER_AT_START_RETRY`] while `retry` says its error is the
/// ledger not answering (a PostgreSQL restarting, too loaded to finish a connection's start-up
/// within its limit, or holding the budget row past a request's limit), for up to
/// [`LEDGER_AT_START_LIMIT`]: a host that gave up on the first slow answer would leave its fleet
/// a host short until someone restarted it. Any other outcome is returned at once.
async fn ledger_at_start<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> Fut,
    retry: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    loop {
        match attempt().await {
            Err(error) if started.elapsed() < LEDGER_AT_START_LIMIT && retry(&error) => {
                tracing::warn!(%error, "the ledger did not answer {what} at start; trying again");
                tokio::time::sleep(LEDGER_AT_START_RETRY).await;
            }
            outcome => return outcome,
        }
    }
}

impl App {
    /// Opens the stores and keys in the data directory and loads the scenes.
    pub async fn open(config: &AppConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<App>> {
        let issuer = Issuer::open(&config.data_dir).context("loading the signing keys")?;
        let durable_nonces = config.store.is_some();
        let access =
            Access::open(&config.data_dir, durable_nonces, clock.now_ms()).context("loading the credentials")?;
        let store = match &config.store {
            None => Store::Embedded(EmbeddedStore::open(&config.data_dir).context("opening the token store")?),
            Some(redis) => Store::Redis(
                RedisStore::connect(redis.clone())
                    .await
                    .with_context(|| format!("connecting to the token store at `{}`", redis.url))?,
            ),
        };
        // Built in dependency order, so nothing is wired in after construction: the plugins read
        // stock from the store, the scenes load their plugins, and the writer asks the scenes'
        // compensation plugins.
        let plugins = PluginRuntime::with_stock_source(Some(&config.data_dir), Arc::new(store.clone()))
            .context("starting the plugin runtime")?;
        if !config.record_decisions.is_empty() {
            let log = DecisionLog::open(&config.data_dir, config.record_decisions.clone())
                .context("opening the decision log")?;
            plugins.record_decisions(Arc::new(log));
        }
        let registry = Arc::new(
            SceneRegistry::load(&config.scenes_dir, plugins.clone())
                .with_context(|| format!("reading scenes from `{}`", config.scenes_dir.display()))?,
        );
        let ledger = match &config.ledger_url {
            None => Ledger::Embedded(EmbeddedLedger::open(&config.data_dir).context("opening the ledger")?),
            Some(url) => Ledger::Postgres(
                ledger_at_start(
                    "connecting",
                    || PostgresLedger::connect(url),
                    |error| matches!(error, LedgerError::Unavailable(_)),
                )
                .await
                .context("connecting to the PostgreSQL ledger")?,
            ),
        };
        let identities = Identities::open(&config.data_dir, &ledger).await.context("opening the identity storage")?;
        let writer = Arc::new(
            LedgerWriter::new(store.clone(), ledger.clone(), clock.clone(), config.writer)
                .with_scenes(registry.clone()),
        );
        let app = Arc::new(App {
            writer_enabled: config.writer_enabled,
            registry,
            issuer,
            access: Arc::new(access),
            forgery: ForgeryWatch::default(),
            data_dir: config.data_dir.clone(),
            store,
            ledger,
            identities,
            writer,
            rate: RateLimiter::default(),
            clock,
            plugins,
            ledger_breaker: Breaker::new(LEDGER_RETRY_AFTER_MS),
            store_breaker: Breaker::new(STORE_RETRY_AFTER_MS),
            wallet_figures: FiguresCache::new(),
            sync_credit: config.sync_credit,
            retain_credited_ms: config.retain_credited_ms,
            metrics: crate::metrics::Metrics::default(),
            dashboard: crate::dashboard::Dashboard::default(),
        });
        // Funding is idempotent.
        ledger_at_start(
            "funding the activities",
            || app.fund_activities(),
            |error: &anyhow::Error| matches!(error.downcast_ref(), Some(LedgerError::Unavailable(_))),
        )
        .await
        .context("funding the activities' budget accounts")?;
        Ok(app)
    }

    /// Puts each served activity's budget into its ledger account (idempotent), then queues
    /// again the tokens the ledger had refused for want of funds.
    pub async fn fund_activities(&self) -> anyhow::Result<()> {
        let snapshot = self.registry.snapshot();
        for activity in snapshot.activities() {
            self.ledger.fund_activity(activity.id.clone(), activity.budget_cents, self.clock.now_ms()).await?;
        }
        let requeued = self.store.requeue_parked().await?;
        if requeued > 0 {
            tracing::warn!(requeued, "parked tokens queued again after funding");
        }
        Ok(())
    }

    /// Starts the background work: the ledger writer, the packet refund sweep and the scene
    /// reloader. All stop when
    /// `shutdown` turns true.
    pub fn spawn_background(self: &Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.writer_enabled {
            // On Redis, claims are exclusive (consumer groups) and the cap is taken atomically,
            // so several loops may credit at once: while one waits on PostgreSQL, another claims
            // or completes in Redis. The embedded queue hands its front to every claim, so it
            // keeps one loop.
            let loops = if matches!(self.store, Store::Redis(_)) { WRITER_LOOPS_ON_REDIS } else { 1 };
            for _ in 0..loops {
                tokio::spawn(self.writer.clone().run(shutdown.clone()));
            }
        }
        self.spawn_credentials_watch();
        tokio::spawn(crate::packet::refund::run(self.clone(), shutdown.clone()));
        tokio::spawn(crate::retention::run(self.clone(), shutdown.clone()));
        tokio::spawn(crate::dashboard::run(self.clone(), shutdown.clone()));
        let app = self.clone();
        let mut shutdown = shutdown;
        tokio::spawn(async move {
            // Funding is retried on every tick until it succeeds, so a budget raise never stays
            // unfunded because the ledger was briefly unavailable.
            let mut funding_owed = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(SCENE_RELOAD_INTERVAL_MS)) => {}
                    _ = shutdown.changed() => return,
                }
                if funding_owed {
                    match app.fund_activities().await {
                        Ok(()) => funding_owed = false,
                        Err(error) => tracing::warn!(%error, "funding activities failed; retrying"),
                    }
                }
                let registry = app.registry.clone();
                match tokio::task::spawn_blocking(move || registry.reload()).await {
                    Ok(Ok(true)) => {
                        tracing::info!("scene tree reloaded");
                        if let Err(error) = app.fund_activities().await {
                            tracing::warn!(%error, "funding reloaded activities failed; retrying");
                            funding_owed = true;
                        }
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "scene directory unreadable; keeping the scenes being served")
                    }
                    Err(error) => tracing::error!(%error, "scene reload panicked"),
                }
            }
        });
    }

    /// Reads the app credentials and the retired signing keys again whenever their files
    /// change, so `hongbao apps …` and `hongbao keys retire` take effect without a restart.
    fn spawn_credentials_watch(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(crate::access::APPS_RELOAD_INTERVAL);
            loop {
                ticks.tick().await;
                let Some(app) = app.upgrade() else { return };
                let reloaded = tokio::task::spawn_blocking(move || {
                    app.access.reload_if_changed();
                    if let Err(error) = app.issuer.reload_retired(&app.data_dir) {
                        tracing::error!(%error, "retired keys not reloaded; the previous list stays");
                    }
                });
                if reloaded.await.is_err() {
                    tracing::error!("reloading the credentials panicked");
                }
            }
        });
    }
}
