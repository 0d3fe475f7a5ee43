//! The three deployments the conformance suite runs every behaviour test against, from one
//! source: embedded (the default), Redis + PostgreSQL, Redis Cluster + a ledger of two
//! PostgreSQL shards.

use std::path::Path;
use std::sync::Arc;

use hongbao::app::{App, AppConfig};
use hongbao::clock::Clock;
use hongbao::ledger::{EmbeddedLedger, Ledger, PostgresLedger};
use hongbao::store::{EmbeddedStore, RedisStore, RedisStoreConfig, Store};
use hongbao::writer::WriterConfig;

use crate::backends;

/// Where a test's host keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// The embedded store and ledger in the data directory.
    Embedded,
    /// One Redis and PostgreSQL.
    Redis,
    /// A three-master Redis Cluster and a ledger sharded over two PostgreSQL databases
    /// ([`LEDGER_SHARDS`]).
    Cluster,
}

/// The ledger shards of the `cluster` deployment: every `NAME::cluster` test and the fleet tests
/// run on a ledger split over this many databases (on the one test server: the sharding logic,
/// not the servers' separation, is what they test).
pub const LEDGER_SHARDS: usize = 2;

/// The backends of one deployment instance: a fresh key prefix and a fresh database, so that
/// tests running at once never see each other's state. Hosts started with the same
/// `Backends` share it (a restart, or a fleet).
#[derive(Debug, Clone)]
pub struct Backends {
    /// `--store` URL, when not embedded.
    pub store_url: Option<String>,
    /// Key prefix in Redis.
    pub prefix: String,
    /// `--ledger` URL, when not embedded: one database, or a comma list of the ledger's shards.
    pub ledger_url: Option<String>,
    /// `--reclaim-after-ms` for hosts on Redis.
    pub reclaim_after_ms: u64,
}

impl Deployment {
    /// Fresh backends for one test.
    pub fn backends(self) -> Backends {
        let (store_url, ledger_url) = match self {
            Deployment::Embedded => (None, None),
            Deployment::Redis => (Some(backends::shared_redis_url()), Some(backends::fresh_database_url())),
            Deployment::Cluster => {
                (Some(backends::shared_cluster_url()), Some(backends::fresh_sharded_ledger_url(LEDGER_SHARDS)))
            }
        };
        Backends { store_url, prefix: backends::unique_prefix(), ledger_url, reclaim_after_ms: 300 }
    }
}

/// The Redis operation timeout of the tests' hosts and in-process stores. A debug-build host
/// while other tests build wasm components on both cores can wait more than the default 2 s
/// for an answer from a healthy Redis; a lost Redis refuses connections at once, so the tests
/// of one do not wait this out.
const STORE_TIMEOUT_MS: u64 = 15_000;

impl Backends {
    /// The ledger's databases, one per shard (none when embedded). Tables a test reads beside
    /// the ledger's own (identities) live in the first.
    pub fn ledger_databases(&self) -> Vec<String> {
        self.ledger_url.as_deref().map_or_else(Vec::new, |urls| urls.split(',').map(str::to_owned).collect())
    }

    /// The `hongbao serve` flags that select these backends. Claims left by a killed host are
    /// taken over after `reclaim_after_ms` (300 ms unless a test says otherwise), so crash tests
    /// finish quickly.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(url) = &self.store_url {
            args.extend(["--store".into(), url.clone(), "--store-prefix".into(), self.prefix.clone()]);
            args.extend(["--reclaim-after-ms".into(), self.reclaim_after_ms.to_string()]);
            args.extend(["--store-timeout-ms".into(), STORE_TIMEOUT_MS.to_string()]);
        }
        if let Some(url) = &self.ledger_url {
            args.extend(["--ledger".into(), url.clone()]);
        }
        args
    }

    fn redis_config(&self) -> Option<RedisStoreConfig> {
        self.store_url.as_ref().map(|url| {
            let mut config = RedisStoreConfig::new(url.clone());
            config.prefix = self.prefix.clone();
            // In-process tests "crash" by dropping the app: its claims are taken over at once.
            config.reclaim_after_ms = 0;
            config.op_timeout_ms = STORE_TIMEOUT_MS;
            config
        })
    }

    /// Opens the store and the ledger in-process (embedded ones in `data_dir`).
    pub async fn open(&self, data_dir: &Path) -> (Store, Ledger) {
        let store = match self.redis_config() {
            None => Store::Embedded(EmbeddedStore::open(data_dir).unwrap()),
            Some(config) => Store::Redis(RedisStore::connect(config).await.unwrap()),
        };
        let ledger = match &self.ledger_url {
            None => Ledger::Embedded(EmbeddedLedger::open(data_dir).unwrap()),
            Some(url) => Ledger::Postgres(PostgresLedger::connect(url).await.unwrap()),
        };
        (store, ledger)
    }

    /// Opens a whole host in-process on these backends.
    pub async fn open_app(
        &self,
        scenes_dir: &Path,
        data_dir: &Path,
        writer: WriterConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<App> {
        let config = AppConfig {
            scenes_dir: scenes_dir.to_owned(),
            data_dir: data_dir.to_owned(),
            writer,
            writer_enabled: false,
            store: self.redis_config(),
            ledger_url: self.ledger_url.clone(),
            sync_credit: false,
            retain_credited_ms: hongbao::store::RETAIN_CREDITED_S_DEFAULT * 1000,
            record_decisions: Vec::new(),
        };
        App::open(&config, clock).await.unwrap()
    }
}

/// Runs behaviour tests against every deployment. Each test is a plain function taking the
/// deployment, written next to the invocation so that rustfmt formats its body:
///
/// ```ignore
/// conformance!(grant_is_idempotent);
/// fn grant_is_idempotent(deployment: Deployment) { … }
/// ```
///
/// For each name this declares a module of the same name with the tests `NAME::embedded`,
/// `NAME::redis` and `NAME::cluster` (a module and a function may share a name: they live in
/// different namespaces).
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn embedded() {
                    super::$name($crate::deployment::Deployment::Embedded)
                }

                #[test]
                fn redis() {
                    super::$name($crate::deployment::Deployment::Redis)
                }

                #[test]
                fn cluster() {
                    super::$name($crate::deployment::Deployment::Cluster)
                }
            }
        )+
    };
}

pub(crate) use conformance;

impl Backends {
    /// Loses every key of the token store, as a Redis restart without persistence or a deleted
    /// `tokens.log` (and `packets.log`, the group red packets' part of it) would; the ledger
    /// keeps its books.
    pub fn lose_token_store(&self, data_dir: &Path) {
        let Some(url) = &self.store_url else {
            std::fs::remove_file(data_dir.join("tokens.log")).unwrap();
            let _ = std::fs::remove_file(data_dir.join("packets.log"));
            return;
        };
        let nodes = hongbao::store::cluster_nodes(url).unwrap_or_else(|| vec![url.clone()]);
        let pattern = format!("{}:*", self.prefix);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for node in nodes {
                let client = redis::Client::open(node.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let mut cursor = 0_u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    for key in keys {
                        let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        });
    }
}
