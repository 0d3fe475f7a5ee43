//! The `hongbao` command line.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

mod reconcile;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use serde::Deserialize;
use serde_saphyr::{MessageFormatter as _, UserMessageFormatter};

use crate::access::apps::Apps;
use crate::access::client::ClientCredentials;
use crate::app::{App, AppConfig};
use crate::clock::SystemClock;
use crate::issuer::{self, Issuer};
use crate::store::{RETAIN_CREDITED_S_DEFAULT, RETAIN_CREDITED_S_MAX, RedisStoreConfig};
use crate::writer::WriterConfig;

/// hongbao: red packets at Spring Festival scale.
#[derive(Debug, Parser)]
#[command(name = "hongbao", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API for the scenes in a directory.
    Serve(ServeOptions),
    /// Benchmarks against real hosts.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Work with scene files.
    Scenes {
        #[command(subcommand)]
        command: ScenesCommand,
    },
    /// Work with tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Work with signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write and try scene plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Manage app credentials (`DATA/keys/apps.json`); running hosts pick changes up within a
    /// second.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Check an activity's books on a running host (admin credential from the data directory):
    /// a table per scene, then every finding. Exits 1 when there are findings, 2 when the host
    /// could not be asked.
    Reconcile {
        /// The activity.
        #[arg(long)]
        activity: String,
        /// Apply the repairs the findings propose (credit lagging grants now), and list them.
        #[arg(long)]
        repair: bool,
        /// Print the host's report as JSON instead of the table (and no progress).
        #[arg(long)]
        json: bool,
        /// The host.
        #[arg(long, env = "HONGBAO_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The data directory holding the admin credential (`keys/admin.token`).
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Send one request to a host, signed with a credential from the data directory: the app's
    /// signature, or the admin credential on admin routes. Prints the answer's JSON.
    Call {
        /// `GET` or `POST`.
        method: String,
        /// The path and query, e.g. `/v1/wallets/10001`.
        path: String,
        /// The JSON body (none for GET).
        body: Option<String>,
        /// The host.
        #[arg(long, env = "HONGBAO_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The data directory holding the credentials.
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
        /// The app that signs: the one named in the body's `app_id`, else the only app.
        #[arg(long, env = "HONGBAO_APP")]
        app: Option<i64>,
        /// A user session (`Authorization: Bearer …`) instead of a signature.
        #[arg(long)]
        session: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Add an app with one new secret, printed once as JSON (it is never shown again).
    Add {
        /// The app id.
        app_id: i64,
        /// The activities it may act in, comma-separated; `*` for all.
        #[arg(long, value_delimiter = ',', required = true)]
        activities: Vec<String>,
        /// A name for operators.
        #[arg(long, default_value = "")]
        name: String,
        /// Do nothing when the app exists already (for setup scripts).
        #[arg(long)]
        if_missing: bool,
        /// The data directory.
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// List the apps, their activities and key ids (never secrets).
    List {
        /// The data directory.
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Give an app a new secret, printed once; its previous key keeps working until revoked
    /// (two keys overlap; a third rotation drops the oldest).
    Rotate {
        /// The app id.
        app_id: i64,
        /// The data directory.
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Revoke one key of an app, or the whole app (and its sessions) without --key.
    Revoke {
        /// The app id.
        app_id: i64,
        /// The key id.
        #[arg(long)]
        key: Option<String>,
        /// The data directory.
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
    },
}

/// `hongbao serve`'s settings, from one definition: each is a flag, an environment variable
/// (`HONGBAO_` and the name in capitals) and, except `config` and `sync_credit`, a key of the
/// `--config` file (the flag's name with `_`). A setting neither the command line nor the
/// environment gives is `None` here, takes the file's value, and else its default
/// ([`ServeOptions::app_config`]): flags win, then the environment, then the file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// A YAML file of `serve` settings (`store: redis://…`, `credits_per_second: 300000`,
    /// …: the flag names with `_`); the command line and the environment take precedence.
    #[arg(long, env = "HONGBAO_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed)
    /// [default: 127.0.0.1:8080]
    #[arg(long, env = "HONGBAO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of scene YAML files, watched for changes [default: scenes]
    #[arg(long, env = "HONGBAO_SCENES")]
    scenes: Option<PathBuf>,
    /// Directory for the embedded stores and the signing keys [default: data]
    #[arg(long, env = "HONGBAO_DATA")]
    data: Option<PathBuf>,
    /// Credits per second the ledger writer may make at most (0: no cap) [default: 0]
    #[arg(long, env = "HONGBAO_CREDITS_PER_SECOND")]
    credits_per_second: Option<u64>,
    /// Tokens per ledger batch [default: 512]
    #[arg(long, env = "HONGBAO_CREDIT_BATCH")]
    credit_batch: Option<usize>,
    /// Credit at --credits-per-second whatever the ledger's health: no payment steward (it
    /// lowers the writer's rate while ledger batches slow down or fail). For comparisons.
    #[arg(long, env = "HONGBAO_FIXED_RATE")]
    #[serde(default)]
    fixed_rate: bool,
    /// Do not run the ledger writer on this host: it takes grants and serves wallets, and
    /// tokens wait until a host with a writer credits them (withdrawals still force-credit).
    #[arg(long, env = "HONGBAO_NO_WRITER")]
    #[serde(default)]
    no_writer: bool,
    /// The token store: `redis://HOST:PORT[/DB]` or `redis-cluster://HOST:PORT,HOST:PORT,…`;
    /// the embedded store in --data when not given.
    #[arg(long, env = "HONGBAO_STORE")]
    store: Option<String>,
    /// The ledger: `postgres://USER@HOST:PORT/DB`, or a comma list of such URLs for a ledger
    /// sharded by user over several databases (fixed at the first start); the embedded ledger in
    /// --data when not given.
    #[arg(long, env = "HONGBAO_LEDGER")]
    ledger: Option<String>,
    /// Prefix of every Redis key, so several deployments can share a Redis [default: hb]
    #[arg(long, env = "HONGBAO_STORE_PREFIX")]
    store_prefix: Option<String>,
    /// Hash-tag shards of the Redis store (stock buckets and crediting queues); fixed for
    /// the life of a deployment [default: 16]
    #[arg(long, env = "HONGBAO_STORE_SHARDS")]
    store_shards: Option<u32>,
    /// Milliseconds a claimed crediting-queue entry may stay unfinished before another
    /// host's writer takes it over (Redis store) [default: 5000]
    #[arg(long, env = "HONGBAO_RECLAIM_AFTER_MS")]
    reclaim_after_ms: Option<u64>,
    /// Milliseconds one Redis operation may take before it fails as unavailable (a request
    /// then answers 503 and the writer retries), 1 to 60000 [default: 2000]
    #[arg(long, env = "HONGBAO_STORE_TIMEOUT_MS")]
    store_timeout_ms: Option<u64>,
    /// Seconds a credited token's record stays in the token store before it leaves (the ledger
    /// keeps it; replays are answered from there), 1 to 604800 [default: 600]
    #[arg(long, env = "HONGBAO_RETAIN_CREDITED_S")]
    retain_credited_s: Option<u64>,
    /// Record every plugin call of these scenes (`ACTIVITY/SCENE,…`, or `*` for all) in
    /// DATA/decisions/, for `hongbao plugin replay` [default: none]
    #[arg(long, env = "HONGBAO_RECORD_DECISIONS")]
    record_decisions: Option<String>,
    /// Credit every grant to the ledger before answering it: the traditional design, for
    /// comparing against the token design in benchmarks. Much slower; not for production.
    #[arg(long, env = "HONGBAO_SYNC_CREDIT")]
    #[serde(skip)]
    sync_credit: bool,
}

/// The longest `--store-timeout-ms` may be: past a minute a lost Redis would hold requests for
/// longer than any client waits.
const STORE_TIMEOUT_MS_MAX: u64 = 60_000;

/// `--listen` unless given.
const LISTEN_DEFAULT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

impl ServeOptions {
    /// These settings over the file's: one the command line or the environment gave wins. Such
    /// a setting is `Some` here; a flag (`no_writer`) is never `None`, so `matches` tells.
    fn over(self, file: ServeOptions, matches: &ArgMatches) -> ServeOptions {
        let given =
            |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        ServeOptions {
            config: self.config,
            listen: self.listen.or(file.listen),
            scenes: self.scenes.or(file.scenes),
            data: self.data.or(file.data),
            credits_per_second: self.credits_per_second.or(file.credits_per_second),
            credit_batch: self.credit_batch.or(file.credit_batch),
            fixed_rate: if given("fixed_rate") { self.fixed_rate } else { file.fixed_rate },
            no_writer: if given("no_writer") { self.no_writer } else { file.no_writer },
            store: self.store.or(file.store),
            ledger: self.ledger.or(file.ledger),
            store_prefix: self.store_prefix.or(file.store_prefix),
            store_shards: self.store_shards.or(file.store_shards),
            reclaim_after_ms: self.reclaim_after_ms.or(file.reclaim_after_ms),
            store_timeout_ms: self.store_timeout_ms.or(file.store_timeout_ms),
            retain_credited_s: self.retain_credited_s.or(file.retain_credited_s),
            record_decisions: self.record_decisions.or(file.record_decisions),
            sync_credit: self.sync_credit,
        }
    }

    /// The settings of `path`, a YAML mapping of the keys above; an unknown key or a value of
    /// the wrong type is refused with the file, line and key.
    fn from_file(path: &Path) -> anyhow::Result<ServeOptions> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading config file `{}`", path.display()))?;
        ServeOptions::from_config_text(path, &text)
    }

    /// The settings in `text`, the contents of the config file `path` (which only names it in
    /// errors): what `from_file` reads, and what the `config_file` fuzz target
    /// feeds arbitrary bytes.
    ///
    /// # Errors
    ///
    /// An unknown key or a value of the wrong type, with the file, line and key.
    pub fn from_config_text(path: &Path, text: &str) -> anyhow::Result<ServeOptions> {
        if text.trim().is_empty() {
            return Ok(ServeOptions::default());
        }
        serde_saphyr::from_str(text).map_err(|error| config_file_error(path, text, &error))
    }

    /// The host's configuration and its address, with every default filled in: those of the
    /// Redis store and the writer come from their own configurations.
    fn app_config(self) -> anyhow::Result<(AppConfig, SocketAddr)> {
        let store = match self.store {
            None => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("redis-cluster://") => {
                let mut config = RedisStoreConfig::new(url);
                config.prefix = self.store_prefix.unwrap_or(config.prefix);
                config.shards = self.store_shards.unwrap_or(config.shards);
                config.reclaim_after_ms = self.reclaim_after_ms.unwrap_or(config.reclaim_after_ms);
                config.op_timeout_ms = self.store_timeout_ms.unwrap_or(config.op_timeout_ms);
                if !(1..=STORE_TIMEOUT_MS_MAX).contains(&config.op_timeout_ms) {
                    anyhow::bail!(
                        "--store-timeout-ms `{}` must be 1..={STORE_TIMEOUT_MS_MAX} milliseconds",
                        config.op_timeout_ms
                    );
                }
                Some(config)
            }
            Some(url) => anyhow::bail!(
                "--store `{url}` is not a Redis URL: use redis://HOST:PORT or redis-cluster://HOST:PORT,HOST:PORT"
            ),
        };
        if let Some(urls) = &self.ledger
            && let Some(url) =
                urls.split(',').find(|url| !(url.starts_with("postgres://") || url.starts_with("postgresql://")))
        {
            anyhow::bail!(
                "--ledger `{url}` is not a PostgreSQL URL: use postgres://USER@HOST:PORT/DB, or a comma list of them \
                 (one per ledger shard)"
            );
        }
        let credits_per_second = self.credits_per_second.unwrap_or(0);
        let retain_credited_s = self.retain_credited_s.unwrap_or(RETAIN_CREDITED_S_DEFAULT);
        if !(1..=RETAIN_CREDITED_S_MAX).contains(&retain_credited_s) {
            anyhow::bail!("--retain-credited-s `{retain_credited_s}` must be 1..={RETAIN_CREDITED_S_MAX} seconds");
        }
        let config = AppConfig {
            store,
            sync_credit: self.sync_credit,
            ledger_url: self.ledger,
            scenes_dir: self.scenes.unwrap_or_else(|| "scenes".into()),
            data_dir: self.data.unwrap_or_else(|| "data".into()),
            writer: WriterConfig {
                credits_per_second_max: (credits_per_second > 0).then_some(credits_per_second),
                batch_entries_max: self.credit_batch.unwrap_or(WriterConfig::default().batch_entries_max),
                adaptive: !self.fixed_rate,
            },
            writer_enabled: !self.no_writer,
            retain_credited_ms: retain_credited_s * 1000,
            record_decisions: record_decisions(self.record_decisions.as_deref())?,
        };
        Ok((config, self.listen.unwrap_or(LISTEN_DEFAULT)))
    }
}

/// The scenes `--record-decisions` names: `*`, or `ACTIVITY/SCENE` each.
fn record_decisions(list: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(list) = list.filter(|list| !list.trim().is_empty()) else { return Ok(Vec::new()) };
    list.split(',')
        .map(str::trim)
        .map(|scene| match scene.split_once('/') {
            _ if scene == "*" => Ok(scene.to_owned()),
            Some((activity, name)) if !activity.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(scene.to_owned())
            }
            _ => anyhow::bail!("--record-decisions `{scene}` must be `*` or ACTIVITY/SCENE"),
        })
        .collect()
}

/// A config file's error as `FILE:LINE: …`, naming the setting; a file that is not YAML at all
/// keeps the parser's own message.
fn config_file_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> anyhow::Error {
    let line = error.location().map_or(0, |location| location.line());
    match error.without_snippet() {
        serde_saphyr::Error::SerdeUnknownField { field, expected, .. } => {
            anyhow::anyhow!("{}:{line}: unknown setting `{field}` (known: {})", path.display(), expected.join(", "))
        }
        inner => match setting_at(text, line) {
            Some(key) => anyhow::anyhow!(
                "{}:{line}: setting `{key}`: {}",
                path.display(),
                UserMessageFormatter.format_message(inner).trim()
            ),
            None => anyhow::anyhow!("config file `{}`: {error}", path.display()),
        },
    }
}

/// The top-level key whose value holds `line` (1-based): the last unindented `KEY:` at or
/// before it.
fn setting_at(text: &str, line: u64) -> Option<&str> {
    let lines = text.lines().take(usize::try_from(line).ok()?);
    let keys = lines.filter(|line| !line.starts_with([' ', '\t', '#', '-'])).filter_map(|line| line.split_once(':'));
    keys.map(|(key, _)| key.trim()).last().filter(|key| !key.is_empty())
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// A red packet rain against a running host: U users, R rains, C keep-alive connections,
    /// for a time or a count. Prints grants/s, latency percentiles, refusals, credits/s, the
    /// backlog and its drain time, and checks the books.
    Rain {
        /// The host, `HOST:PORT`.
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: String,
        /// The activity.
        #[arg(long, default_value = "spring-festival-2027")]
        activity: String,
        /// The scene.
        #[arg(long, default_value = "eve-rain")]
        scene: String,
        /// The scene's award type.
        #[arg(long, default_value = "cash")]
        award_type: String,
        /// An app allowed in the scene.
        #[arg(long, default_value_t = 1128)]
        app_id: i64,
        /// Users (act ids `first-user..first-user+users`).
        #[arg(long, default_value_t = 1_000_000)]
        users: u64,
        /// The first act id.
        #[arg(long, default_value_t = 1)]
        first_user: i64,
        /// Rains (rain ids `0..rains`).
        #[arg(long, default_value_t = 10)]
        rains: u32,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Grants per request: more than 1 sends them as `POST /v1/grants:batch`.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        batch: u64,
        /// Seconds to rain.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Stop after this many requests.
        #[arg(long)]
        count: Option<u64>,
        /// Requests per second (as fast as answers come when not given).
        #[arg(long)]
        rate: Option<u64>,
        /// Do not wait for the backlog or check the books.
        #[arg(long)]
        no_check: bool,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// The data directory whose credentials sign the requests (`keys/apps.json`, the app
        /// given by --app-id; `keys/admin.token` for the books check).
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// The whole suite `just bench` runs: hosts of its own, rains, yardsticks, the synchronous
    /// design on the same PostgreSQL, the writer's rate; writes the figures into BENCHMARKS.md.
    Suite {
        /// Seconds per rain.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Connections per rain.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// The reference plugins' build directory.
        #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
        plugins: PathBuf,
        /// Redis for the production runs.
        #[arg(long, env = "REDIS_URL")]
        store: Option<String>,
        /// PostgreSQL for the production runs.
        #[arg(long, env = "DATABASE_URL")]
        ledger: Option<String>,
        /// The report to write between its markers.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Run one part only and print its figures, writing nothing: `embedded` (the embedded
        /// host's rains and the yardsticks; needs no Redis or PostgreSQL), `retention` (Redis and
        /// embedded-store memory before a rain, at its end and after drain + retention),
        /// `steward` (the payment steward against the fixed-rate writer on a slowed ledger) or
        /// `writer` (the ledger writer draining a backlog, and Redis memory per pending token by
        /// key kind).
        #[arg(long)]
        only: Option<String>,
    },
    /// What a plugin costs in each language: the reference bill-copy and inventory plugins in
    /// Rust, JavaScript and Python (compile, instantiate, first and warm calls, instructions,
    /// memory).
    Languages {
        /// The plugins' build output (`plugins/target`).
        #[arg(long, default_value = "plugins/target")]
        plugins: PathBuf,
        /// Calls per plugin, the first on a fresh instance.
        #[arg(long, default_value_t = crate::bench::languages::WARM_CALLS)]
        calls: u32,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The embedded deployment's memory per token, by part (store, ledger, nonce): allocator
    /// bytes, which repeat on any machine, and resident growth.
    Footprint {
        /// Tokens fed (each a new user).
        #[arg(long, default_value_t = 200_000)]
        tokens: u64,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The host's CPU instructions per grant, counted by valgrind's callgrind (a figure that
    /// repeats on a busy machine), with the functions that execute the most.
    Instructions {
        /// Grants counted (new users, one a request).
        #[arg(long, default_value_t = 2_000)]
        grants: u64,
        /// Connections the rain uses.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// The reference plugins' build directory.
        #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
        plugins: PathBuf,
        /// Keep callgrind's dump in this folder (for `callgrind_annotate --tree=caller`).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The ledger's credits/s over 1, 2 and 3 PostgreSQL shards: concurrent batches of distinct
    /// users into fresh databases that the run makes (and drops) on one server.
    Shards {
        /// A PostgreSQL server whose user may create databases.
        #[arg(long, env = "DATABASE_URL")]
        ledger: String,
        /// Credits per shard count.
        #[arg(long, default_value_t = 200_000)]
        credits: usize,
        /// Credits per batch.
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Batches in flight at once.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// One throw-away PostgreSQL server per shard (initdb + pg_ctl), not databases on
        /// --ledger's server.
        #[arg(long)]
        own_servers: bool,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Create a plugin project that builds as is with one command (`cargo build --release`,
    /// `npm install && npm run build`, or `./build.sh`), from the SDK's example for its kind.
    New {
        /// bill-copy, rate-limit, inventory, compensation or reconciliation.
        kind: String,
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::plugin::scaffold::Language,
        /// Where to create it; `./NAME` by default.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The hongbao SDK directory; the one next to this binary's sources by default.
        #[arg(long, env = "HONGBAO_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Run one call of a plugin outside the server and print the result, time, instructions
    /// and peak memory as JSON.
    Run {
        /// The plugin's `.wasm` file.
        plugin: PathBuf,
        /// A JSON file with `context`, `input`, and optionally `counters` and `stock`; or an
        /// array of them (one compile, a report each, in an array).
        #[arg(long)]
        input: PathBuf,
        /// Calls to make: the first on a fresh instance, the rest warm (their time, instructions
        /// and memory reported under `warm`).
        #[arg(long, default_value_t = 1)]
        calls: u32,
    },
    /// Replay a decision log (`serve --record-decisions`) on a plugin version and report every
    /// decision that differs; exits 1 when any does.
    Replay {
        /// Decision log files (`DATA/decisions/*.jsonl`).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// The plugin to replay them on; records of other capabilities are skipped.
        #[arg(long)]
        plugin: PathBuf,
        /// How many differing decisions to show.
        #[arg(long, default_value_t = 10)]
        diffs: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ScenesCommand {
    /// Check every scene file in a directory and print each problem with file, line and key.
    Validate {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Decode a token and print its fields; with --data, also check its signature.
    Inspect {
        /// The token as a client holds it.
        token: String,
        /// A data directory whose keys to verify with.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new signing key active; older keys keep verifying. Restart to apply.
    Rotate {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Retire a signing key (not the active one): tokens it signed are refused on restore and
    /// `tokens:verify` answers them invalid, on every host within a second. For a key that may
    /// have leaked.
    Retire {
        /// The key id (`GET /v1/keys`).
        key_id: String,
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
}

/// Runs the command line.
pub fn main() -> ExitCode {
    // `Cli::parse()`, keeping the matches: `serve --config` asks them which settings were given.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.format(&mut Cli::command()).exit());
    init_logs(std::env::var("HONGBAO_LOG_FORMAT").ok().as_deref(), std::io::stderr);
    match run(cli, &matches) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to `writer`, filtered by `HONGBAO_LOG` (default `info`): as text, or with
/// `HONGBAO_LOG_FORMAT=json` as one JSON object a line (`timestamp`, `level`, `fields`,
/// `target`, and `span`/`spans` with the request's `id`, as `x-request-id` answers it).
fn init_logs<W>(format: Option<&str>, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt as _;
    // As `fmt().init()` did: also the bridge from the `log` crate some dependencies log with.
    let _ = log_subscriber(format, writer).try_init();
}

fn log_subscriber<W>(format: Option<&str>, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("HONGBAO_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        Some("json") => Box::new(builder.json().finish()),
        _ => Box::new(builder.finish()),
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(options) => {
            let options = match &options.config {
                Some(path) => {
                    let file = ServeOptions::from_file(path)?;
                    let matches = matches.subcommand_matches("serve").context("`serve` without its arguments")?;
                    options.over(file, matches)
                }
                None => options,
            };
            let (config, listen) = options.app_config()?;
            crate::memory::start_background_purge();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve(config, listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scenes { command: ScenesCommand::Validate { dir } } => validate(&dir),
        Command::Bench { command } => bench(command),
        Command::Token { command: TokenCommand::Inspect { token, data } } => inspect(&token, data),
        Command::Plugin { command: PluginCommand::New { kind, name, lang, dir, sdk } } => {
            let capability = crate::plugin::Capability::parse(&kind).with_context(|| {
                format!(
                    "unknown plugin kind `{kind}`: use bill-copy, rate-limit, inventory, compensation or reconciliation"
                )
            })?;
            let sdk = sdk.or_else(crate::plugin::scaffold::default_sdk_dir).context(
                "the hongbao SDK was not found next to this binary's sources; pass --sdk PATH (the `sdk` folder of the hongbao repository)",
            )?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let made = crate::plugin::scaffold::scaffold(capability, lang, &name, &dir, &sdk)?;
            for file in made.files {
                println!("created {}", file.display());
            }
            println!("next: {}", made.next);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command: PluginCommand::Run { plugin, input, calls } } => {
            let text = std::fs::read_to_string(&input).with_context(|| format!("reading `{}`", input.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("`{}` is not valid JSON", input.display()))?;
            let run = match &value {
                serde_json::Value::Array(inputs) => crate::plugin::authoring::run_each(&plugin, inputs, calls),
                _ => crate::plugin::authoring::run(&plugin, &value, calls),
            };
            let (report, ok) =
                run.with_context(|| format!("running `{}` with `{}`", plugin.display(), input.display()))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Plugin { command: PluginCommand::Replay { logs, plugin, diffs, json } } => {
            let report = crate::plugin::replay::replay(&logs, &plugin, diffs)
                .with_context(|| format!("replaying on `{}`", plugin.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::plugin::replay::summary(&report));
            }
            Ok(if report.differing() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Apps { command } => apps(command),
        Command::Reconcile { activity, repair, json, url, data } => {
            Ok(reconcile::run(&reconcile::Options { activity, repair, json, url, data }))
        }
        Command::Call { method, path, body, url, data, app, session } => {
            call(&method, &path, body.as_deref(), &url, &data, app, session.as_deref())
        }
        Command::Keys { command: KeysCommand::Retire { key_id, data } } => {
            issuer::retire_key(&data, &key_id)?;
            println!("retired {key_id}: its tokens are refused on restore and verify invalid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command: KeysCommand::Rotate { data } } => {
            let key_id = issuer::rotate_key(&data)?;
            println!("new active key: {key_id} (restart hongbao to sign with it)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: AppConfig, listen: SocketAddr) -> anyhow::Result<()> {
    let app = App::open(&config, Arc::new(SystemClock)).await?;
    for (file, state) in app.registry.snapshot().files() {
        for error in &state.errors {
            tracing::warn!(file = %file.display(), "{error}");
        }
    }
    let listener = crate::api::bind(listen).await.with_context(|| format!("listening on `{listen}`"))?;
    let address = listener.local_addr()?;
    let (shutdown_sender, shutdown) = tokio::sync::watch::channel(false);
    app.spawn_background(shutdown.clone());
    // Tests and scripts read this line to learn the port.
    println!("hongbao listening on http://{address}");
    std::io::stdout().flush()?;
    tokio::spawn(async move {
        let interrupt = tokio::signal::ctrl_c();
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = shutdown_sender.send(true);
    });
    crate::api::serve(app, listener, shutdown).await;
    Ok(())
}

fn validate(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let plugins = crate::plugin::PluginRuntime::new(None)?;
    let results = crate::config::validate_dir(dir, &plugins)
        .with_context(|| format!("reading scene directory `{}`", dir.display()))?;
    let mut problems = 0;
    let mut scenes = 0;
    let mut activities = 0;
    for result in &results {
        match result {
            Ok(activity) => {
                activities += 1;
                scenes += activity.scenes.len();
            }
            Err(errors) => {
                for error in errors {
                    eprintln!("{error}");
                    problems += 1;
                }
            }
        }
    }
    if problems > 0 {
        eprintln!("{problems} problem(s) in `{}`", dir.display());
        return Ok(ExitCode::FAILURE);
    }
    println!("ok: {activities} activities, {scenes} scenes in `{}`", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    use crate::clock::Clock as _;
    SystemClock.now_ms()
}

fn apps(command: AppsCommand) -> anyhow::Result<ExitCode> {
    let print_key = |app_id: i64, key: &crate::access::apps::AppKey| {
        let shown = serde_json::json!({ "app_id": app_id, "key_id": key.key_id, "secret": key.secret });
        println!("{shown}");
        eprintln!("keep the secret now: it is not shown again");
    };
    match command {
        AppsCommand::Add { app_id, activities, name, if_missing, data } => {
            let mut apps = Apps::load(&data)?;
            if if_missing && apps.apps.contains_key(&app_id) {
                eprintln!(
                    "app {app_id} exists in {}; nothing changed",
                    data.join(crate::access::apps::APPS_FILE).display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let key = apps.add(app_id, &name, activities, now_ms())?;
            apps.save(&data)?;
            print_key(app_id, &key);
        }
        AppsCommand::List { data } => {
            let apps = Apps::load(&data)?;
            let listed: Vec<serde_json::Value> = apps
                .apps
                .values()
                .map(|app| {
                    let keys: Vec<_> = app
                        .keys
                        .iter()
                        .map(|key| serde_json::json!({ "key_id": key.key_id, "created_ms": key.created_ms }))
                        .collect();
                    serde_json::json!({ "app_id": app.app_id, "name": app.name, "activities": app.activities, "keys": keys })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "apps": listed }))?);
        }
        AppsCommand::Rotate { app_id, data } => {
            let mut apps = Apps::load(&data)?;
            let key = apps.rotate(app_id, now_ms())?;
            apps.save(&data)?;
            print_key(app_id, &key);
        }
        AppsCommand::Revoke { app_id, key, data } => {
            let mut apps = Apps::load(&data)?;
            apps.revoke(app_id, key.as_deref())?;
            apps.save(&data)?;
            println!("{}", serde_json::json!({ "revoked": { "app_id": app_id, "key_id": key } }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hongbao call`: one signed request, its answer printed; exits non-zero on an error answer.
fn call(
    method: &str,
    path: &str,
    body: Option<&str>,
    url: &str,
    data: &Path,
    app: Option<i64>,
    session: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let body = body.unwrap_or_default().to_owned();
    let named = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|value| value["app_id"].as_i64());
    let credentials = ClientCredentials::load(data, app.or(named))?;
    let authorization = match session {
        Some(session) => Some(format!("Bearer {session}")),
        None => credentials.authorization(method, path, body.as_bytes(), now_ms() / 1000),
    };
    let (status, answer) = send(method, path, body, url, authorization)?;
    println!("{}", String::from_utf8_lossy(&answer));
    Ok(if status < 400 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Sends one HTTP/1.1 request to the host at `url` (`http://HOST:PORT`); its status and body.
fn send(
    method: &str,
    path: &str,
    body: String,
    url: &str,
    authorization: Option<String>,
) -> anyhow::Result<(u16, bytes::Bytes)> {
    let target = url.trim_end_matches('/').strip_prefix("http://").context("--url must start with http://")?.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        use http_body_util::BodyExt as _;
        let stream =
            tokio::net::TcpStream::connect(&target).await.with_context(|| format!("connecting to {target}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder().method(method).uri(path).header("host", &target);
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = sender.send_request(request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?).await?;
        let status = response.status().as_u16();
        let answer = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, answer))
    })
}

fn inspect(text: &str, data: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (envelope, token) = issuer::decode_unverified(text)?;
    let signature = match data {
        Some(data) => match Issuer::open(&data)?.verify(text) {
            Ok(_) => "valid".to_owned(),
            Err(error) => format!("INVALID: {error}"),
        },
        None => "not checked (pass --data DIR to check)".to_owned(),
    };
    let report = serde_json::json!({
        "token": crate::api::token_json(&token),
        "envelope_key_id": envelope.key_id,
        "signature": signature,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if signature.starts_with("INVALID") { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Prints a benchmark's figures as JSON or as its text.
fn print_figures<T: serde::Serialize>(json: bool, figures: &T, text: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(figures)?);
    } else {
        print!("{}", text(figures));
    }
    Ok(())
}

fn bench(command: BenchCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match command {
        BenchCommand::Rain {
            target,
            activity,
            scene,
            award_type,
            app_id,
            users,
            first_user,
            rains,
            connections,
            batch,
            duration,
            count,
            rate,
            no_check,
            json,
            data,
        } => {
            let credentials = ClientCredentials::load(&data, Some(app_id))?;
            let config = crate::bench::rain::RainConfig {
                credentials,
                target,
                activity_id: activity,
                scene_id: scene,
                award_type,
                app_id,
                users: users.max(1),
                rains,
                connections: connections.max(1),
                duration: std::time::Duration::from_secs(duration),
                count,
                rate,
                progress: !json,
                check_books: !no_check,
                first_user,
                batch: batch as usize,
            };
            let report = runtime.block_on(crate::bench::rain::run(&config))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", crate::bench::rain::summary(&report));
            }
            Ok(if report.books.as_ref().is_some_and(|books| !books.ok) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        BenchCommand::Suite { duration, connections, plugins, store, ledger, out, only } => {
            let config = crate::bench::suite::SuiteConfig {
                duration_s: duration,
                connections,
                plugins_dir: plugins,
                redis_url: store,
                database_url: ledger,
                out,
                only,
            };
            runtime.block_on(crate::bench::suite::run(&config))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Footprint { tokens, json } => {
            let footprint = runtime.block_on(crate::bench::footprint::run(tokens))?;
            print_figures(json, &footprint, crate::bench::footprint::table)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Instructions { grants, connections, plugins, keep, json } => {
            let config =
                crate::bench::instructions::InstructionsConfig { grants, connections, plugins_dir: plugins, keep };
            let report = runtime.block_on(crate::bench::instructions::run(&config))?;
            print_figures(json, &report, crate::bench::instructions::summary)?;
            Ok(if report.books_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BenchCommand::Languages { plugins, calls, json } => {
            let figures = crate::bench::languages::run(&plugins, calls)?;
            print_figures(json, &figures, |figures| format!("{}\n", crate::bench::languages::table(figures)))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Shards { ledger, credits, batch, writers, own_servers, json } => {
            let config = crate::bench::shards::ShardsConfig {
                database_url: ledger,
                credits,
                batch,
                writers,
                shard_counts: crate::bench::shards::SHARD_COUNTS.to_vec(),
                own_servers,
                progress: !json,
            };
            let figures = runtime.block_on(crate::bench::shards::run(&config))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!("{}", crate::bench::shards::summary(&config, &figures));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hongbao serve ARGS` with the config file of `text`, as `main` resolves it.
    fn serve_with_file(text: &str, args: &[&str]) -> anyhow::Result<ServeOptions> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hongbao.yaml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let argv = ["hongbao", "serve", "--config", path].into_iter().chain(args.iter().copied());
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let Command::Serve(options) = Cli::from_arg_matches(&matches).unwrap().command else { unreachable!() };
        let file = ServeOptions::from_file(options.config.as_deref().unwrap())?;
        Ok(options.over(file, matches.subcommand_matches("serve").unwrap()))
    }

    // Proves the precedence of `serve --config`: a flag wins over the file, the file over the
    // defaults, and a flag the command line leaves off (`--no-writer`) does not hide the file's.
    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let text =
            "listen: 127.0.0.1:1\ncredit_batch: 7\nno_writer: true\nstore: redis://127.0.0.1:6379\nstore_prefix: 123\n";
        let (config, listen) = serve_with_file(text, &["--listen", "127.0.0.1:2"]).unwrap().app_config().unwrap();
        assert_eq!(listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.writer.batch_entries_max, 7);
        assert!(!config.writer_enabled);
        let store = config.store.unwrap();
        assert_eq!((store.prefix.as_str(), store.shards), ("123", RedisStoreConfig::new("").shards));
        assert_eq!(config.scenes_dir, PathBuf::from("scenes"));

        let (config, _) = serve_with_file("", &["--no-writer"]).unwrap().app_config().unwrap();
        assert!(!config.writer_enabled);
        let (config, listen) = serve_with_file("# nothing\n", &[]).unwrap().app_config().unwrap();
        assert!(config.writer_enabled);
        assert_eq!(
            (listen, config.writer.batch_entries_max),
            (LISTEN_DEFAULT, WriterConfig::default().batch_entries_max)
        );
    }

    // Proves the Redis operation timeout is the store's, from the file or a flag, and that one
    // outside 1..=60000 ms is refused naming the flag, before anything starts.
    #[test]
    fn the_store_timeout_is_set_and_bounded() {
        let text = "store: redis://127.0.0.1:6379\nstore_timeout_ms: 7500\n";
        let (config, _) = serve_with_file(text, &[]).unwrap().app_config().unwrap();
        assert_eq!(config.store.unwrap().op_timeout_ms, 7_500);
        let (config, _) = serve_with_file(text, &["--store-timeout-ms", "300"]).unwrap().app_config().unwrap();
        assert_eq!(config.store.unwrap().op_timeout_ms, 300);
        for (edge, ms) in [("1", 1), ("60000", 60_000)] {
            let (config, _) = serve_with_file(text, &["--store-timeout-ms", edge]).unwrap().app_config().unwrap();
            assert_eq!(config.store.unwrap().op_timeout_ms, ms);
        }
        for bad in ["0", "60001"] {
            let error = serve_with_file(text, &["--store-timeout-ms", bad]).unwrap().app_config().err().unwrap();
            assert_eq!(error.to_string(), format!("--store-timeout-ms `{bad}` must be 1..=60000 milliseconds"));
        }
    }

    // Proves a bad config file is refused naming the file, line and key: an unknown key (with
    // the known ones), a value of the wrong type, and text that is not YAML.
    #[test]
    fn bad_config_files_name_the_file_line_and_key() {
        let error = serve_with_file("store: redis://127.0.0.1:6379\ncredits_per_secnd: 5\n", &[]).err().unwrap();
        let known = "listen, scenes, data, credits_per_second, credit_batch, fixed_rate, no_writer, store, ledger, \
                     store_prefix, store_shards, reclaim_after_ms, store_timeout_ms, retain_credited_s, \
                     record_decisions";
        assert_eq!(
            format!("{error:#}").split_once("hongbao.yaml").unwrap().1,
            format!(":2: unknown setting `credits_per_secnd` (known: {known})")
        );
        let error = format!("{:#}", serve_with_file("store: [1, 2]\n", &[]).err().unwrap());
        assert!(error.contains("hongbao.yaml:1: setting `store`: "), "{error}");
        let error = format!("{:#}", serve_with_file("data: d\nstore_shards: many\n", &[]).err().unwrap());
        assert!(error.contains("hongbao.yaml:2: setting `store_shards`: "), "{error}");
        let error = format!("{:#}", serve_with_file("listen: nowhere\n", &[]).err().unwrap());
        assert!(error.contains("hongbao.yaml:1: setting `listen`: "), "{error}");
        let error = format!("{:#}", serve_with_file("store: [1, 2\n", &[]).err().unwrap());
        assert!(error.contains("config file `") || error.contains("hongbao.yaml:"), "{error}");
    }

    // Proves the JSON log format writes one JSON object a line, with the request's id from its
    // span.
    #[test]
    fn json_logs_name_the_request() {
        #[derive(Clone, Default)]
        struct Lines(Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = log_subscriber(Some("json"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", id = "abc-1");
            let _entered = span.enter();
            tracing::warn!(scene = "rain", "plugin call failed");
        });
        let text = String::from_utf8(lines.0.lock().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["fields"]["message"], "plugin call failed", "{line}");
        assert_eq!(line["fields"]["scene"], "rain", "{line}");
        assert_eq!(line["span"]["id"], "abc-1", "{line}");
    }

    // Proves `serve --help` states the defaults that apply: those of the Redis store and the
    // writer are theirs, written into the help by hand.
    #[test]
    fn serve_help_states_the_defaults() {
        let help = Cli::command().find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        let redis = RedisStoreConfig::new("");
        for default in [
            LISTEN_DEFAULT.to_string(),
            WriterConfig::default().batch_entries_max.to_string(),
            redis.prefix,
            redis.shards.to_string(),
            redis.reclaim_after_ms.to_string(),
            redis.op_timeout_ms.to_string(),
            RETAIN_CREDITED_S_DEFAULT.to_string(),
        ] {
            assert!(help.contains(&format!("[default: {default}]")), "`{default}` missing from\n{help}");
        }
    }
}
