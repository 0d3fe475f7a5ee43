//! Real Redis, Redis Cluster and PostgreSQL servers for the production-backend tests.
//!
//! `REDIS_URL` and `DATABASE_URL` are used when set; otherwise the tests start their own
//! `redis-server` and a throw-away PostgreSQL cluster (`initdb` + `pg_ctl` in a temp dir) from the
//! locally installed binaries. The Redis Cluster is always our own: three masters joined with
//! `redis-cli --cluster create`. A missing binary fails the test with what to install; nothing is
//! ever skipped.
//!
//! Every server gets a watchdog shell that kills it (and removes its directory) within a second
//! of the test process going away, however it goes: the shared servers live in statics that are
//! never dropped, and a crashed or killed test run must not leave servers behind.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_REDIS: &str = "install redis-server (apt-get install redis-server)";
const INSTALL_POSTGRES: &str = "install PostgreSQL server binaries (apt-get install postgresql)";

/// URL of a Redis shared by the whole test process: `REDIS_URL` when set, else an own
/// `redis-server` started once on a free port. Tests keep apart through [`unique_prefix`].
pub fn shared_redis_url() -> String {
    static SHARED: OnceLock<OwnRedis> = OnceLock::new();
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => SHARED.get_or_init(OwnRedis::start).url(),
    }
}

/// A key prefix unique to this call: `t`, the process id, `x`, a per-process counter and four
/// random letters, e.g. `t1234x7qzkd` (`[a-z0-9]` only, short; the random part keeps runs apart
/// that reuse a pid on a long-lived `REDIS_URL`).
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: String = (0..4).map(|_| fastrand::lowercase()).collect();
    format!("t{}x{count}{random}", std::process::id())
}

/// A 3-master Redis Cluster started once per test process, always our own (never `REDIS_URL`):
/// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`. Every node reports
/// `cluster_state:ok` and knows the other two before this returns.
pub fn shared_cluster_url() -> String {
    static SHARED: OnceLock<(Vec<OwnRedis>, String)> = OnceLock::new();
    SHARED.get_or_init(start_cluster).1.clone()
}

/// A fresh empty PostgreSQL database on the shared server (`DATABASE_URL`'s server when set,
/// else an own throw-away cluster started once); returns its `postgres://` URL. The name is
/// unique per call (`hbtest_…`); databases are not dropped afterwards.
pub fn fresh_database_url() -> String {
    static SHARED: OnceLock<OwnPostgres> = OnceLock::new();
    let server = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => SHARED.get_or_init(OwnPostgres::start).url(),
    };
    let name = format!("hbtest_{}", unique_prefix());
    if let Err(error) = pg_query(&server, &format!("CREATE DATABASE {name}")) {
        panic!("creating database {name} on {server}: {error}");
    }
    with_database(&server, &name)
}

/// `--ledger` for a ledger of `shards` fresh databases on the shared server: their URLs joined
/// by commas (one URL for one shard).
pub fn fresh_sharded_ledger_url(shards: usize) -> String {
    (0..shards).map(|_| fresh_database_url()).collect::<Vec<_>>().join(",")
}

/// A `redis-server` of the test's own, which the test can stop and start again on the same port.
/// It keeps nothing on disk: a restart loses every key. Dropping it stops it.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
    extra_args: &'static [&'static str],
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub fn start() -> OwnRedis {
        OwnRedis::start_with(&[], free_port)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone; its keys are lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        match self.launch() {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!("redis-server did not come back on port {}:\n{log}", self.port),
        }
    }

    /// Starts a server with `extra_args` on a port from `pick_port`, trying other ports when the
    /// one picked was taken in the meantime.
    fn start_with(extra_args: &'static [&'static str], pick_port: fn() -> u16) -> OwnRedis {
        require_binary("redis-server", INSTALL_REDIS);
        let dir = tempfile::Builder::new().prefix("hongbao-redis").tempdir().expect("a temp dir for redis");
        let mut redis = OwnRedis { port: 0, child: None, extra_args, dir };
        for _ in 0..5 {
            redis.port = pick_port();
            match redis.launch() {
                Ok(child) => {
                    redis.child = Some(child);
                    return redis;
                }
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// Spawns the process with its watchdog and waits until it answers `PING`; on failure returns
    /// the tail of its log.
    fn launch(&self) -> Result<Child, String> {
        let dir = self.dir.path();
        let log_path = dir.join("redis.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(self.extra_args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting redis-server: {error}; {INSTALL_REDIS}"));
        watchdog(&format!("kill -0 {} 2>/dev/null", child.id()), dir, &["kill", "-9", &child.id().to_string()]);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if redis_ping(self.port) {
                return Ok(child);
            }
            let exited = child.try_wait().unwrap().is_some();
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(log_tail(&log_path));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL cluster of the test's own (`initdb` + `pg_ctl` in a temp dir), which the test can
/// stop and start again; the data survive. Dropping it stops it (`pg_ctl stop -m immediate`)
/// and removes the directory.
pub struct OwnPostgres {
    port: u16,
    running: bool,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl OwnPostgres {
    /// Creates and starts a cluster on a free loopback port with a database `hongbao` in it.
    ///
    /// `initdb`, `pg_ctl` and `postgres` refuse to run as root; as root they run as the
    /// `postgres` user (through `runuser`), in a directory handed to that user.
    pub fn start() -> OwnPostgres {
        let bin = postgres_bin_dir().to_owned();
        let dir = if is_root() {
            require_postgres_user();
            let dir = tempfile::Builder::new().prefix("hongbao-pg").tempdir_in("/tmp").unwrap();
            run(Command::new("chown").args(["postgres:"]).arg(dir.path()), "chown postgres");
            dir
        } else {
            tempfile::Builder::new().prefix("hongbao-pg").tempdir().unwrap()
        };
        let data = dir.path().join("data");
        let mut initdb = pg_command(&bin, "initdb", dir.path());
        initdb.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
        run(&mut initdb, "initdb");
        let mut stop = pg_command_line(&bin, "pg_ctl");
        stop.extend(["stop", "-D", data.to_str().unwrap(), "-m", "immediate"].map(String::from));
        watchdog(r#"[ -d "$d" ]"#, dir.path(), &stop.iter().map(String::as_str).collect::<Vec<_>>());

        let mut postgres = OwnPostgres { port: 0, running: false, bin, dir };
        for attempt in 1..=5 {
            postgres.port = free_port();
            match postgres.pg_ctl_start() {
                Ok(()) => break,
                Err(log) if log.contains("Address already in use") && attempt < 5 => continue,
                Err(log) => panic!("PostgreSQL did not start on port {}:\n{log}", postgres.port),
            }
        }
        postgres.running = true;
        let maintenance = format!("postgres://postgres@127.0.0.1:{}/postgres", postgres.port);
        if let Err(error) = pg_query(&maintenance, "CREATE DATABASE hongbao") {
            panic!("creating database hongbao: {error}");
        }
        postgres
    }

    /// `postgres://postgres@127.0.0.1:PORT/hongbao`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/hongbao", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected, data are kept).
    pub fn stop(&mut self) {
        if self.running {
            self.pg_ctl(&["stop", "-m", "fast"]).expect("pg_ctl stop");
            self.running = false;
        }
    }

    /// Starts the stopped server again on the same port, with its data.
    pub fn start_again(&mut self) {
        assert!(!self.running, "start_again on a running PostgreSQL");
        if let Err(log) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again on port {}:\n{log}", self.port);
        }
        self.running = true;
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let timeout = START_TIMEOUT.as_secs().to_string();
        let started = self.pg_ctl(&["start", "-w", "-t", &timeout, "-l", log.to_str().unwrap(), "-o", &options]);
        started.map_err(|output| format!("{output}\n--- server log ---\n{}", log_tail(&log)))
    }

    /// Runs `pg_ctl -D DATA ARGS…`; on failure returns its output.
    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let output = pg_command(&self.bin, "pg_ctl", self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running pg_ctl");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if output.status.success() { Ok(()) } else { Err(text) }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
    }
}

/// Starts three cluster-enabled masters and joins them.
fn start_cluster() -> (Vec<OwnRedis>, String) {
    require_binary("redis-cli", INSTALL_REDIS);
    const CLUSTER_ARGS: &[&str] =
        &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"];
    let nodes: Vec<OwnRedis> = (0..3).map(|_| OwnRedis::start_with(CLUSTER_ARGS, free_cluster_port)).collect();
    let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
    let output = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("running redis-cli --cluster create");
    assert!(
        output.status.success(),
        "redis-cli --cluster create failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + START_TIMEOUT;
    for node in &nodes {
        loop {
            let info = redis_cli(node.port, &["cluster", "info"]);
            if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                break;
            }
            assert!(Instant::now() < deadline, "Redis Cluster node {} is not ready:\n{info}", node.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let url = format!("redis-cluster://{}", addresses.join(","));
    (nodes, url)
}

/// Starts a watchdog shell that, once the test process is gone, runs `cleanup` and removes `dir`.
/// It watches for as long as `alive` (a shell condition; `$d` is `dir`) holds.
fn watchdog(alive: &str, dir: &Path, cleanup: &[&str]) {
    let script = format!(
        r#"t=$1; d=$2; shift 2
while {alive}; do
  if ! kill -0 "$t" 2>/dev/null; then "$@" >/dev/null 2>&1; rm -rf "$d"; exit 0; fi
  sleep 1
done"#
    );
    let mut child = Command::new("sh")
        .args(["-c", &script, "watchdog", &std::process::id().to_string()])
        .arg(dir)
        .args(cleanup)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a watchdog shell");
    std::thread::spawn(move || child.wait());
}

/// A free loopback port (bound and released; the caller retries if someone takes it meanwhile).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55535 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

/// Whether a Redis on `port` answers `PING`.
fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS…`: its output, or the error.
fn redis_cli(port: u16, args: &[&str]) -> String {
    match Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output() {
        Ok(output) => format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        Err(error) => format!("running redis-cli: {error}"),
    }
}

/// Runs a query over the simple-query protocol on a fresh connection; returns the rows as text.
/// It runs on a thread of its own, so callers may be inside a tokio runtime or not.
pub fn pg_query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    let query = async move {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let messages = client.simple_query(&sql).await;
        drop(client);
        let _ = connection.await;
        let rows = messages?.into_iter().filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        });
        Ok(rows.collect())
    };
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(query)
    })
    .join()
    .unwrap()
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = url.split_at(url[after_scheme..].find('?').map_or(url.len(), |i| after_scheme + i));
    let server = match head[after_scheme..].find('/') {
        Some(i) => &head[..after_scheme + i],
        None => head,
    };
    format!("{server}/{name}{query}")
}

/// Whether the tests run as root (`id -u` says 0).
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let output = Command::new("id").arg("-u").output().expect("running id -u");
        String::from_utf8_lossy(&output.stdout).trim() == "0"
    })
}

/// The directory holding `initdb` and `pg_ctl`: from PATH, else `pg_config --bindir`, else the
/// highest `/usr/lib/postgresql/*/bin` (Debian keeps them out of PATH).
fn postgres_bin_dir() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        let from_path = find_in_path("initdb").and_then(|initdb| initdb.parent().map(Path::to_owned));
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
            .collect();
        debian.sort();
        let from_debian = debian.into_iter().rev().map(|(_, dir)| dir);
        from_path.into_iter().chain(from_pg_config).chain(from_debian).find(|dir| has_server(dir)).unwrap_or_else(
            || panic!("initdb and pg_ctl not found (PATH, pg_config, /usr/lib/postgresql/*/bin): {INSTALL_POSTGRES}"),
        )
    })
}

/// The argv that runs PostgreSQL's `program`: directly, or as the `postgres` user when root.
fn pg_command_line(bin: &Path, program: &str) -> Vec<String> {
    let program = bin.join(program).to_str().expect("a UTF-8 PostgreSQL path").to_owned();
    if is_root() {
        ["runuser", "-u", "postgres", "--"].into_iter().map(String::from).chain([program]).collect()
    } else {
        vec![program]
    }
}

/// Panics unless the `postgres` user exists (root runs PostgreSQL as that user).
fn require_postgres_user() {
    let user = Command::new("id").args(["-u", "postgres"]).output();
    assert!(
        user.is_ok_and(|output| output.status.success()),
        "running as root, PostgreSQL must run as the `postgres` user, which does not exist: \
         {INSTALL_POSTGRES} (it creates the user), or run the tests as a normal user"
    );
}

/// [`pg_command_line`] as a `Command` working in `dir` (the `postgres` user may not be able to
/// reach the test's working directory).
fn pg_command(bin: &Path, program: &str, dir: &Path) -> Command {
    let argv = pg_command_line(bin, program);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]).current_dir(dir);
    command
}

/// Runs `command` to completion; panics with its output when it fails.
fn run(command: &mut Command, what: &str) {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|error| panic!("running {what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Panics with `install` unless `name` is an executable in PATH.
fn require_binary(name: &str, install: &str) {
    assert!(find_in_path(name).is_some(), "{name} not found in PATH: {install}");
}

/// `name` in a PATH directory.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// The last 40 lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| format!("({}: {error})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn shared_cluster_serves_keys_on_all_three_nodes() {
    let url = shared_cluster_url();
    let nodes = hongbao::store::cluster_nodes(&url).unwrap();
    assert_eq!(nodes.len(), 3, "{url}");
    let prefix = unique_prefix();
    let keys: Vec<String> = (0..60).map(|i| format!("{prefix}:{i}")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = redis::cluster::ClusterClient::new(nodes.clone()).unwrap();
        let mut connection = client.get_async_connection().await.unwrap();
        for (i, key) in keys.iter().enumerate() {
            let () = redis::cmd("SET").arg(key).arg(i).query_async(&mut connection).await.unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            let value: usize = redis::cmd("GET").arg(key).query_async(&mut connection).await.unwrap();
            assert_eq!(value, i);
        }
    });
    // Each node holds some of the keys (60 keys all missing one node: p ≈ 1e-10).
    let mut total = 0;
    for node in &nodes {
        let mut connection = redis::Client::open(node.as_str()).unwrap().get_connection().unwrap();
        let here: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut connection).unwrap();
        assert!(!here.is_empty(), "no key landed on {node}");
        total += here.len();
    }
    assert_eq!(total, keys.len());
}

#[test]
fn own_redis_restart_loses_keys_and_keeps_its_port() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let mut connection = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let () = redis::cmd("SET").arg("k").arg("v").query(&mut connection).unwrap();
    redis.stop();
    assert!(redis::Client::open(url.as_str()).unwrap().get_connection().is_err(), "stopped Redis still answers");
    redis.restart();
    assert_eq!(redis.url(), url);
    let mut connection = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut connection).unwrap();
    assert_eq!(value, None);
}

#[test]
fn own_postgres_stop_and_start_again_keeps_data() {
    let mut postgres = OwnPostgres::start();
    let url = postgres.url();
    pg_query(&url, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')").unwrap();
    postgres.stop();
    assert!(pg_query(&url, "SELECT 1").is_err(), "stopped PostgreSQL still answers");
    postgres.start_again();
    assert_eq!(postgres.url(), url);
    assert_eq!(pg_query(&url, "SELECT v FROM t").unwrap(), vec![vec![Some("kept".to_owned())]]);
}

#[test]
fn shared_redis_and_fresh_databases() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    assert!(prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{prefix}");
    assert_ne!(prefix, unique_prefix());
    let key = format!("{prefix}:k");
    let mut connection = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let () = redis::cmd("SET").arg(&key).arg(1).query(&mut connection).unwrap();
    assert_eq!(shared_redis_url(), url);

    let (first, second) = (fresh_database_url(), fresh_database_url());
    assert_ne!(first, second);
    pg_query(&first, "CREATE TABLE t (v int)").unwrap();
    // The second database is empty: no table `t` in it.
    assert!(pg_query(&second, "SELECT * FROM t").is_err());
}
