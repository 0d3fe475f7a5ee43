//! The `hongbao` command line.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{App, AppConfig};
use crate::clock::SystemClock;
use crate::issuer::{self, Issuer};
use crate::store::{RedisStoreConfig, STOCK_SHARDS_DEFAULT};
use crate::writer::{CREDIT_BATCH_ENTRIES_MAX, WriterConfig};

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
    Serve {
        /// A YAML file of `serve` settings (`store: redis://…`, `credits_per_second: 300000`,
        /// …: the flag names with `_`); the command line and the environment take precedence.
        #[arg(long, env = "HONGBAO_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on; port 0 picks a free port (the chosen address is printed).
        #[arg(long, env = "HONGBAO_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory of scene YAML files, watched for changes.
        #[arg(long, env = "HONGBAO_SCENES", default_value = "scenes")]
        scenes: PathBuf,
        /// Directory for the embedded stores and the signing keys.
        #[arg(long, env = "HONGBAO_DATA", default_value = "data")]
        data: PathBuf,
        /// Credits per second the ledger writer may make at most (0: no cap).
        #[arg(long, env = "HONGBAO_CREDITS_PER_SECOND", default_value_t = 0)]
        credits_per_second: u64,
        /// Tokens per ledger batch.
        #[arg(long, env = "HONGBAO_CREDIT_BATCH", default_value_t = CREDIT_BATCH_ENTRIES_MAX)]
        credit_batch: usize,
        /// Do not run the ledger writer on this host: it takes grants and serves wallets, and
        /// tokens wait until a host with a writer credits them (withdrawals still force-credit).
        #[arg(long, env = "HONGBAO_NO_WRITER")]
        no_writer: bool,
        /// The token store: `redis://HOST:PORT[/DB]` or `redis-cluster://HOST:PORT,HOST:PORT,…`;
        /// the embedded store in --data when not given.
        #[arg(long, env = "HONGBAO_STORE")]
        store: Option<String>,
        /// The ledger: `postgres://USER@HOST:PORT/DB`; the embedded ledger in --data when not
        /// given.
        #[arg(long, env = "HONGBAO_LEDGER")]
        ledger: Option<String>,
        /// Prefix of every Redis key, so several deployments can share a Redis.
        #[arg(long, env = "HONGBAO_STORE_PREFIX", default_value = "hb")]
        store_prefix: String,
        /// Hash-tag shards of the Redis store (stock buckets and crediting queues); fixed for
        /// the life of a deployment.
        #[arg(long, env = "HONGBAO_STORE_SHARDS", default_value_t = STOCK_SHARDS_DEFAULT)]
        store_shards: u32,
        /// Milliseconds a claimed crediting-queue entry may stay unfinished before another
        /// host's writer takes it over (Redis store).
        #[arg(long, env = "HONGBAO_RECLAIM_AFTER_MS", default_value_t = 5_000)]
        reclaim_after_ms: u64,
        /// Credit every grant to the ledger before answering it: the traditional design, for
        /// comparing against the token design in benchmarks. Much slower; not for production.
        #[arg(long, env = "HONGBAO_SYNC_CREDIT")]
        sync_credit: bool,
    },
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
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Create a plugin crate that builds as is (`cargo build --release` inside it).
    New {
        /// bill-copy, rate-limit, inventory, compensation or reconciliation.
        kind: String,
        /// The crate name: lowercase letters, digits and `-`.
        name: String,
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
        /// A JSON file with `context`, `input`, and optionally `counters` and `stock`.
        #[arg(long)]
        input: PathBuf,
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
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let args = match with_config_file(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HONGBAO_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config: _,
            listen,
            scenes,
            data,
            credits_per_second,
            credit_batch,
            no_writer,
            store,
            ledger,
            store_prefix,
            store_shards,
            reclaim_after_ms,
            sync_credit,
        } => {
            let store = match store {
                None => None,
                Some(url) if url.starts_with("redis://") || url.starts_with("redis-cluster://") => {
                    let mut config = RedisStoreConfig::new(url);
                    config.prefix = store_prefix;
                    config.shards = store_shards;
                    config.reclaim_after_ms = reclaim_after_ms;
                    Some(config)
                }
                Some(url) => anyhow::bail!(
                    "--store `{url}` is not a Redis URL: use redis://HOST:PORT or redis-cluster://HOST:PORT,HOST:PORT"
                ),
            };
            if let Some(url) = &ledger
                && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
            {
                anyhow::bail!("--ledger `{url}` is not a PostgreSQL URL: use postgres://USER@HOST:PORT/DB");
            }
            let config = AppConfig {
                store,
                sync_credit,
                ledger_url: ledger,
                scenes_dir: scenes,
                data_dir: data,
                writer: WriterConfig {
                    credits_per_second_max: (credits_per_second > 0).then_some(credits_per_second),
                    batch_entries_max: credit_batch,
                },
                writer_enabled: !no_writer,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve(config, listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scenes { command: ScenesCommand::Validate { dir } } => validate(&dir),
        Command::Bench { command } => bench(command),
        Command::Token { command: TokenCommand::Inspect { token, data } } => inspect(&token, data),
        Command::Plugin { command: PluginCommand::New { kind, name, dir, sdk } } => {
            let capability = crate::plugin::Capability::parse(&kind).with_context(|| {
                format!(
                    "unknown plugin kind `{kind}`: use bill-copy, rate-limit, inventory, compensation or reconciliation"
                )
            })?;
            let sdk = sdk.or_else(crate::plugin::authoring::default_sdk_dir).context(
                "the hongbao SDK was not found next to this binary's sources; pass --sdk PATH (the `sdk` folder of the hongbao repository)",
            )?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = crate::plugin::authoring::scaffold(capability, &name, &dir, &sdk)?;
            for file in files {
                println!("created {}", file.display());
            }
            let wasm = name.replace('-', "_");
            println!(
                "next: cd {} && cargo build --release && hongbao plugin run target/wasm32-wasip2/release/{wasm}.wasm --input input.json",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command: PluginCommand::Run { plugin, input } } => {
            let text = std::fs::read_to_string(&input).with_context(|| format!("reading `{}`", input.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("`{}` is not valid JSON", input.display()))?;
            let (report, ok) = crate::plugin::authoring::run_once(&plugin, &value)
                .with_context(|| format!("running `{}` with `{}`", plugin.display(), input.display()))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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

/// The settings a `serve` config file may hold: the long flag names, with `_` for `-`.
const CONFIG_KEYS: [&str; 11] = [
    "listen",
    "scenes",
    "data",
    "credits_per_second",
    "credit_batch",
    "no_writer",
    "store",
    "ledger",
    "store_prefix",
    "store_shards",
    "reclaim_after_ms",
];

/// Adds the settings of `serve --config FILE` (or `HONGBAO_CONFIG`) to the arguments as flags,
/// except those the command line or the environment already sets: flags win, then the
/// environment, then the file, then the defaults.
fn with_config_file(mut args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    if args.get(1).is_none_or(|command| command != "serve") {
        return Ok(args);
    }
    let flag_value = args.iter().position(|arg| arg == "--config").and_then(|at| args.get(at + 1)).cloned();
    let inline = args.iter().find_map(|arg| arg.to_str().and_then(|arg| arg.strip_prefix("--config=")).map(Into::into));
    let Some(path) = flag_value.or(inline).or_else(|| std::env::var_os("HONGBAO_CONFIG")).map(PathBuf::from) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config file `{}`", path.display()))?;
    let settings: std::collections::BTreeMap<String, serde_json::Value> = if text.trim().is_empty() {
        Default::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|error| anyhow::anyhow!("config file `{}`: {error}", path.display()))?
    };
    let line_of = |key: &str| {
        text.lines().position(|line| line.trim_start().starts_with(&format!("{key}:"))).map_or(0, |n| n + 1)
    };
    for (key, value) in settings {
        if !CONFIG_KEYS.contains(&key.as_str()) {
            anyhow::bail!(
                "{}:{}: unknown setting `{key}` (known: {})",
                path.display(),
                line_of(&key),
                CONFIG_KEYS.join(", ")
            );
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let env = format!("HONGBAO_{}", key.to_uppercase());
        let given =
            args.iter().any(|arg| arg.to_str().is_some_and(|arg| arg == flag || arg.starts_with(&format!("{flag}="))));
        if given || std::env::var_os(&env).is_some() {
            continue;
        }
        match value {
            serde_json::Value::Bool(true) if key == "no_writer" => args.push(flag.into()),
            serde_json::Value::Bool(false) if key == "no_writer" => {}
            serde_json::Value::String(text) => args.extend([flag.into(), text.into()]),
            serde_json::Value::Number(number) => args.extend([flag.into(), number.to_string().into()]),
            other => anyhow::bail!(
                "{}:{}: setting `{key}` must be a {}, not `{other}`",
                path.display(),
                line_of(&key),
                if key == "no_writer" { "boolean" } else { "string or number" }
            ),
        }
    }
    Ok(args)
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
        } => {
            let config = crate::bench::rain::RainConfig {
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
        BenchCommand::Suite { duration, connections, plugins, store, ledger, out } => {
            let config = crate::bench::suite::SuiteConfig {
                duration_s: duration,
                connections,
                plugins_dir: plugins,
                redis_url: store,
                database_url: ledger,
                out,
            };
            runtime.block_on(crate::bench::suite::run(&config))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
